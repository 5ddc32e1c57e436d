"""The Modelfile's Go template renders a turn exactly as training's render_prompt does: they cannot drift."""

from __future__ import annotations

import logging
import re

import pytest

from honed.data.tokenize import render_conversation, render_prompt
from honed.export.ollama import TEMPLATES, modelfile_text, template_family, write_modelfile
from honed.models.load import GEMMA_CHAT_TEMPLATE

# SmolLM2-135M-Instruct's chat template, as its GGUF carries it: a default system message when none is given.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM, USER = "You answer in JSON.", "Two iced lattes, please!"


def render_go(template: str, system: str = "", prompt: str = "", response: str | None = None) -> str:
    """Ollama's execution of a `.System`/`.Prompt`/`.Response` template for one turn, by substitution.

    `{{ if .X }}...{{ end }}` keeps its body when X is set; with `response` None the text stops at
    `{{ .Response }}`, where Ollama starts generating.
    """
    values = {"System": system, "Prompt": prompt, "Response": response or ""}
    if response is None:
        template = template.split("{{ .Response }}")[0]
    text = re.sub(
        r"\{\{ if \.(\w+) \}\}(.*?)\{\{ end \}\}",
        lambda m: m[2] if values[m[1]] else "",
        template,
        flags=re.S,
    )
    return re.sub(r"\{\{ \.(\w+) \}\}", lambda m: values[m[1]], text)


def _modelfile_parts(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r'^(TEMPLATE|SYSTEM) """(.*?)"""', text, flags=re.S | re.M)}


@pytest.fixture
def chatml(bpe_tokenizer):
    return bpe_tokenizer  # honed's fallback ChatML template, no default system message


def test_chatml_template_renders_a_system_and_user_turn_as_training_does(chatml):
    template = TEMPLATES[template_family(chatml.chat_template)]
    expected = render_prompt(
        chatml, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    )
    assert render_go(template, SYSTEM, USER) == expected
    assert render_go(template, "", USER) == render_prompt(chatml, [{"role": "user", "content": USER}])


def test_chatml_template_renders_earlier_turns_as_training_does(chatml):
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": '{"drinks": 2}'},
        {"role": "user", "content": "And a muffin."},
    ]
    template = TEMPLATES["chatml"]
    ollama = render_go(template, SYSTEM, USER, '{"drinks": 2}') + render_go(template, "", "And a muffin.")
    assert ollama == render_prompt(chatml, messages)
    assert render_conversation(chatml, messages[:3]) == render_go(template, SYSTEM, USER, '{"drinks": 2}')


def test_modelfile_for_smollm2_keeps_its_default_system_message(bpe_tokenizer, tmp_path):
    bpe_tokenizer = _with_template(bpe_tokenizer, SMOLLM2_TEMPLATE)
    path = write_modelfile(tmp_path, "model-Q8_0.gguf", bpe_tokenizer)
    text = path.read_text()
    assert "FROM ./model-Q8_0.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    parts = _modelfile_parts(text)
    rendered = render_go(parts["TEMPLATE"], parts["SYSTEM"], USER)
    assert rendered == render_prompt(bpe_tokenizer, [{"role": "user", "content": USER}])


def test_recipe_system_prompt_becomes_the_modelfile_system(bpe_tokenizer):
    bpe_tokenizer = _with_template(bpe_tokenizer, SMOLLM2_TEMPLATE)
    parts = _modelfile_parts(modelfile_text("m.gguf", bpe_tokenizer, system_prompt=SYSTEM))
    assert parts["SYSTEM"] == SYSTEM
    expected = render_prompt(
        bpe_tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    )
    assert render_go(parts["TEMPLATE"], parts["SYSTEM"], USER) == expected


def test_gemma_template_renders_as_training_does_after_bos(bpe_tokenizer):
    gemma = _with_template(bpe_tokenizer, GEMMA_CHAT_TEMPLATE)
    assert template_family(gemma.chat_template) == "gemma"
    text = modelfile_text("g.gguf", gemma, system_prompt=SYSTEM)
    assert 'PARAMETER stop "<end_of_turn>"' in text
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    expected = render_prompt(gemma, messages).removeprefix(gemma.bos_token)  # llama.cpp adds BOS itself
    assert render_go(_modelfile_parts(text)["TEMPLATE"], SYSTEM, USER) == expected


def test_unknown_template_family_leaves_the_template_to_the_gguf(bpe_tokenizer, caplog):
    other = _with_template(
        bpe_tokenizer, "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    )
    with caplog.at_level(logging.WARNING, logger="honed.export.ollama"):
        text = modelfile_text("x.gguf", other)
    assert "TEMPLATE" not in _modelfile_parts(text)
    assert "# No TEMPLATE" in text and "tokenizer.chat_template" in text
    assert f'PARAMETER stop "{other.eos_token}"' in text
    assert "no TEMPLATE written" in caplog.text


def _with_template(tokenizer, template: str):
    import copy

    clone = copy.deepcopy(tokenizer)
    clone.chat_template = template
    return clone
