"""Judges: score role responses 0-3 (role adherence) and trait responses 0-100 (trait expression).

A judge is anything with ``score(requests) -> results`` (:class:`Judge`). Three ship:

- :class:`OpenAIJudge`: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server,
  ...) through the official ``openai`` client, with a concurrency limit, a rate limit and
  retries (the client's own, with exponential backoff);
- :class:`ModelJudge`: a local TransformerLens bridge model answering the rubric greedily;
- :class:`KeepAll`: no judging; every response scores 3, so role vectors use every response.

Each item kind has its own scale (:func:`scale_for`): role items are scored on
:data:`ROLE_SCALE` (0-3, the role rubric), trait items on :data:`TRAIT_SCALE` (0-100, plus
``REFUSAL``, as the public trait rubrics ask; "3" there means the trait is nearly absent).
Replies are read by one of two presets (:class:`Strict`, the default, and :class:`PaperPreset`):

- ``Strict()``: greedy (temperature 0); the reply must *start* with the score
  (``"Score: 2"`` is accepted); anything else is stored with ``score=None`` and the raw text,
  never guessed, and not retried.
- ``PaperPreset()``: as the public pipeline: temperature 1, 10 reply tokens, the *first integer
  anywhere* in the reply (``REFUSAL`` anywhere for traits); a reply without a usable integer is
  left *unscored* (not stored), so a resumed run asks again.

``REFUSAL`` is stored as ``score=None`` with ``refusal: true``: a verdict, not retried, and never
kept by a score filter. :func:`judge_store` judges the role responses of an
:class:`~axislens.store.ActivationStore` and appends the scores, resumably. Default responses
are never judged: the paper's default vector is the mean of *all* default responses.

Example:
    >>> parse_score("Score: 2"), parse_score("3"), parse_score("I think 3")
    (2, 3, None)
    >>> parse_reply("85", TRAIT_SCALE, Strict()), parse_reply("I'd say 85.", TRAIT_SCALE, PaperPreset())
    (85, 85)
    >>> KeepAll().score([JudgeRequest("role/ghost/p0/q1", "...")])[0].score
    3

    Needs an OpenAI-compatible judge endpoint (not run by the doctest suite).

    >>> judge_store(store, personas, OpenAIJudge("gpt-4.1-mini"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from axislens.extras import require
from axislens.model.protocol import Model

__all__ = [
    "REFUSED",
    "ROLE_SCALE",
    "TRAIT_SCALE",
    "Judge",
    "JudgeChoice",
    "JudgeError",
    "JudgeRequest",
    "JudgeResult",
    "JudgeSummary",
    "KeepAll",
    "ModelJudge",
    "OpenAIJudge",
    "PaperPreset",
    "Preset",
    "Scale",
    "Strict",
    "judge_for",
    "judge_requests",
    "judge_store",
    "parse_reply",
    "parse_score",
    "scale_for",
]

JUDGEABLE_KINDS = ("role", "trait_pos", "trait_neg")
"""Item kinds that have a rubric. ``default`` items are never judged (never filtered)."""


class JudgeError(ValueError):
    """A judge cannot run at all (bad configuration, authentication, unknown model...)."""


ItemKindJudged = Literal["role", "trait_pos", "trait_neg"]


@dataclass(frozen=True, slots=True)
class Scale:
    """A judge's score range: integers ``lo..hi``; ``refusal`` allows the word ``REFUSAL``."""

    name: str
    lo: int
    hi: int
    refusal: bool = False


ROLE_SCALE = Scale("role 0-3", 0, 3)
"""Role adherence: 0 refuses the role ... 3 fully in role (the role rubric)."""
TRAIT_SCALE = Scale("trait 0-100", 0, 100, refusal=True)
"""Trait expression, as the public trait rubrics: 0 absent ... 100 strongly present, or REFUSAL."""


def scale_for(kind: str) -> Scale:
    """The scale of an item kind: roles 0-3, traits 0-100 (+ REFUSAL)."""
    if kind == "role":
        return ROLE_SCALE
    if kind in ("trait_pos", "trait_neg"):
        return TRAIT_SCALE
    raise ValueError(f"items of kind {kind!r} have no judge scale; expected {JUDGEABLE_KINDS}")


@dataclass(frozen=True, slots=True)
class Strict:
    """axislens' default preset: greedy, short reply, the reply must start with the score;
    unparsed replies are stored as ``score=None`` (not retried)."""

    temperature: float = 0.0
    max_tokens: int | None = None  # the judge's own default (8 tokens OpenAI, 4 model)
    name: str = "strict"


@dataclass(frozen=True, slots=True)
class PaperPreset:
    """The public pipeline's judge settings: temperature 1, 10 reply tokens, the first integer
    anywhere in the reply; replies without one are left unscored so a resume retries them."""

    temperature: float = 1.0
    max_tokens: int | None = 10
    name: str = "paper"


Preset = Strict | PaperPreset

REFUSED = -1
"""Marker returned by :func:`parse_reply` for a ``REFUSAL`` verdict (stored as ``None``)."""


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """One response to score: its store item id, the filled rubric prompt and the item kind
    (which sets the scale: :func:`scale_for`)."""

    item_id: str
    prompt: str
    kind: ItemKindJudged = "role"

    @property
    def scale(self) -> Scale:
        return scale_for(self.kind)


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """A judge's verdict on one item.

    ``score`` is on the request's scale (0-3 roles, 0-100 traits), or ``None`` when the reply
    could not be parsed or is a ``REFUSAL`` (``refusal=True``; ``raw`` holds the reply) or the
    request failed (then ``error`` says why; :func:`judge_store` does not store failed
    results, so a later run retries them). ``judge`` describes who scored, e.g.
    ``"openai:gpt-4.1-mini@https://api.openai.com/v1/"``, ``"model:<model id>"``, ``"keep_all"``.
    """

    item_id: str
    score: int | None
    raw: str
    judge: str
    error: str | None = None
    refusal: bool = False


@runtime_checkable
class Judge(Protocol):
    """Scores each request on its scale; returns one result per request, in request order."""

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


_TRAIT_SCORE = re.compile(
    r"^[^\w\-]*(?:(?:score|rating)[^\w\-]*(?:is[^\w\-]*)?)?(?<![\d.])(\d{1,3})(?![\d]|[.,/\-]\d)",
    re.IGNORECASE,
)
_REFUSAL_START = re.compile(r"^[^\w\-]*refusal\b", re.IGNORECASE)
_FIRST_INT = re.compile(r"\d+")


def parse_reply(text: str, scale: Scale, preset: Preset | None = None) -> int | None:
    """Read a judge reply on ``scale`` with ``preset`` (default :class:`Strict`).

    Returns the score, :data:`REFUSED` for a ``REFUSAL`` verdict (traits only), or ``None``
    when nothing usable is found (also for integers outside the scale).

    >>> parse_reply("85", TRAIT_SCALE), parse_reply("3", TRAIT_SCALE), parse_reply("85", ROLE_SCALE)
    (85, 3, None)
    >>> parse_reply("REFUSAL", TRAIT_SCALE) == REFUSED, parse_reply("101", TRAIT_SCALE)
    (True, None)
    >>> parse_reply("I would give it 2/3", ROLE_SCALE, PaperPreset())
    2
    """
    body = _THINK.sub("", text)
    if isinstance(preset, PaperPreset):
        if scale.refusal and "REFUSAL" in body.upper():
            return REFUSED
        m = _FIRST_INT.search(body)
        value = int(m.group(0)) if m else None
    elif preset is None or isinstance(preset, Strict):
        if scale == ROLE_SCALE:
            return parse_score(body)
        if scale.refusal and _REFUSAL_START.match(body):
            return REFUSED
        m = _TRAIT_SCORE.match(body)
        value = int(m.group(1)) if m else None
    else:
        raise TypeError(f"preset must be Strict() or PaperPreset(), got {preset!r}")
    return value if value is not None and scale.lo <= value <= scale.hi else None


def _result(req: JudgeRequest, text: str, name: str, preset: Preset | None) -> JudgeResult:
    """Parse ``text`` for ``req``; under the paper preset an unparsed reply becomes a failed
    result (not stored: a resume asks again)."""
    value = parse_reply(text, req.scale, preset)
    if value == REFUSED:
        return JudgeResult(req.item_id, None, text, name, refusal=True)
    if value is None and isinstance(preset, PaperPreset):
        why = (
            f"no integer {req.scale.lo}-{req.scale.hi} in the reply {text[:40]!r} "
            "(paper preset: left for a retry)"
        )
        return JudgeResult(req.item_id, None, text, name, error=why)
    return JudgeResult(req.item_id, value, text, name)


def parse_score(text: str) -> int | None:
    r"""The score 0-3 a judge reply starts with, else ``None`` (never guessed).

    Accepted: ``"3"``, ``" 2."``, ``"**1**"``, ``"Score: 2"``, ``"score = 0"``, ``"2\n(reason)"``;
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


_KEEP = {"role": 3, "trait_pos": 100, "trait_neg": 0}


@dataclass(frozen=True, slots=True)
class KeepAll:
    """No judging: every response gets the score every filter keeps (roles 3, positive trait
    items 100, negative trait items 0; raw ``"keep-all"``, judge ``"keep_all"``).

    Role and trait vectors then average *every* response, as with an unfiltered run; the stored
    judge name keeps that visible in the provenance of any analysis built on the scores.
    """

    name: str = "keep_all"

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        return [JudgeResult(r.item_id, _KEEP[r.kind], "keep-all", self.name) for r in requests]


@dataclass(frozen=True, slots=True)
class ModelJudge:
    """A local bridge model answers each rubric prompt (as a user message), greedily.

    Prompts longer than the model's context are not sent: their result has ``error`` set.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> judge = ModelJudge(axislens.load_model("Qwen/Qwen3-32B", device="cuda"))  # doctest: +SKIP
    """

    model: Model
    max_new_tokens: int = 4
    batch_size: int = 8
    preset: Preset = field(default_factory=Strict)
    seed: int = 0

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
        budget = self.preset.max_tokens or self.max_new_tokens
        limit = int(self.model.cfg.n_ctx) - budget
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
        sampling = SamplingConfig(
            max_new_tokens=budget, temperature=self.preset.temperature, seed=self.seed
        )
        keys = [requests[i].item_id for i in keep]
        texts = generate_text(self.model, convs, sampling, keys=keys, batch_size=self.batch_size)
        for i, text in zip(keep, texts, strict=True):
            results[i] = _result(requests[i], text, name, self.preset)
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
        max_retries: the ``openai`` client's own retries per request on rate limits (429),
            timeouts and conflicts (408/409), server errors (5xx) and connection errors, with
            the client's exponential backoff and jitter, or the server's ``Retry-After``. The
            rate limiter (``requests_per_minute``) is the only retry-related code of ours.
        timeout: seconds per request.
        max_tokens: reply budget (the rubric asks for one number). Sent as ``max_tokens`` at the
            preset's temperature; a preset with its own budget (``PaperPreset``: 10) overrides it.
        preset: :class:`Strict` (default: temperature 0, the reply starts with the score) or
            :class:`PaperPreset` (temperature 1, 10 tokens, first integer anywhere; unparsed
            replies are left for a retry).

    Authentication, permission and unknown-model errors raise :class:`JudgeError` at once.
    Other failures (e.g. a 400 on one prompt, retries exhausted) give a result with ``error``.

    Example:
        Needs an OpenAI-compatible judge endpoint (not run by the doctest suite).

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
        preset: Preset | None = None,
    ) -> None:
        openai = require("openai", "judge", "the OpenAI-compatible judge")

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
        self.preset: Preset = preset if preset is not None else Strict()
        if not isinstance(self.preset, (Strict, PaperPreset)):
            raise TypeError(f"preset must be Strict() or PaperPreset(), got {preset!r}")
        max_tokens = self.preset.max_tokens or max_tokens
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout
        )
        self._limiter = _RateLimiter(requests_per_minute)

    @property
    def name(self) -> str:
        from axislens.collection.engines import redact_url

        return f"openai:{self.model}@{redact_url(str(self._client.base_url))}"

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.name!r}, concurrency={self.concurrency})"

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, req: JudgeRequest) -> JudgeResult:
        openai = require("openai", "judge", "the OpenAI-compatible judge")

        fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
        self._limiter.wait()
        try:
            reply = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": req.prompt}],
                temperature=self.preset.temperature,
                max_tokens=self.max_tokens,
            )
        except fatal as err:
            raise JudgeError(f"judge {self.name}: {type(err).__name__}: {err}") from None
        except openai.APIError as err:
            status = getattr(err, "status_code", None) or 0
            retried = isinstance(err, openai.APIConnectionError) or (
                status in (408, 409, 429) or status >= 500
            )
            why = f"{type(err).__name__}: {err}"
            if retried:  # the client retried these max_retries times
                why = f"gave up after {self.max_retries + 1} attempts: {why}"
            return JudgeResult(req.item_id, None, "", self.name, why)
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        return _result(req, text, self.name, self.preset)


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
        keys = sorted(k for k in self.counts if k is not None)
        hist = ", ".join(f"{k}: {self.counts[k]}" for k in keys) or "none"
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
            out.append(JudgeRequest(rid, _rubric(personas, rec), rec.kind))
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
    """Score the store's (an :class:`~axislens.store.ActivationStore` or its folder) responses
    of ``kinds`` (role by default; ``("trait_pos",
    "trait_neg")`` for trait items, on the 0-100 scale) that have no score yet; append each
    chunk atomically.

    Resumable: items with a stored score (including unparseable replies under the strict
    preset and REFUSAL verdicts, stored as ``None``) are skipped; failed requests (``error``
    set, which includes unparsed replies under the paper preset) are not stored and are retried
    next time. Default items are never judged. Rows written: ``{"id", "score", "raw", "judge"}``
    (plus ``"refusal": true`` for a REFUSAL).

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> s = judge_store(store, personas, KeepAll(), progress=False)  # doctest: +SKIP
        >>> s.counts  # doctest: +SKIP
        {3: 480}
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(store, (str, os.PathLike)):  # a store folder, as collect() takes
        from axislens.store import ActivationStore

        store = ActivationStore.open(store)
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
                {
                    "id": r.item_id,
                    "score": r.score,
                    "raw": r.raw,
                    "judge": r.judge,
                    **({"refusal": True} if r.refusal else {}),
                }
                for r in ok
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


# --------------------------------------------------------------------------- choosing a judge

JudgeChoice = Literal["none", "keep_all", "model", "openai"]
"""The judges a job can name (``--judge`` on ``axislens collect`` and ``axislens demo``):

- ``"none"``: no judge runs and no scores are stored (a later run, or another judge, can score
  the store; analyses read unscored responses as unfiltered);
- ``"keep_all"``: :class:`KeepAll` stores the score every filter keeps, so the provenance of
  any analysis says that nothing was filtered;
- ``"model"``: :class:`ModelJudge`, the local model judging its own answers (greedy);
- ``"openai"``: :class:`OpenAIJudge` configured from the environment, as in the paper.
"""


def judge_for(
    choice: JudgeChoice | Judge, model: Any = None, *, batch_size: int = 8
) -> Judge | None:
    """The judge a job runs for ``choice`` (``None`` for ``"none"``); a judge object passes
    through unchanged.

    Example:
        >>> judge_for("keep_all").name
        'keep_all'
        >>> judge_for("none") is None
        True
    """
    if not isinstance(choice, str):
        return choice
    if choice not in get_args(JudgeChoice):
        raise ValueError(
            f"unknown judge {choice!r}; expected one of {', '.join(get_args(JudgeChoice))}"
        )
    if choice == "none":
        return None
    if choice == "keep_all":
        return KeepAll()
    if choice == "model":
        if model is None:
            raise ValueError("judge 'model' needs the loaded model")
        return ModelJudge(model, batch_size=batch_size)
    return OpenAIJudge()
