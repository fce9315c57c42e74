"""Generation through an inference engine behind the OpenAI-compatible API (vLLM, SGLang, TGI,
``axislens serve``): continuous batching, paged attention and tensor parallelism for paper-scale
runs, while the bridge stays for what needs hooks (collection, steering, monitoring).

:class:`OpenAIBackend` sends each prompt as the **token ids** of
:func:`~axislens.model.chat.format_conversation` to the completions endpoint, so a response is
conditioned on exactly the tokens that collection later teacher-forces (Gemma's system merge,
the disabled thinking block and BOS handling stay axislens's, not the server's). Before any
generation, :meth:`OpenAIBackend.check` verifies that the engine is reachable, serves the named
model, and tokenizes a probe exactly as the local tokenizer does (vLLM's ``/tokenize``
endpoint; servers without it are checked on the prompt-token count of a probe completion).
Every request then re-checks ``usage.prompt_tokens`` against the ids it sent.

Each request carries the item's seed (:func:`~axislens.model.decoding.item_seed`), so a rerun at
another concurrency gives the same text wherever the engine honours per-request seeds (vLLM
does). Requests run on a bounded thread pool through the official ``openai`` client, whose own
retries (with backoff) handle rate limits, server errors and dropped connections; items are fed
lazily, so memory holds the in-flight window, not the dataset.

Example:
    Needs a running OpenAI-compatible server (not run by the doctest suite).

    >>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", "smol")  # doctest: +SKIP
    >>> records = generate_responses(model, personas, store, backend=backend)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from axislens.extras import require
from axislens.model.chat import FormattedConversation
from axislens.model.decoding import SamplingConfig, item_seed, stop_token_ids

__all__ = [
    "Completion",
    "EngineError",
    "EngineInfo",
    "OpenAIBackend",
    "StreamingBackend",
    "redact_url",
]

_PROBE = [
    {"role": "system", "content": "You are a lighthouse keeper on a rocky coast."},
    {
        "role": "user",
        "content": "Naïve café résumé — 東京 🚀, x² ≥ 0.5; `def f(): return {'a': 1}`\n\tWho are you?",
    },
]


class EngineError(ValueError):
    """The engine cannot be used (unreachable, wrong model, tokenizer mismatch) or stopped
    answering mid-run; one line naming the engine and what is at fault."""


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What :meth:`OpenAIBackend.check` found: passed on to :meth:`OpenAIBackend.stream`."""

    name: str
    """``openai:<model>@<base url>``, recorded in the generation provenance."""
    max_model_len: int | None
    """The server's context length where it reports one (vLLM does)."""
    tokenizer_check: str
    """How the tokenizer was checked: ``"tokenize endpoint"`` or ``"prompt token count"``."""
    stop_token_ids: tuple[int, ...]
    """Sent with every request: the same stop tokens as the bridge's decode loop."""


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished request: the response text, or ``error`` (then ``text`` is ``None``)."""

    key: str
    text: str | None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that checks its engine first, then yields completions as they finish.

    :func:`~axislens.collection.responses.generate_responses` uses it in place of
    :class:`~axislens.collection.responses.Backend` when available: completions are written
    to the store in chunks of ``chunk_size`` as they arrive; failed ones are left for resume.
    """

    @property
    def chunk_size(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    def check(self, tokenizer: Any) -> EngineInfo: ...

    def stream(
        self,
        requests: Iterable[tuple[str, FormattedConversation]],
        sampling: SamplingConfig,
        info: EngineInfo,
    ) -> Iterator[Completion]: ...


@dataclass(frozen=True, slots=True)
class OpenAIBackend:
    """Generate through any OpenAI-compatible completions endpoint (official ``openai`` client).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (``vllm serve``'s default).
        model: the served model name (``--served-model-name``).
        api_key: default ``$OPENAI_API_KEY``, else a placeholder (local servers need none).
        concurrency: requests in flight; the default fills a vLLM batch of 64 sequences.
        max_retries: the client's retries per request (429, 408/409, 5xx, connection errors,
            with the client's exponential backoff and ``Retry-After``).
        timeout: seconds per request.
        chunk_size: completions per store write (also written every ``flush_seconds``).
        max_consecutive_failures: the run stops (and leaves the rest for resume) after this
            many failed requests in a row, e.g. when the server went away.
        tokenizer: the local tokenizer (or bridge model), needed only by :meth:`generate`;
            :func:`~axislens.collection.responses.generate_responses` passes the model's.
        extra_body: fields added to every request (engine-specific sampling options).
        intervention: the name of an intervention the server loaded through the axislens vLLM
            plugin (``AXISLENS_VLLM_INTERVENTIONS``; ``"none"`` for none): sent with every request
            as ``vllm_xargs``, with a ``cache_salt`` of its own. :meth:`check` makes sure the
            server has the plugin and the name, so a stock server cannot answer unsteered.

    Example:
        Needs a running OpenAI-compatible server (not run by the doctest suite).

        >>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", "qwen3-32b", concurrency=128)  # doctest: +SKIP
    """

    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 64
    max_retries: int = 5
    timeout: float = 600.0
    chunk_size: int = 64
    flush_seconds: float = 30.0
    max_consecutive_failures: int = 64
    tokenizer: Any = None
    extra_body: tuple[tuple[str, Any], ...] = ()
    intervention: str | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"engine URL must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            raise ValueError("OpenAIBackend needs the served model name")
        if min(self.concurrency, self.chunk_size, self.max_consecutive_failures) < 1:
            raise ValueError(
                "concurrency, chunk_size and max_consecutive_failures must be >= 1, got "
                f"{self.concurrency}, {self.chunk_size}, {self.max_consecutive_failures}"
            )
        if self.max_retries < 0 or self.timeout <= 0:
            raise ValueError(
                f"need max_retries >= 0 and timeout > 0, got {self.max_retries}, {self.timeout}"
            )

    @property
    def name(self) -> str:
        """How the engine appears in messages and manifests (credentials in the URL masked)."""
        where = f"openai:{self.model}@{redact_url(self.base_url)}"
        return (
            where if self.intervention is None else f"{where} (axislens vLLM: {self.intervention})"
        )

    def _intervention_body(self) -> dict[str, Any]:
        if self.intervention is None:
            return {}
        return {
            "vllm_xargs": {"axislens": self.intervention},
            "cache_salt": f"axislens:{self.intervention}",
        }

    def check_intervention(self) -> None:
        """The server runs the axislens vLLM plugin and loaded :attr:`intervention`; else
        :class:`EngineError` (a stock server would silently ignore the name)."""
        if self.intervention is None:
            return
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        client = self._client(max_retries=1, timeout=min(self.timeout, 30.0))
        probe = "axislens-probe-not-a-name"
        try:
            client.completions.create(
                model=self.model,
                prompt=[0],
                max_tokens=1,
                extra_body={"vllm_xargs": {"axislens": probe}},
            )
        except openai.BadRequestError as err:
            text = _message(err)
            if f"unknown axislens intervention {probe!r}" not in text:
                raise EngineError(f"engine {self.name}: the plugin probe failed ({text})") from None
            if self.intervention != "none" and repr(self.intervention) not in text:
                raise EngineError(
                    f"engine {self.name}: the server did not load intervention "
                    f"{self.intervention!r} ({text})"
                ) from None
            return
        except openai.APIError as err:
            raise EngineError(f"engine {self.name}: the plugin probe failed ({err})") from None
        raise EngineError(
            f"engine {self.name}: the server accepted an unknown intervention name, so it does not "
            "run the axislens vLLM plugin (install integrations/vllm and set "
            "AXISLENS_VLLM_INTERVENTIONS)"
        )

    def _client(self, *, max_retries: int | None = None, timeout: float | None = None) -> Any:
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=self.max_retries if max_retries is None else max_retries,
            timeout=self.timeout if timeout is None else timeout,
        )

    def _root(self) -> str:
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    # ------------------------------------------------------------------ checks

    def check_served(self) -> int | None:
        """Engine reachable and serving ``model`` (no tokenizer needed: the CLI runs it before
        loading anything); returns the server's context length where it reports one."""
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        client = self._client(max_retries=1, timeout=min(self.timeout, 30.0))
        try:
            served = client.models.list().data
        except openai.APIConnectionError as err:
            raise EngineError(
                f"engine at {redact_url(self.base_url)} is unreachable ({err})"
            ) from None
        except openai.APIStatusError as err:
            raise EngineError(
                f"engine at {redact_url(self.base_url)}: listing its models failed with HTTP "
                f"{err.status_code} ({_message(err)})"
            ) from None
        names = [m.id for m in served]
        if self.model not in names:
            raise EngineError(
                f"engine at {redact_url(self.base_url)} serves "
                f"{', '.join(map(repr, names)) or 'no model'}, "
                f"not {self.model!r} (--engine-model)"
            )
        max_len = (served[names.index(self.model)].model_extra or {}).get("max_model_len")
        return int(max_len) if max_len else None

    def check(self, tokenizer: Any) -> EngineInfo:
        """Engine reachable, model served, tokenizer identical on a probe; else :class:`EngineError`.

        ``tokenizer`` is the local tokenizer or a bridge model (its ``.tokenizer``).
        """
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        from axislens.model.chat import format_conversation

        tok = getattr(tokenizer, "tokenizer", tokenizer)
        max_len = self.check_served()
        self.check_intervention()
        client = self._client(max_retries=1, timeout=min(self.timeout, 30.0))
        conv = format_conversation(tok, _PROBE, add_generation_prompt=True)
        local = [int(t) for t in conv.input_ids.tolist()]
        how = "tokenize endpoint"
        try:
            reply = client.post(
                f"{self._root()}/tokenize",
                cast_to=object,
                body={"model": self.model, "prompt": conv.text, "add_special_tokens": False},
            )
            remote = [int(t) for t in reply["tokens"]]  # type: ignore[index]
        except openai.NotFoundError:
            how, remote = "prompt token count", self._count_probe(client, conv.text, local)
        except (openai.APIError, KeyError, TypeError, ValueError) as err:
            raise EngineError(
                f"engine {self.name}: the tokenizer probe failed ({type(err).__name__}: {err})"
            ) from None
        if remote != local:
            at = next(
                (i for i, (a, b) in enumerate(zip(local, remote, strict=False)) if a != b),
                min(len(local), len(remote)),
            )
            raise EngineError(
                f"engine {self.name} tokenizes differently from the local tokenizer "
                f"{getattr(tok, 'name_or_path', '?')!r}: {len(remote)} vs {len(local)} probe "
                f"tokens, first difference at token {at} (serve the same model folder)"
            )
        return EngineInfo(self.name, max_len, how, tuple(stop_token_ids(tok)))

    def _count_probe(self, client: Any, text: str, local: list[int]) -> list[int]:
        """Servers without ``/tokenize``: the text probe's prompt-token count must match."""
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        try:
            reply = client.completions.create(
                model=self.model, prompt=text, max_tokens=1, temperature=0.0
            )
        except openai.APIError as err:
            raise EngineError(
                f"engine {self.name}: the tokenizer probe failed ({type(err).__name__}: {err})"
            ) from None
        n = int(reply.usage.prompt_tokens) if reply.usage else -1
        # A server may put its own BOS in front of a text prompt; ids are sent without one.
        return local if n in (len(local), len(local) + 1) else [-1] * max(n, 0)

    # ------------------------------------------------------------------ generation

    def stream(
        self,
        requests: Iterable[tuple[str, FormattedConversation]],
        sampling: SamplingConfig,
        info: EngineInfo,
    ) -> Iterator[Completion]:
        """Yield a :class:`Completion` per ``(key, conversation)`` as each finishes.

        At most ``concurrency`` requests are in flight and ``requests`` is consumed lazily.
        After ``max_consecutive_failures`` failures in a row (or when the server refuses the
        model or the key), no new request is sent; the in-flight ones are yielded, then
        :class:`EngineError` is raised naming the last failure.
        """
        client = self._client()
        it = iter(requests)
        pending: dict[Future[Completion], str] = {}
        failures, stop = 0, None
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="engine") as pool:

            def fill() -> None:
                while stop is None and len(pending) < self.concurrency:
                    nxt = next(it, None)
                    if nxt is None:
                        return
                    key, conv = nxt
                    pending[pool.submit(self._one, client, key, conv, sampling, info)] = key

            fill()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    del pending[fut]
                    done = fut.result()
                    if done.ok:
                        failures = 0
                    else:
                        failures += 1
                        fatal = isinstance(done.error, str) and done.error.startswith(_FATAL)
                        if fatal or failures >= self.max_consecutive_failures:
                            stop = done.error
                    yield done
                fill()
        if stop is not None:
            raise EngineError(
                f"engine {self.name} stopped the run after {failures} failed request(s) in a "
                f"row (last: {stop}); finished items are stored, rerun to resume"
            )

    def _one(
        self,
        client: Any,
        key: str,
        conv: FormattedConversation,
        sampling: SamplingConfig,
        info: EngineInfo,
    ) -> Completion:
        openai = require("openai", "judge", "generation through an OpenAI-compatible engine")

        ids = [int(t) for t in conv.input_ids.tolist()]
        body: dict[str, Any] = {
            "stop_token_ids": list(info.stop_token_ids),
            **dict(self.extra_body),
            **self._intervention_body(),
        }
        try:
            reply = client.completions.create(
                model=self.model,
                prompt=ids,
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                seed=item_seed(sampling.seed, key),
                n=1,
                extra_body=body,
            )
        except (
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
        ) as err:
            return Completion(key, None, error=f"{_FATAL}HTTP {err.status_code}: {_message(err)}")
        except openai.APIStatusError as err:
            return Completion(key, None, error=f"HTTP {err.status_code}: {_message(err)}")
        except openai.APIError as err:  # connection lost or timed out, after the retries
            return Completion(key, None, error=f"{type(err).__name__}: {err}")
        if not reply.choices:
            return Completion(key, None, error="the server returned no choice")
        usage = reply.usage
        prompt_tokens = int(usage.prompt_tokens) if usage else len(ids)
        if prompt_tokens != len(ids):
            return Completion(
                key,
                None,
                error=f"the server conditioned on {prompt_tokens} prompt tokens, not the "
                f"{len(ids)} sent",
            )
        return Completion(
            key,
            (reply.choices[0].text or "").strip(),
            int(usage.completion_tokens) if usage else 0,
            prompt_tokens,
        )

    def generate(
        self,
        conversations: Sequence[FormattedConversation],
        sampling: SamplingConfig,
        keys: Sequence[str],
    ) -> list[str]:
        """The plain :class:`~axislens.collection.responses.Backend` call: all or nothing.

        Needs ``tokenizer=`` on the backend (for the probe); raises :class:`EngineError` if any
        request fails.
        """
        if self.tokenizer is None:
            raise EngineError(
                f"engine {self.name}: OpenAIBackend.generate needs tokenizer=... (the local "
                "tokenizer the server is checked against)"
            )
        if len(keys) != len(conversations):
            raise ValueError(f"got {len(keys)} keys for {len(conversations)} conversations")
        info = self.check(self.tokenizer)
        got = {c.key: c for c in self.stream(zip(keys, conversations, strict=True), sampling, info)}
        failed = [c for c in got.values() if not c.ok]
        if failed:
            raise EngineError(
                f"engine {self.name}: {len(failed)} of {len(keys)} requests failed "
                f"(first: {failed[0].key}: {failed[0].error})"
            )
        return [got[k].text or "" for k in keys]


_FATAL = "refused: "


_SECRET_PARAMS = {
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "secret",
    "password",
}


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking query values masked, for messages, logs
    and manifests: ``http://user:SECRET@host/v1?key=K`` -> ``http://user:***@host/v1?key=***``.

    >>> redact_url("http://user:s3cret@127.0.0.1:8000/v1?api_key=abc&x=1")
    'http://user:***@127.0.0.1:8000/v1?api_key=***&x=1'
    >>> redact_url("http://127.0.0.1:8000/v1")
    'http://127.0.0.1:8000/v1'
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return " ".join(str(msg).split())[:300]
    return " ".join(str(getattr(err, "message", err)).split())[:300]


def plan_line(
    info: EngineInfo, todo: int, stored: int, sampling: SamplingConfig, concurrency: int
) -> str:
    """The plan printed before an engine run."""
    ctx = f", context {info.max_model_len}" if info.max_model_len else ""
    return (
        f"generate through {info.name} (tokenizer checked: {info.tokenizer_check}{ctx}): "
        f"{todo:,} items to generate ({stored:,} already stored), up to "
        f"{todo * sampling.max_new_tokens:,} new tokens, {concurrency} requests in flight"
    )


def eta_line(items: int, tokens: int, seconds: float, remaining: int) -> str:
    """The ETA printed after the first chunk."""
    rate = items / seconds if seconds > 0 else 0.0
    eta = remaining / rate if rate else float("inf")
    return (
        f"first {items} items in {seconds:.1f} s ({tokens / max(seconds, 1e-9):.1f} tokens/s); "
        f"ETA for the remaining {remaining:,}: {_duration(eta)}"
    )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
