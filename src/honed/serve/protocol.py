"""Request and response types of the OpenAI-compatible API, as the official `openai` client sends them.

Fields honed does not act on but clients commonly send (user, presence_penalty, logit_bias, ...) are
accepted and ignored, as other OpenAI-compatible servers do; fields it cannot honour (tools, n > 8,
logprobs) are refused with a 400 that names them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CHOICES = 8


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)  # the newer name for max_tokens
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    @property
    def stops(self) -> list[str]:
        return [s for s in self.stop or [] if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text; a list of content parts must be text parts only."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {part.get("type") for part in self.content}
        others = sorted(kinds - {"text"}, key=str)  # a part without "type" gives None: not comparable to str
        if others:
            raise ValueError(f"only text content parts are supported, not {others}")
        return "".join(part.get("text", "") for part in self.content)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(..., min_length=1)
    tools: list[dict[str, Any]] | None = None

    def chat(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them (developer is the newer name for system)."""
        role = {"developer": "system"}
        return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: a rating of a served answer and optionally the answer it should have been."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(..., description="The `id` of the chat completion or completion response.")
    rating: int = Field(..., ge=-1, le=1, description="-1 bad, 0 neutral, 1 good.")
    correction: str | None = Field(None, description="The answer that should have been given.")
    comment: str | None = None


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error shape, which the `openai` client turns into its typed exceptions."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
