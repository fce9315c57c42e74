"""Role-adherence judges: score each role response 0-3 with the role's rubric.

A judge is anything with ``score(requests) -> results`` (:class:`Judge`). Three ship:

- :class:`OpenAIJudge`: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server,
  ...) through the official ``openai`` client, with a concurrency limit, a rate limit and
  retries with exponential backoff;
- :class:`ModelJudge`: a local TransformerLens bridge model answering the rubric greedily;
- :class:`KeepAll`: no judging; every response scores 3, so role vectors use every response.

Scores are read by one strict parser, :func:`parse_score`: a reply must *start* with a digit 0-3
(``"Score: 2"`` is accepted). Anything else is recorded with ``score=None`` and the raw text,
never guessed. :func:`judge_store` judges the role responses of an
:class:`~axislens.store.ActivationStore` and appends the scores, resumably. Default responses
are never judged: the paper's default vector is the mean of *all* default responses.

Example:
    >>> parse_score("Score: 2"), parse_score("3"), parse_score("I think 3")
    (2, 3, None)
    >>> KeepAll().score([JudgeRequest("role/ghost/p0/q1", "...")])[0].score
    3
    >>> judge_store(store, personas, OpenAIJudge("gpt-4.1-mini"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Judge",
    "JudgeError",
    "JudgeRequest",
    "JudgeResult",
    "JudgeSummary",
    "KeepAll",
    "ModelJudge",
    "OpenAIJudge",
    "judge_requests",
    "judge_store",
    "parse_score",
]

JUDGEABLE_KINDS = ("role", "trait_pos", "trait_neg")
"""Item kinds that have a rubric. ``default`` items are never judged (never filtered)."""


class JudgeError(ValueError):
    """A judge cannot run at all (bad configuration, authentication, unknown model...)."""


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """One response to score: its store item id and the filled rubric prompt."""

    item_id: str
    prompt: str


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """A judge's verdict on one item.

    ``score`` is 0-3, or ``None`` when the reply could not be parsed (then ``raw`` holds it) or
    the request failed (then ``error`` says why; :func:`judge_store` does not store failed
    results, so a later run retries them). ``judge`` describes who scored, e.g.
    ``"openai:gpt-4.1-mini@https://api.openai.com/v1/"``, ``"model:<model id>"``, ``"keep_all"``.
    """

    item_id: str
    score: int | None
    raw: str
    judge: str
    error: str | None = None


@runtime_checkable
class Judge(Protocol):
    """Scores role adherence 0-3; returns one result per request, in request order."""

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]: ...


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# Leading non-word characters (whitespace, quotes, markdown), an optional "score" label, then a
# digit 0-3 that is not part of a larger number, a negative number, a decimal or a fraction.
_SCORE = re.compile(
    r"^[^\w\-]*(?:(?:score|rating)[^\w\-]*(?:is[^\w\-]*)?)?(?<![\d.])([0-3])(?![\d]|[.,/\-]\d)",
    re.IGNORECASE,
)


def parse_score(text: str) -> int | None:
    """The score 0-3 a judge reply starts with, else ``None`` (never guessed).

    Accepted: ``"3"``, ``" 2."``, ``"**1**"``, ``"Score: 2"``, ``"score = 0"``, ``"2\\n(reason)"``;
    a leading ``<think>...</think>`` block is ignored. Rejected: ``"4"``, ``"10"``, ``"-1"``,
    ``"2.5"``, ``"2/3"``, ``"I would say 3"``, ``""``.

    >>> [parse_score(t) for t in ["3", "Score: 2", "**1**", "10", "2.5", "The score is 3"]]
    [3, 2, 1, None, None, None]
    """
    m = _SCORE.match(_THINK.sub("", text))
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# Judges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAll:
    """No judging: every response scores 3 (raw ``"keep-all"``, judge ``"keep_all"``).

    Role vectors then average *every* response of a role, as with an unfiltered run; the stored
    judge name keeps that visible in the provenance of any analysis built on the scores.
    """

    name: str = "keep_all"

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        return [JudgeResult(r.item_id, 3, "keep-all", self.name) for r in requests]


@dataclass(frozen=True, slots=True)
class ModelJudge:
    """A local bridge model answers each rubric prompt (as a user message), greedily.

    Prompts longer than the model's context are not sent: their result has ``error`` set.

    Example:
        >>> judge = ModelJudge(axislens.load_model("Qwen/Qwen3-32B", device="cuda"))  # doctest: +SKIP
    """

    model: Any
    max_new_tokens: int = 4
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens}, "
                f"{self.batch_size}"
            )

    @property
    def name(self) -> str:
        from axislens.model.loading import model_provenance

        return f"model:{model_provenance(self.model).model_id}"

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        from axislens.model.chat import format_conversation
        from axislens.model.decoding import SamplingConfig, generate_text

        name = self.name
        limit = int(self.model.cfg.n_ctx) - self.max_new_tokens
        convs, keep = [], []
        results: list[JudgeResult | None] = [None] * len(requests)
        for i, req in enumerate(requests):
            conv = format_conversation(
                self.model, [{"role": "user", "content": req.prompt}], add_generation_prompt=True
            )
            if len(conv) > limit:
                msg = f"rubric prompt of {len(conv)} tokens exceeds the judge's context ({limit})"
                results[i] = JudgeResult(req.item_id, None, "", name, msg)
            else:
                convs.append(conv)
                keep.append(i)
        sampling = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=0.0)
        texts = generate_text(self.model, convs, sampling, batch_size=self.batch_size)
        for i, text in zip(keep, texts, strict=True):
            results[i] = JudgeResult(requests[i].item_id, parse_score(text), text, name)
        return [r for r in results if r is not None]


class _RateLimiter:
    """At most ``per_minute`` request starts per minute, evenly spaced (thread-safe)."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class OpenAIJudge:
    """Judge with any OpenAI-compatible chat-completions endpoint (official ``openai`` client).

    Args:
        model: judge model; default ``$AXISLENS_JUDGE_MODEL``.
        base_url: endpoint; default ``$AXISLENS_JUDGE_BASE_URL``, then ``$OPENAI_BASE_URL``,
            then the client's default (api.openai.com).
        api_key: default ``$OPENAI_API_KEY`` (a placeholder is sent to keyless local servers
            when a ``base_url`` is set and no key is).
        concurrency: requests in flight at once (a thread pool).
        requests_per_minute: request starts per minute, evenly spaced (``None``: no limit).
        max_retries: retries per request on rate limits (429), timeouts and conflicts
            (408/409), server errors (5xx) and connection errors, with exponential backoff
            ``backoff * 2**attempt`` (capped at ``max_backoff``) plus up to 100% jitter, or the
            server's ``Retry-After`` when given. The client's own retries are disabled
            (``max_retries=0`` on the client) so that this policy is the only one.
        timeout: seconds per request.
        max_tokens: reply budget (the rubric asks for one digit). Sent as ``max_tokens`` at
            ``temperature=0``.

    Authentication, permission and unknown-model errors raise :class:`JudgeError` at once.
    Other failures (e.g. a 400 on one prompt, retries exhausted) give a result with ``error``.

    Example:
        >>> judge = OpenAIJudge("gpt-4.1-mini", concurrency=16, requests_per_minute=500)  # doctest: +SKIP
        >>> judge.score([JudgeRequest("x", "Reply with the digit 3.")])[0].score  # doctest: +SKIP
        3
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        requests_per_minute: float | None = None,
        max_retries: int = 5,
        timeout: float = 60.0,
        max_tokens: int = 8,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        import openai

        model = model or os.environ.get("AXISLENS_JUDGE_MODEL")
        if not model:
            raise JudgeError(
                "OpenAIJudge needs a model: pass model=... or set AXISLENS_JUDGE_MODEL"
            )
        if concurrency < 1 or max_retries < 0 or max_tokens < 1:
            raise ValueError(
                f"need concurrency >= 1, max_retries >= 0, max_tokens >= 1; got {concurrency}, "
                f"{max_retries}, {max_tokens}"
            )
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
        base_url = (
            base_url
            or os.environ.get("AXISLENS_JUDGE_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or None
        )
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise JudgeError(
                    "OpenAIJudge needs an API key: set OPENAI_API_KEY (or pass base_url=... "
                    "for a keyless local server)"
                )
            api_key = "not-needed"
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout
        )
        self._limiter = _RateLimiter(requests_per_minute)

    @property
    def name(self) -> str:
        return f"openai:{self.model}@{self._client.base_url}"

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.name!r}, concurrency={self.concurrency})"

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _delay(self, attempt: int, err: Exception) -> float:
        response = getattr(err, "response", None)
        after = response.headers.get("retry-after") if response is not None else None
        try:
            if after is not None:
                return min(max(float(after), 0.0), self.max_backoff)
        except ValueError:
            pass
        base = min(self.backoff * 2**attempt, self.max_backoff)
        return base * (1.0 + random.random())

    def _one(self, req: JudgeRequest) -> JudgeResult:
        import openai

        fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
        for attempt in range(self.max_retries + 1):
            self._limiter.wait()
            try:
                reply = self._client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": req.prompt}],
                    temperature=0,
                    max_tokens=self.max_tokens,
                )
            except fatal as err:
                raise JudgeError(f"judge {self.name}: {type(err).__name__}: {err}") from None
            except openai.APIError as err:
                status = getattr(err, "status_code", None) or 0
                retryable = isinstance(err, openai.APIConnectionError) or (
                    status in (408, 409, 429) or status >= 500
                )
                if not retryable or attempt == self.max_retries:
                    why = f"{type(err).__name__}: {err}"
                    if retryable:
                        why = f"gave up after {attempt + 1} attempts: {why}"
                    return JudgeResult(req.item_id, None, "", self.name, why)
                time.sleep(self._delay(attempt, err))
                continue
            text = (reply.choices[0].message.content or "") if reply.choices else ""
            return JudgeResult(req.item_id, parse_score(text), text, self.name)
        raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Judging a store
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JudgeSummary:
    """What :func:`judge_store` did. ``counts`` maps score (``None`` = unparseable) to items."""

    judge: str
    requested: int
    stored: int
    already: int
    errors: int
    counts: Mapping[int | None, int] = field(default_factory=dict)
    seconds: float = 0.0
    first_error: str | None = None

    @property
    def unparseable(self) -> int:
        return self.counts.get(None, 0)

    def __str__(self) -> str:
        hist = ", ".join(f"{k}: {self.counts.get(k, 0)}" for k in (0, 1, 2, 3))
        text = (
            f"judge {self.judge}: {self.stored} scored ({hist}, unparseable: {self.unparseable}), "
            f"{self.already} already scored, {self.errors} failed; {self.seconds:.1f} s"
        )
        return text + (f"\n  first failure: {self.first_error}" if self.first_error else "")


def _answered(record: Any) -> bool:
    """Has a non-empty final assistant message (a response to judge)."""
    msgs = record.messages
    return bool(msgs) and msgs[-1]["role"] == "assistant" and bool(msgs[-1]["content"].strip())


def _question(record: Any) -> str:
    for m in reversed(record.messages[:-1]):
        if m["role"] == "user":
            return str(m["content"])
    return ""


def _rubric(personas: Any, record: Any) -> str:
    question, answer = _question(record), record.response
    try:
        if record.kind == "role":
            return str(personas.rubric_for(record.role, question, answer))
        rubric = personas.trait(record.role).rubric
    except KeyError:
        raise JudgeError(
            f"item {record.id!r}: {record.kind} {record.role!r} is not in the persona catalogue "
            f"({personas.source})"
        ) from None
    if not rubric:
        raise JudgeError(f"item {record.id!r}: trait {record.role!r} has no rubric to judge with")
    return str(rubric.format(question=question, answer=answer))


def judge_requests(
    store: Any, personas: Any, *, kinds: Collection[str] = ("role",), rescore: bool = False
) -> list[JudgeRequest]:
    """Requests for the store's items of ``kinds`` that have a non-empty response and (unless
    ``rescore``) no stored score yet, in id order."""
    for kind in kinds:
        if kind == "default":
            raise ValueError(
                "default responses are never judged: the default vector uses all of them"
            )
        if kind not in JUDGEABLE_KINDS:
            raise ValueError(f"cannot judge items of kind {kind!r}; expected {JUDGEABLE_KINDS}")
    scored = set() if rescore else set(store.scores())
    out = []
    for rid, rec in sorted(store.records().items()):
        if rec.kind in kinds and rid not in scored and _answered(rec):
            out.append(JudgeRequest(rid, _rubric(personas, rec)))
    return out


def judge_store(
    store: Any,
    personas: Any,
    judge: Judge,
    *,
    kinds: Collection[str] = ("role",),
    chunk_size: int = 64,
    progress: bool = True,
) -> JudgeSummary:
    """Score the store's role responses that have no score yet; append each chunk atomically.

    Resumable: items with a stored score (including unparseable replies, stored as ``None``)
    are skipped; failed requests (``error`` set) are not stored and are retried next time.
    Default items are never judged. Rows written: ``{"id", "score", "raw", "judge"}``.

    Example:
        >>> s = judge_store(store, personas, KeepAll(), progress=False)  # doctest: +SKIP
        >>> s.counts  # doctest: +SKIP
        {3: 480}
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    t0 = time.perf_counter()
    kinds = tuple(kinds)
    todo = judge_requests(store, personas, kinds=kinds)
    total = sum(1 for r in store.records().values() if r.kind in kinds and _answered(r))
    counts: dict[int | None, int] = {}
    stored = errors = 0
    first_error: str | None = None
    name = str(getattr(judge, "name", type(judge).__name__))
    bar = tqdm(total=len(todo), desc="judge", unit="resp", disable=not progress)
    try:
        for k in range(0, len(todo), chunk_size):
            chunk = todo[k : k + chunk_size]
            results = judge.score(chunk)
            if [r.item_id for r in results] != [r.item_id for r in chunk]:
                raise JudgeError(f"judge {name} returned results out of order or incomplete")
            ok = [r for r in results if r.error is None]
            store.append_scores(
                {"id": r.item_id, "score": r.score, "raw": r.raw, "judge": r.judge} for r in ok
            )
            for r in ok:
                counts[r.score] = counts.get(r.score, 0) + 1
            failed = [r for r in results if r.error is not None]
            if failed and first_error is None:
                first_error = f"{failed[0].item_id}: {failed[0].error}"
            stored += len(ok)
            errors += len(failed)
            bar.update(len(chunk))
    finally:
        bar.close()
    return JudgeSummary(
        judge=name,
        requested=len(todo),
        stored=stored,
        already=total - len(todo),
        errors=errors,
        counts=counts,
        seconds=time.perf_counter() - t0,
        first_error=first_error,
    )
