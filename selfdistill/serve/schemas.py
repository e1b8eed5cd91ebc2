"""Request bodies of the OpenAI-compatible endpoints, their validation, and the OpenAI-style error.

Requests are parsed strictly (``pydantic``, unknown fields refused as OpenAI does), then :func:`refuse_unsupported`
turns every parameter the server cannot honour (sampling, ``n > 1``, logprobs, penalties, tools, ...) into a 400
naming it, so nothing is silently ignored. ``temperature`` absent or 0 means greedy decoding (the only mode).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_message(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class _Common(_Strict):
    """Fields both endpoints share. ``selfdistill``: per-request decoding options (``strategy`` and its options,
    validated by the registry)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    seed: int | None = None  # accepted and unused: decoding is greedy
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    selfdistill: dict[str, Any] | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: Any = None
    response_format: dict | None = None
    parallel_tool_calls: bool | None = None


#: parameter -> (is it set to something we cannot do?, why)
_UNSUPPORTED = {
    "temperature": (lambda v: v is not None and v > 0, "only greedy decoding is supported (temperature 0 or unset)"),
    "top_p": (lambda v: v is not None and v < 1, "only greedy decoding is supported (top_p 1 or unset)"),
    "n": (lambda v: v is not None and v > 1, "only n=1 is supported (greedy decoding gives one answer)"),
    "best_of": (lambda v: v is not None and v > 1, "best_of > 1 is not supported"),
    "logprobs": (lambda v: v not in (None, False, 0), "logprobs are not supported"),
    "top_logprobs": (lambda v: v not in (None, 0), "logprobs are not supported"),
    "echo": (lambda v: v, "echo is not supported"),
    "suffix": (lambda v: v, "suffix (insertion) is not supported"),
    "presence_penalty": (lambda v: v not in (None, 0), "penalties are not supported"),
    "frequency_penalty": (lambda v: v not in (None, 0), "penalties are not supported"),
    "logit_bias": (lambda v: bool(v), "logit_bias is not supported"),
    "tools": (lambda v: bool(v), "tool calling is not supported"),
    "tool_choice": (lambda v: v not in (None, "none"), "tool calling is not supported"),
    "parallel_tool_calls": (lambda v: v, "tool calling is not supported"),
    "response_format": (lambda v: v is not None and v.get("type") != "text", "only text responses are supported"),
}


def refuse_unsupported(req: _Common) -> None:
    for name, (bad, why) in _UNSUPPORTED.items():
        if name in type(req).model_fields and bad(getattr(req, name)):
            raise APIError(400, f"{why}; got {name}={getattr(req, name)!r}", param=name, code="unsupported_parameter")


def _unencodable(value, path: str = "") -> str | None:
    """The dotted path of the first string in a parsed JSON value that is not valid Unicode text, or ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if (found := _unencodable(item, f"{path}.{key}" if path else str(key))) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _unencodable(item, f"{path}.{i}")) is not None:
                return found
    return None


def parse_body(raw: bytes, cls: type[_Common]) -> _Common:
    """The request ``cls`` from a raw body: malformed JSON, schema errors and unsupported parameters are 400s."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if (where := _unencodable(data)) is not None:  # JSON allows "\ud800"; no tokenizer can take it
        raise APIError(400, f"{where}: a string with a lone UTF-16 surrogate is not text", param=where,
                       code="invalid_value")
    try:
        req = cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        code = "unknown_parameter" if first["type"] == "extra_forbidden" else "invalid_value"
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param, code=code) from None
    refuse_unsupported(req)
    return req
