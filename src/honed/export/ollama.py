"""Write an Ollama Modelfile beside an exported GGUF file, with the chat template the run trained with.

Ollama renders prompts with Go templates, not Jinja. For the chat template families honed knows (ChatML,
as SmolLM2 and Qwen write it, and Gemma's turns) the Modelfile gets a TEMPLATE in Ollama's `.System` /
`.Prompt` / `.Response` form that renders a turn exactly as `honed.data.tokenize.render_prompt` does (a
test renders both and compares), the end-of-turn token as a stop, and a SYSTEM message: the recipe's
`data.system_prompt`, else the default system message the chat template itself inserts (SmolLM2 has one),
so a conversation without a system message looks as it did in training. An unknown family gets no TEMPLATE:
Ollama then picks one from the GGUF's `tokenizer.chat_template`.

This module knows nothing about GGUF files beyond their name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from honed.data.tokenize import render_prompt
from honed.errors import ExportError

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CHATML, GEMMA = "chatml", "gemma"

# Go templates in Ollama's single-turn form: it executes the template once per turn of a conversation and
# cuts the last one at {{ .Response }} (where generation starts).
TEMPLATES = {
    CHATML: (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
    ),
    # Gemma has no system role: the system message opens the first user turn, as Google's template does.
    # The template's leading <bos> is not written: llama.cpp adds it (tokenizer.ggml.add_bos_token).
    GEMMA: (
        "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
        "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n"
    ),
}
END_OF_TURN = {CHATML: "<|im_end|>", GEMMA: "<end_of_turn>"}
_MARKERS = {CHATML: "<|im_start|>", GEMMA: "<start_of_turn>"}


def template_family(chat_template: str | None) -> str | None:
    """The family of a Jinja chat template (chatml or gemma) from the turn markers it writes, else None."""
    for family, marker in _MARKERS.items():
        if chat_template and marker in chat_template:
            return family
    return None


def default_system(tokenizer: PreTrainedTokenizerBase, family: str | None) -> str | None:
    """The system message a ChatML template inserts when a conversation has none (SmolLM2's), else None."""
    if family != CHATML:
        return None
    text = render_prompt(tokenizer, [{"role": "user", "content": "x"}])
    head = "<|im_start|>system\n"
    if not text.startswith(head):
        return None
    return text[len(head) : text.index("<|im_end|>")]


def modelfile_text(
    gguf_name: str, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None
) -> str:
    """The Modelfile for `gguf_name` (a file in the same folder) and the run's tokenizer and system prompt."""
    family = template_family(tokenizer.chat_template)
    lines = [
        "# Written by honed export. Create the model with: ollama create NAME -f Modelfile",
        f"FROM ./{gguf_name}",
    ]
    if family is None:
        log.warning(
            "Modelfile: the chat template is not one honed knows (ChatML, Gemma); no TEMPLATE written, "
            "Ollama picks one from the GGUF's tokenizer.chat_template"
        )
        lines.append(
            "# No TEMPLATE: the chat template is not a family honed knows (ChatML, Gemma), so Ollama uses "
            "the template it recognises in the GGUF's tokenizer.chat_template metadata."
        )
    else:
        lines.append(f'TEMPLATE """{TEMPLATES[family]}"""')
    stop = END_OF_TURN[family] if family is not None else tokenizer.eos_token
    if stop:
        lines.append(f'PARAMETER stop "{stop}"')
    system = system_prompt or default_system(tokenizer, family)
    if system:
        if '"""' in system:
            raise ExportError('data.system_prompt contains """, which a Modelfile cannot quote')
        if not system_prompt:
            lines.append("# The chat template's own default system message (it adds it when there is none).")
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def write_modelfile(
    out_dir: Path, gguf_name: str, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None
) -> Path:
    """Write `out_dir/Modelfile` pointing at `gguf_name`; return its path."""
    path = Path(out_dir) / "Modelfile"
    path.write_text(modelfile_text(gguf_name, tokenizer, system_prompt))
    return path
