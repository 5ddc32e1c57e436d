"""Turn a data row into a conversation (a list of chat messages) according to `data.format`.

Formats, each detected from a row's fields or declared with `data.format`:

| format              | fields                                                     |
| ------------------- | ---------------------------------------------------------- |
| `chat`              | `messages`: [{role, content}, ...] (OpenAI / TRL style)     |
| `sharegpt`          | `conversations`: [{from, value}, ...] (ShareGPT, Axolotl)   |
| `prompt_completion` | `prompt`, `completion`                                     |
| `alpaca`            | `instruction`, optional `input`, `output`                   |
| `preference`        | `chosen`, `rejected`, optional `prompt` (TRL / HH-RLHF)     |
| `text`              | `text` (raw documents, for continued pre-training)          |
| `template`          | any fields, through `data.prompt_template` / `completion_template` |

A row that does not fit raises `RowError` whose message says what is wrong and what was expected; the
caller adds the file:line and gathers every problem into one report. This module knows nothing about files
or tokenizers.
"""

from __future__ import annotations

import re
import string
from typing import Any

from honed.config.schema import DataConfig
from honed.errors import DataError

ROLES = ("system", "user", "assistant")
FORMATS = ("chat", "sharegpt", "prompt_completion", "alpaca", "preference", "text", "template")

# The fields that identify each format, in the order detection tries them.
_SIGNATURES = (
    ("chat", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("preference", ("chosen", "rejected")),
    ("prompt_completion", ("prompt", "completion")),
    ("alpaca", ("instruction", "output")),
    ("text", ("text",)),
)
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
}
# HH-RLHF writes a whole conversation as one string: "\n\nHuman: ...\n\nAssistant: ...".
_TRANSCRIPT_TURN = re.compile(r"\n\n(Human|Assistant): ")


# One valid row per format, shown with every format error so the fix is in the message.
EXAMPLES = {
    "chat": '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}',
    "sharegpt": '{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}',
    "prompt_completion": '{"prompt": "Hi?", "completion": "Hello."}',
    "alpaca": '{"instruction": "Translate to French.", "input": "cat", "output": "chat"}',
    "preference": '{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}',
    "text": '{"text": "A whole document ..."}',
    "template": "a row with every field the templates name, e.g. {question} and {answer}",
}


class RowError(ValueError):
    """A row does not fit the declared format; the message says why and what was expected."""


def detect_format(row: dict[str, Any], where: str) -> str:
    """The format a row's fields identify, or a DataError that explains how to declare one."""
    for name, fields in _SIGNATURES:
        if all(key in row for key in fields):
            return name
    found = ", ".join(sorted(row)) or "(none)"
    raise DataError(
        f"{where}: cannot detect the data format from the fields [{found}]; expected 'messages' (chat), "
        "'conversations' (sharegpt), 'prompt' and 'completion', 'instruction' and 'output' (alpaca), "
        "'chosen' and 'rejected' (preference) or 'text'. For other fields set data.format: template with "
        "data.prompt_template and data.completion_template, e.g. prompt_template: '{question}', "
        "completion_template: '{answer}'"
    )


def to_messages(row: dict[str, Any], fmt: str, cfg: DataConfig) -> list[dict[str, str]]:
    """The row as chat messages ending with the assistant's answer (for preference rows: the chosen one)."""
    if fmt == "text":
        raise RowError(
            "raw text has no prompt and answer to learn; text rows are for continued pre-training, "
            "expected a format with an answer (messages, prompt/completion, ...)"
        )
    if fmt == "preference":
        prompt, chosen, _ = to_preference(row)
        messages = [*prompt, {"role": "assistant", "content": chosen}]
    else:
        messages = _CONVERTERS[fmt](row, cfg)
    if cfg.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return messages


def check_row(row: dict[str, Any], fmt: str, cfg: DataConfig) -> None:
    """Raise RowError if the row does not fit `fmt` (text rows need a string `text`)."""
    if fmt == "text":
        _string(row, "text")
    elif fmt == "preference":
        to_preference(row)
    else:
        to_messages(row, fmt, cfg)


def to_preference(row: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen answer, rejected answer) of a preference row.

    `chosen`/`rejected` may be strings (with a `prompt` string or message list), message lists ending
    with the answer (TRL's conversational form), or whole HH-RLHF transcripts without a `prompt`.
    """
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen_messages, rejected_messages = (
            _checked_messages(chosen, "chosen"),
            _checked_messages(rejected, "rejected"),
        )
        prompt = _prompt_messages(row.get("prompt")) if "prompt" in row else chosen_messages[:-1]
        return prompt, chosen_messages[-1]["content"], rejected_messages[-1]["content"]
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    if "prompt" not in row:
        return _split_transcripts(chosen, rejected)
    prompt = row["prompt"]
    if (
        isinstance(prompt, str)
        and prompt.strip()
        and chosen.startswith(prompt)
        and rejected.startswith(prompt)
    ):
        # Whole transcripts beside their shared prompt (HH-RLHF plus a prompt field): keep the answers.
        chosen, rejected = chosen[len(prompt) :].strip(), rejected[len(prompt) :].strip()
    return _prompt_messages(prompt), chosen, rejected


def row_text(row: dict[str, Any], fmt: str | None, cfg: DataConfig) -> str:
    """The content a row carries, without template text or system prompts: what duplicates, leakage and
    length rules compare. With no format (undetected), every string field in order."""
    if fmt in ("chat", "sharegpt"):
        return "\n".join(m["content"] for m in _CONVERTERS[fmt](row, cfg) if m["role"] != "system")
    if fmt == "preference":
        prompt, chosen, rejected = to_preference(row)
        return "\n".join([*(m["content"] for m in prompt if m["role"] != "system"), chosen, rejected])
    if fmt == "template":
        used = template_fields(cfg.prompt_template or "") + template_fields(cfg.completion_template or "")
        return "\n".join(str(row.get(name, "")) for name in dict.fromkeys(used))
    keys = {
        "prompt_completion": ("prompt", "completion"),
        "alpaca": ("instruction", "input", "output"),
        "text": ("text",),
    }.get(fmt or "", tuple(row))
    return "\n".join(_flatten(row.get(key)) for key in keys if row.get(key) not in (None, ""))


def split_prompt(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """Split a conversation into the prompt (everything before the last answer) and that answer."""
    return messages[:-1], messages[-1]["content"]


def template_fields(template: str) -> list[str]:
    """The row fields a format string uses, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def fill_template(template: str, row: dict[str, Any]) -> str:
    """`template.format_map(row)`, with a RowError naming a missing field."""
    missing = [name for name in template_fields(template) if name not in row]
    if missing:
        raise RowError(
            f"missing field {missing[0]!r} used by the template (fields: {', '.join(sorted(row))})"
        )
    values = {key: "" if value is None else value for key, value in row.items()}
    try:
        return template.format_map(values)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise RowError(f"template cannot be filled from this row ({exc})") from None


def _chat(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    return _ending_with_answer(_checked_messages(row.get("messages"), "messages"))


def _sharegpt(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError(
            f"'conversations' must be a non-empty list of {{from, value}} objects, got {_short(turns)}"
        )
    messages = []
    for i, turn in enumerate(turns):
        speaker = turn.get("from", turn.get("role")) if isinstance(turn, dict) else None
        value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if speaker not in _SHAREGPT_ROLES:
            raise RowError(
                f"conversations[{i}].from must be one of human, gpt, system (or user, assistant), "
                f"got {_short(turn)}"
            )
        if not isinstance(value, str):
            raise RowError(f"conversations[{i}].value must be a string, got {_short(value)}")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": value})
    return _ending_with_answer(messages, "the last turn must be the assistant's (from: gpt)")


def _prompt_completion(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": _text(row, "prompt")},
        {"role": "assistant", "content": _text(row, "completion")},
    ]


def _alpaca(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RowError(f"field 'input' must be a string (or absent), got {_short(extra)}")
    prompt = _text(row, "instruction") + (f"\n\n{extra}" if extra and extra.strip() else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, "output")}]


def _template(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": fill_template(cfg.prompt_template or "", row)},
        {"role": "assistant", "content": fill_template(cfg.completion_template or "", row)},
    ]


_CONVERTERS = {
    "chat": _chat,
    "sharegpt": _sharegpt,
    "prompt_completion": _prompt_completion,
    "alpaca": _alpaca,
    "template": _template,
}


def _checked_messages(messages: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RowError(
            f"'{name}' must be a non-empty list of {{role, content}} objects, got {_short(messages)}"
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RowError(f"{name}[{i}] must have role one of {', '.join(ROLES)}, got {_short(message)}")
        if not isinstance(message.get("content"), str):
            raise RowError(f"{name}[{i}].content must be a string, got {_short(message.get('content'))}")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _ending_with_answer(messages: list[dict[str, str]], reason: str = "") -> list[dict[str, str]]:
    if messages[-1]["role"] != "assistant":
        raise RowError(
            reason or f"the last message must be the assistant's answer, got role {messages[-1]['role']!r}"
        )
    return messages


def _prompt_messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, list):
        return _checked_messages(prompt, "prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError(f"field 'prompt' must be a non-empty string or message list, got {_short(prompt)}")
    if prompt.startswith("\n\nHuman: "):
        return _transcript_messages(prompt.removesuffix("\n\nAssistant:").removesuffix("\n\nAssistant: "))
    return [{"role": "user", "content": prompt}]


def _split_transcripts(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """HH-RLHF rows: both transcripts share every turn up to the last "Assistant:"; that is the prompt."""
    cut = chosen.rfind("\n\nAssistant: ")
    if cut < 0 or not rejected.startswith(chosen[: cut + len("\n\nAssistant: ")]):
        raise RowError(
            "'chosen' and 'rejected' have no 'prompt' field and do not share a Human/Assistant transcript "
            "up to the last 'Assistant:' turn; expected a 'prompt' field or HH-RLHF style transcripts"
        )
    head = cut + len("\n\nAssistant: ")
    return _transcript_messages(chosen[:cut]), chosen[head:], rejected[head:]


def _transcript_messages(transcript: str) -> list[dict[str, str]]:
    """ "\n\nHuman: a\n\nAssistant: b\n\nHuman: c" as messages; it must end with the human's turn."""
    parts = _TRANSCRIPT_TURN.split(transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = zip(parts[1::2], parts[2::2], strict=True)
    messages = [{"role": roles[who], "content": text} for who, text in turns]
    if not messages or messages[-1]["role"] != "user":
        raise RowError("the transcript before the answer must end with a 'Human:' turn")
    return messages


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"field {key!r} must be a non-empty string, got {_short(value)}")
    return value


def _string(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RowError(f"field {key!r} must be a string, got {_short(value)}")
    return value


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a message: its content, not its role
        parts = [value["content"]] if "content" in value else value.values()
        return "\n".join(_flatten(v) for v in parts if v is not None)
    if isinstance(value, list):
        return "\n".join(_flatten(v) for v in value if v is not None)
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
