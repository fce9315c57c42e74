"""Dynamic batching for the server: one worker thread owns the model and decodes waiting requests
together, dropping the ones whose client went away.

A request becomes a :class:`Ticket` (its job, a cancel flag, two futures: *admitted* once the
prompt is formatted and fits, *done* with the outcome). The worker thread of
:class:`BatchScheduler` loops:

1. wait for a ticket, then gather more for a moment (``ServeLimits.batch_wait_s``, extended while
   requests keep arriving, up to ``ServeLimits.max_batch``);
2. group the gathered tickets by what must be shared in one forward: the intervention switch
   (hooks are global to the model) and the sampling temperature and top-p (each row keeps its
   own seed, so a sampled reply does not depend on its batch-mates);
3. per group: format the prompts, then decode them together with
   :func:`axislens.model.decoding.decode_steps` under the group's interventions, pushing each
   step's text to each ticket (streams) and dropping rows (:meth:`Decoder.drop`) that reached
   their own ``max_tokens`` or a stop string, or whose client disconnected;
4. per finished ticket: the teacher-forced projection pass (skipped for cancelled tickets), then
   resolve its future.

A cancelled ticket costs nothing more after the current decode step: it is skipped before
formatting, before prefill, at every step and before its projection. New requests join at the
next batch (not mid-flight).

Example:
    Needs a real model (not run by the doctest suite).

    >>> sched = BatchScheduler(engine, limits)  # doctest: +SKIP
    >>> ticket = sched.submit(job)  # doctest: +SKIP
    >>> ticket.done.result().text  # doctest: +SKIP
    'Hello!'
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from axislens.model.decoding import SamplingConfig, decode_steps
from axislens.model.protocol import Model
from axislens.serving.api import APIError, ServeLimits, _Job, _Outcome, _TextStream

__all__ = ["BatchScheduler", "Ticket"]

log = logging.getLogger("axislens.serving.scheduler")


class _Worker(Protocol):
    """What the scheduler needs from :class:`axislens.serving.engine.Engine`."""

    model: Model
    interventions: tuple[Any, ...]

    @property
    def projects(self) -> bool:
        """Whether annotate runs a forward pass (else it is free: rows finish at once)."""
        ...

    def prepare(self, job: _Job) -> torch.Tensor: ...

    def applied(self, ivs: Sequence[Any], prompt_len: int | None = None) -> Any: ...

    def annotate(
        self, job: _Job, out: _Outcome, prompt_len: int, cancelled: Callable[[], bool]
    ) -> None: ...


@dataclass(eq=False)
class Ticket:
    """One request in the scheduler. ``on_text`` (called on the worker thread) receives the
    reply's final text as it is produced; :meth:`cancel` stops it at the next decode step."""

    job: _Job
    on_text: Callable[[str], None] | None = None
    admitted: Future[int] = field(default_factory=Future)
    done: Future[_Outcome] = field(default_factory=Future)
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _fail(self, err: BaseException) -> None:
        for fut in (self.admitted, self.done):
            with contextlib.suppress(InvalidStateError):  # already set, or its waiter gave up
                fut.set_exception(err)

    def _finish(self, out: _Outcome) -> None:
        self._admit(out.prompt_tokens)
        with contextlib.suppress(InvalidStateError):
            self.done.set_result(out)

    def _admit(self, prompt_tokens: int) -> None:
        with contextlib.suppress(InvalidStateError):
            self.admitted.set_result(prompt_tokens)


def _cancelled_outcome() -> _Outcome:
    return _Outcome(finish_reason="cancelled")


@dataclass(eq=False)
class _Row:
    """A ticket being decoded: its prompt, text stream and outcome so far."""

    ticket: Ticket
    prompt: torch.Tensor
    stream: _TextStream
    out: _Outcome
    live: bool = True

    def emit(self, piece: str) -> None:
        if piece and self.ticket.on_text is not None:
            self.ticket.on_text(piece)


class BatchScheduler:
    """The worker thread and its queue (see the module docstring)."""

    def __init__(self, engine: _Worker, limits: ServeLimits, stops: Sequence[int]) -> None:
        self.engine = engine
        self.limits = limits
        self.stops = frozenset(int(s) for s in stops)
        self._queue: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.lock = threading.Lock()  # held while the worker touches the model
        self._thread = threading.Thread(target=self._loop, name="axislens-model", daemon=True)
        self._thread.start()

    # ---- event-loop side

    def submit(self, job: _Job, on_text: Callable[[str], None] | None = None) -> Ticket:
        """Queue a job; 503 when ``max_queue`` requests already wait."""
        ticket = Ticket(job, on_text)
        with self._cond:
            if self._closed:
                raise APIError(503, "the server is shutting down", kind="server_error")
            waiting = sum(not t.cancelled for t in self._queue)
            if waiting >= self.limits.max_queue:
                raise APIError(
                    503, "the server is busy; retry later", kind="server_error", code="overloaded"
                )
            self._queue.append(ticket)
            self._cond.notify()
        return ticket

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for t in pending:
            t._fail(APIError(503, "the server is shutting down", kind="server_error"))

    # ---- worker side

    def _gather(self) -> list[Ticket] | None:
        """Wait for a ticket, then for more while they keep arriving; ``None`` once closed."""
        wait = self.limits.batch_wait_s
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            start = time.monotonic()
            deadline = start + wait
            seen = len(self._queue)
            while len(self._queue) < self.limits.max_batch and not self._closed:
                now = time.monotonic()
                if now >= deadline:
                    break
                self._cond.wait(deadline - now)
                if len(self._queue) > seen:  # still arriving: wait a little longer (bounded)
                    seen = len(self._queue)
                    deadline = min(time.monotonic() + wait, start + 4 * wait)
            taken = [
                self._queue.popleft() for _ in range(min(len(self._queue), self.limits.max_batch))
            ]
        out = []
        for t in taken:
            if t.cancelled:
                t._finish(_cancelled_outcome())
            else:
                out.append(t)
        return out

    def _loop(self) -> None:
        while (tickets := self._gather()) is not None:
            groups: dict[tuple[Any, ...], list[Ticket]] = {}
            for t in tickets:
                groups.setdefault(_group_key(t.job), []).append(t)
            for group in groups.values():
                with self.lock:
                    try:
                        self._run_group(group)
                    except Exception as err:  # never kill the worker: fail this group's requests
                        log.exception("generation failed")
                        for t in group:
                            t._fail(err)

    def _run_group(self, tickets: list[Ticket]) -> None:
        engine = self.engine
        rows: list[_Row] = []
        for t in tickets:
            if t.cancelled:
                t._finish(_cancelled_outcome())
                continue
            try:
                prompt = engine.prepare(t.job)
            except APIError as err:
                t._fail(err)
                continue
            rows.append(
                _Row(
                    t,
                    prompt,
                    _TextStream(engine.model.tokenizer, t.job.stop),
                    _Outcome(prompt_tokens=len(prompt)),
                )
            )
            t._admit(len(prompt))
        rows = [r for r in rows if not self._dropped_if_cancelled(r)]
        if not rows:
            return
        job = rows[0].ticket.job
        ivs = engine.interventions if job.intervene else ()
        sampling = SamplingConfig(
            max_new_tokens=max(r.ticket.job.sampling.max_new_tokens for r in rows),
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p,
        )
        with engine.applied(ivs):
            decoder = decode_steps(
                engine.model,
                [r.prompt for r in rows],
                sampling,
                seeds=[r.ticket.job.seed for r in rows],
                stops=sorted(self.stops),
            )
            for step in decoder:
                drop: list[int] = []
                for j, k in enumerate(step.rows):
                    row = rows[k]
                    if not row.live:
                        continue
                    if self._advance(row, int(step.tokens[j]), bool(step.finished[j])):
                        row.live = False
                        if not bool(step.finished[j]):
                            drop.append(k)
                        if not engine.projects:
                            self._resolve(row)
                for k, row in enumerate(rows):
                    if row.live and row.ticket.cancelled:
                        row.live = False
                        row.out.finish_reason = "cancelled"
                        drop.append(k)
                if not any(r.live for r in rows):
                    break
                if drop:
                    decoder.drop(drop)
        for row in rows:
            if row.live:  # the decoder ended without reporting it finished: out of tokens
                row.live = False
                self._close_stream(row)
        for row in rows:
            self._resolve(row)

    def _resolve(self, row: _Row) -> None:
        """Annotate (the projection pass, unless cancelled) and answer a finished row."""
        if row.ticket.done.done():
            return
        if row.ticket.cancelled:
            row.ticket._finish(_cancelled_outcome())
            return
        job = row.ticket.job
        self.engine.annotate(job, row.out, len(row.prompt), lambda: row.ticket.cancelled)
        row.ticket._finish(row.out)

    def _dropped_if_cancelled(self, row: _Row) -> bool:
        if row.ticket.cancelled:
            row.ticket._finish(_cancelled_outcome())
            return True
        return False

    def _advance(self, row: _Row, token: int, finished: bool) -> bool:
        """Add one sampled token to a row; True when the row is finished."""
        job = row.ticket.job
        if finished and token in self.stops:
            row.out.finish_reason = "stop"
            self._close_stream(row)
            return True
        row.out.completion_tokens += 1
        row.emit(row.stream.push(token))
        if row.stream.stopped:
            row.out.finish_reason = "stop"
        elif row.out.completion_tokens >= job.sampling.max_new_tokens or finished:
            row.out.finish_reason = "length"
        else:
            return False
        self._close_stream(row)
        return True

    @staticmethod
    def _close_stream(row: _Row) -> None:
        row.emit(row.stream.push(None))
        row.out.text = row.stream.text


def _group_key(job: _Job) -> tuple[Any, ...]:
    s = job.sampling
    return (job.intervene, s.temperature, None if s.greedy else s.top_p)
