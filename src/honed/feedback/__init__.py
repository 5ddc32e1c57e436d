"""Feedback on served answers -> training data: the loop from `honed serve` back to `honed train`.

`examples` decides what each stored request with feedback becomes (an SFT example, a preference pair, or
nothing, with the reason) and drops duplicates; `export` reads the store and the old run, writes the new
training files and a retrain recipe. The store itself is `honed.serve.store`.
"""
