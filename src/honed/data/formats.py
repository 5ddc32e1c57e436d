"""Turn a data row into a conversation (a list of chat messages) according to `data.format`.

Formats: `chat` (a `messages` list), `prompt_completion` (`prompt` and `completion` fields), and `template`
(any fields mapped through `data.prompt_template` / `data.completion_template`). A row that does not fit
raises `RowError` with a reason; the caller adds the file:line.
"""

from __future__ import annotations

import string
from typing import Any

from honed.config.schema import DataConfig
from honed.errors import DataError

ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    """A row does not fit the declared format; the message says why."""


def detect_format(row: dict[str, Any], where: str) -> str:
    """Pick chat or prompt_completion from a row's fields, or explain how to declare the format."""
    if "messages" in row:
        return "chat"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    fields = ", ".join(sorted(row)) or "(none)"
    raise DataError(
        f"{where}: cannot detect the data format from the fields [{fields}]; expected 'messages' (chat) or "
        "'prompt' and 'completion'. For other fields set data.format: template with data.prompt_template "
        "and data.completion_template, e.g. prompt_template: '{question}', completion_template: '{answer}'"
    )


def to_messages(row: dict[str, Any], fmt: str, cfg: DataConfig) -> list[dict[str, str]]:
    """The row as chat messages ending with the assistant's answer."""
    if fmt == "chat":
        messages = _chat(row)
    elif fmt == "prompt_completion":
        messages = [
            {"role": "user", "content": _text(row, "prompt")},
            {"role": "assistant", "content": _text(row, "completion")},
        ]
    else:
        messages = [
            {"role": "user", "content": fill_template(cfg.prompt_template or "", row)},
            {"role": "assistant", "content": fill_template(cfg.completion_template or "", row)},
        ]
    if cfg.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return messages


def split_prompt(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """Split a conversation into the prompt (everything before the last answer) and that answer."""
    return messages[:-1], messages[-1]["content"]


def fill_template(template: str, row: dict[str, Any]) -> str:
    """`template.format_map(row)`, with a RowError naming a missing field."""
    missing = [name for _, name, _, _ in string.Formatter().parse(template) if name and name not in row]
    if missing:
        raise RowError(
            f"missing field {missing[0]!r} used by the template (fields: {', '.join(sorted(row))})"
        )
    values = {key: "" if value is None else value for key, value in row.items()}
    try:
        return template.format_map(values)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise RowError(f"template cannot be filled from this row ({exc})") from None


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"field {key!r} must be a non-empty string, got {_short(value)}")
    return value


def _chat(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RowError(
            f"'messages' must be a non-empty list of {{role, content}} objects, got {_short(messages)}"
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RowError(f"messages[{i}] must have role one of {', '.join(ROLES)}, got {_short(message)}")
        if not isinstance(message.get("content"), str):
            raise RowError(f"messages[{i}].content must be a string, got {_short(message.get('content'))}")
        out.append({"role": message["role"], "content": message["content"]})
    if out[-1]["role"] != "assistant":
        raise RowError(f"the last message must be the assistant's answer, got role {out[-1]['role']!r}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
