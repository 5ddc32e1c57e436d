"""Serving: an OpenAI-compatible HTTP API over one base model and several adapters, and feedback capture."""
