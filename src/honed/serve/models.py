"""What a server serves: `[NAME=]RUN|MODEL` specs resolved to one base model, its adapters and one tokenizer.

A run with a LoRA/QLoRA adapter serves its adapter on its recipe's base; a full fine-tuning run serves its
own weights; any other spec (the embedded name, a folder, a .gguf, a hub id) is a base model served as
is. Every adapter must sit on the same base, so rows for different adapters share one forward pass. The
base is always served too, under its own name, so users can compare.

The chat template is checked here: each run's saved tokenizer must carry the template the run trained
with (the digest in its train.json), and every served name must use the same template, since one
tokenizer renders every prompt.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from honed.data.tokenize import chat_template_digest
from honed.errors import ConfigError
from honed.models.load import load_model, load_tokenizer, resolve_base
from honed.runs.directory import load_run_recipe
from honed.serve.engine import BASE_ADAPTER

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One served model name and where its weights come from."""

    name: str
    kind: str  # "adapter" | "base" | "full"
    origin: str  # the run directory or model spec the user gave (stored with each request)
    base_folder: Path  # the weights every row runs on
    adapter_folder: Path | None = None  # kind "adapter" only
    tokenizer_folder: Path | None = None  # a run's saved tokenizer (with its training chat template)
    template_sha256: str | None = None  # what the run recorded at training time, when it did


@dataclass
class Served:
    """The loaded model, its tokenizer, and the engine adapter id of every served name."""

    model: torch.nn.Module  # a transformers model, or a PeftModel holding the adapters
    tokenizer: PreTrainedTokenizerBase
    sources: dict[str, Source]
    adapter_ids: dict[str, str]  # served name -> PEFT adapter name (BASE_ADAPTER for the base)


def parse_sources(specs: list[str]) -> list[Source]:
    """Resolve each spec; add the shared base under its own name; check they share one base."""
    if not specs:
        raise ConfigError("honed serve needs at least one RUN or MODEL, e.g. honed serve runs/viggo-...")
    sources = [_source(spec) for spec in specs]
    bases = {str(s.base_folder) for s in sources}
    if len(bases) > 1:
        listed = "; ".join(f"{s.name}: {s.base_folder}" for s in sources)
        raise ConfigError(
            f"the served models sit on different bases ({listed}); one server serves one base and its "
            "adapters: start one server per base"
        )
    if sum(s.kind == "full" for s in sources) and any(s.kind == "adapter" for s in sources):
        raise ConfigError("a full fine-tuning run cannot share a server with adapters: serve it on its own")
    if not any(s.kind in ("base", "full") for s in sources):
        first = sources[0]
        sources.append(Source(_base_name(first), "base", first.origin, first.base_folder))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two served models are named {duplicates[0]!r}: name them with NAME=RUN")
    return sources


def _source(spec: str) -> Source:
    name, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    run_dir = Path(path)
    if (run_dir / "recipe.yaml").is_file():
        return _run_source(name or run_dir.resolve().name, run_dir)
    resolved = resolve_base(path)
    return Source(name or _spec_name(path), "base", path, resolved.folder.resolve())


def _run_source(name: str, run_dir: Path) -> Source:
    recipe = load_run_recipe(run_dir)
    train = run_dir / "train.json"
    digest = json.loads(train.read_text()).get("chat_template_sha256") if train.is_file() else None
    final = run_dir / "final" / ("model" if recipe.adapter == "full" else "adapter")
    if not final.is_dir():
        raise ConfigError(
            f"{run_dir}: the run has no {final.relative_to(run_dir)} yet (unfinished? resume it with: "
            f"honed train --resume {run_dir})"
        )
    if recipe.adapter == "full":
        return Source(name, "full", str(run_dir), final.resolve(), None, final, digest)
    _check_mixable(final, run_dir)
    base = resolve_base(recipe.model.base, recipe.model.revision).folder.resolve()
    return Source(name, "adapter", str(run_dir), base, final, final, digest)


def _check_mixable(adapter: Path, run_dir: Path) -> None:
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise ConfigError(
            f"{run_dir}: a DoRA adapter cannot share a batch with other adapters; export it with "
            f"honed export {run_dir} --merged DIR and serve DIR"
        )


def _spec_name(spec: str) -> str:
    path = Path(spec)
    return path.name if path.exists() else spec


def _base_name(source: Source) -> str:
    return _spec_name(load_run_recipe(Path(source.origin)).model.base)


def load_served(sources: list[Source], device: torch.device, dtype: torch.dtype) -> Served:
    """Load the base once, attach every adapter under an engine id, and pick the one tokenizer."""
    tokenizer = _one_tokenizer(sources)
    model = load_model(sources[0].base_folder, dtype, device)
    adapter_ids: dict[str, str] = {}
    adapters = [s for s in sources if s.kind == "adapter"]
    for index, source in enumerate(adapters):
        adapter_id = f"adapter{index}"  # served names may hold characters PEFT module keys cannot
        if index == 0:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter_folder, adapter_name=adapter_id)
        else:
            model.load_adapter(source.adapter_folder, adapter_name=adapter_id)
        adapter_ids[source.name] = adapter_id
    for source in sources:
        adapter_ids.setdefault(source.name, BASE_ADAPTER)
    log.info("serving %s", ", ".join(f"{s.name} ({s.kind})" for s in sources))
    return Served(model.to(device).eval(), tokenizer, {s.name: s for s in sources}, adapter_ids)


def _one_tokenizer(sources: list[Source]) -> PreTrainedTokenizerBase:
    """The tokenizer of the first run (or the base); every run must have trained with its template."""
    runs = [s for s in sources if s.tokenizer_folder is not None]
    tokenizers = {
        s.name: load_tokenizer(s.tokenizer_folder) for s in sources if s.tokenizer_folder is not None
    }
    for source in runs:
        found = chat_template_digest(tokenizers[source.name])
        if source.template_sha256 and found != source.template_sha256:
            raise ConfigError(
                f"{source.origin}: the saved tokenizer's chat template (sha256 {found[:12]}) is not the one "
                f"the run trained with ({source.template_sha256[:12]}); serving it would change every prompt"
            )
    digests = {name: chat_template_digest(t) for name, t in tokenizers.items()}
    if len(set(digests.values())) > 1:
        listed = ", ".join(f"{name}: {d[:12]}" for name, d in digests.items())
        raise ConfigError(
            f"the runs trained with different chat templates ({listed}); serve them on separate servers"
        )
    if tokenizers:
        return next(iter(tokenizers.values()))
    return load_tokenizer(sources[0].base_folder)
