"""Request side of :mod:`axislens.serving.engine`: limits, OpenAI-style errors, the request schema
(pydantic), request parsing, incremental detokenisation and response chunks.

Example:
    >>> ChatCompletionRequest.model_validate({"model": "m", "messages": [
    ...     {"role": "user", "content": "Hi"}]}).messages[0].text()
    'Hi'
    >>> APIError(400, "bad", param="n").body()["error"]["param"]
    'n'
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from axislens.model.decoding import SamplingConfig

__all__ = ["APIError", "ChatCompletionRequest", "ServeLimits", "parse_request"]


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """Request and batching limits. ``max_tokens`` bounds a request's ``max_tokens``, and
    ``max_prompt_tokens`` its formatted prompt (a long prompt's prefill holds up the batch it
    joins: 4,000 words delayed a short request by 30 s on 2 CPU cores);
    ``default_max_tokens`` is used when a request gives none; ``max_queue`` requests may wait
    before 503s. Up to ``max_batch`` waiting requests are decoded together; once one arrives,
    the scheduler waits ``batch_wait_s`` (longer, up to 4x, while more keep arriving) to fill
    the batch. The default 50 ms lets clients answered at the end of one batch rejoin the next
    together: measured with 8 synchronous clients (``experiments/bench_serve.py``), 10 ms gave
    0.60x the in-process throughput, 50 ms 0.81x, 100 ms 0.79x.

    Example:
        >>> ServeLimits(max_tokens=64, default_max_tokens=8).max_batch
        16
    """

    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_content_chars: int = 32_000
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_queue: int = 256
    max_batch: int = 16
    batch_wait_s: float = 0.05
    max_prompt_tokens: int = 4096

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_messages",
            "max_content_chars",
            "max_tokens",
            "max_prompt_tokens",
            "max_queue",
            "max_batch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeLimits.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.batch_wait_s <= 10:
            raise ValueError(
                f"ServeLimits.batch_wait_s must be in [0, 10], got {self.batch_wait_s}"
            )
        if not 1 <= self.default_max_tokens <= self.max_tokens:
            raise ValueError(
                f"ServeLimits.default_max_tokens must be in [1, max_tokens={self.max_tokens}], "
                f"got {self.default_max_tokens}"
            )


class APIError(Exception):
    """An error answered as OpenAI-style JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


# --------------------------------------------------------------------------------------------
# Request schema
# --------------------------------------------------------------------------------------------


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]
    name: str | None = Field(default=None, max_length=256)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _AxislensOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intervene: bool = True


class ChatCompletionRequest(BaseModel):
    """The accepted subset of OpenAI's chat-completions request (other fields are ignored).

    ``n`` must be 1; ``temperature`` 0 is greedy (OpenAI's defaults: temperature 1, top_p 1).
    """

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=256)
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    axislens: _AxislensOptions | None = None


def _validation_error(err: ValidationError) -> APIError:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {first.get('msg')}")
    return APIError(400, f"{loc or 'body'}: {first.get('msg')}", param=loc or None)


# --------------------------------------------------------------------------------------------
# Jobs and outcomes (what the scheduler's worker thread works on)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    messages: list[dict[str, str]]
    sampling: SamplingConfig
    seed: int
    stop: tuple[str, ...]
    intervene: bool


@dataclass(slots=True)
class _Outcome:
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    axislens: dict[str, Any] = field(default_factory=dict)


class _TextStream:
    """Incremental detokenisation with stop strings: emits only text that is final.

    The reply is stripped of leading and trailing whitespace (as :func:`axislens.generate_text`
    does), so streamed and non-streamed replies equal the library's; trailing whitespace is
    held back until more text follows it.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer, self.stop = tokenizer, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.sent = 0
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.stopped = False

    def push(self, token: int | None) -> str:
        """Add a token (``None``: the end) and return the new final text."""
        if token is not None:
            self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped = text[:cut], True
        self.text = text.rstrip()
        end = len(self.text)
        if token is not None and not self.stopped:
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more bytes
                return ""
            end = max(self.sent, min(end, len(text) - self.hold))
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out


def parse_request(req: ChatCompletionRequest, name: str, limits: ServeLimits) -> _Job:
    """Check a validated request against the served model and the limits; build the job."""
    if req.model != name:
        raise APIError(
            404,
            f"the model {req.model!r} does not exist; this server serves {name!r}",
            param="model",
            code="model_not_found",
        )
    if len(req.messages) > limits.max_messages:
        raise APIError(
            400, f"at most {limits.max_messages} messages are accepted", param="messages"
        )
    messages = []
    for i, m in enumerate(req.messages):
        text = m.text()
        if len(text) > limits.max_content_chars:
            raise APIError(
                400,
                f"messages[{i}].content is longer than {limits.max_content_chars} characters",
                param=f"messages.{i}.content",
            )
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    max_tokens = req.max_completion_tokens or req.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise APIError(
            400,
            f"max_tokens must be <= {limits.max_tokens}, got {max_tokens}",
            param="max_tokens",
        )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(len(s) > 256 for s in stop):
        raise APIError(400, "stop takes at most 4 strings of at most 256 characters", param="stop")
    temperature = 1.0 if req.temperature is None else req.temperature
    sampling = SamplingConfig(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
    )
    seed = req.seed if req.seed is not None else secrets.randbits(63)
    intervene = req.axislens.intervene if req.axislens is not None else True
    return _Job(messages, sampling, int(seed) & ((1 << 63) - 1), tuple(stop), intervene)


def _chunk(cid: str, created: int, name: str, delta: dict[str, Any], **extra: Any) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": name,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


def _usage(out: _Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
    }
