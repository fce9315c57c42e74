"""An OpenAI-compatible chat server around one model, with an intervention on every request.

:func:`create_app` builds a FastAPI (ASGI) app; :func:`serve` runs it with uvicorn. Endpoints:

- ``POST /v1/chat/completions``: OpenAI chat completions, non-streaming and streaming (server-sent
  events in OpenAI's chunk format, ending with ``data: [DONE]``). The configured interventions
  (e.g. an activation cap) are attached for the whole generation of every request. Each
  response has an extra top-level field (on the last chunk when streaming)::

      "axislens": {"intervened": true, "interventions": ["Intervention(CapFloor(...)...)"],
                   "layers": [15],
                   "projection": {"15": 3.21},            # the new reply, mean over its tokens
                   "turns": [{"role": "user", "turn": 0, "message_index": 1,
                              "projection": {"15": 1.02}}, ...]}   # every message, new reply last

  Projections are ``h · v̂_l`` on the unit axis at the monitor layers, measured in one
  teacher-forced pass over the conversation plus the reply *with the interventions on*
  (:func:`axislens.monitoring.projection.project_conversation`); ``null`` without an axis.
  A request may switch the intervention off for itself with ``"axislens": {"intervene": false}``
  (for A/B comparisons on one server).
- ``GET /v1/models`` and ``GET /v1/models/{id}``; ``GET /health``.

Requests are validated with pydantic and :class:`ServeLimits` (body size, message count and
length, ``max_tokens`` bounds, context length, stop strings); errors are OpenAI-style JSON
``{"error": {"message", "type", "param", "code"}}`` with status 400 (invalid), 404 (unknown
model or route), 413 (body too large), 503 (queue full) or 500.

Concurrency: the model (and its hooks, which are global to the model) is only ever touched by
one worker thread; requests queue for it in arrival order, and the event loop never blocks, so
streams, health checks and errors are served while a generation runs. Generation is one request
at a time (no cross-request batching), so a greedy reply is exactly what the request would get
alone. Do not use the same model object elsewhere in the process while the server runs.

Example:
    >>> app = create_app(model, interventions=[cap_intervention(cap)], axis=cap.direction)  # doctest: +SKIP
    >>> serve(model, interventions=[...], axis=axis, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from pydantic import ValidationError

from axislens.directions import Direction
from axislens.model.decoding import SamplingConfig, _sample, stop_token_ids
from axislens.serving.api import (
    APIError,
    ChatCompletionRequest,
    ServeLimits,
    _chunk,
    _Job,
    _Outcome,
    _TextStream,
    _usage,
    _validation_error,
    parse_request,
)

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "Engine",
    "ServeLimits",
    "background_server",
    "create_app",
    "serve",
]

log = logging.getLogger("axislens.serving.engine")


class Engine:
    """Owns the model; every generation and projection runs on its single worker thread."""

    def __init__(
        self,
        model: Any,
        *,
        interventions: Sequence[Any] = (),
        axis: Direction | None = None,
        monitor_layers: Sequence[int] | None = None,
        name: str | None = None,
        limits: ServeLimits | None = None,
    ) -> None:
        from axislens.model.loading import model_provenance

        self.model = model
        self.interventions = tuple(interventions)
        self.limits = limits or ServeLimits()
        self.name = name or model_provenance(model).model_id
        self.axis = axis
        n_layers = int(model.cfg.n_layers)
        if axis is not None:
            axis.check_compatible(d_model=int(model.cfg.d_model), n_layers=n_layers)
            if monitor_layers is None:
                nonzero = [i for i, n in enumerate(axis.norms().tolist()) if n > 0]
                monitor_layers = nonzero[len(nonzero) // 2 : len(nonzero) // 2 + 1]
            for x in monitor_layers:
                if not -n_layers <= int(x) < n_layers:
                    raise ValueError(
                        f"monitor layer {x} out of range for a model with {n_layers} layers"
                    )
            layers = tuple(int(x) % n_layers for x in monitor_layers)
            for layer in layers:
                axis.unit(layer)  # raises on a zero row
            self.layers: tuple[int, ...] = layers
        else:
            self.layers = ()
        if self.interventions:
            from axislens.interventions.attach import intervene

            with intervene(model, *self.interventions):  # validate now, not at the first request
                pass
        self._stops = set(stop_token_ids(model.tokenizer))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axislens-model")
        self._lock = threading.Lock()
        self._pending = 0
        self._pending_lock = threading.Lock()

    # ---- scheduling

    async def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread; 503 when too many requests wait."""
        with self._pending_lock:
            if self._pending >= self.limits.max_queue:
                raise APIError(
                    503, "the server is busy; retry later", kind="server_error", code="overloaded"
                )
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._locked, fn, args)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _locked(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self._lock:
            return fn(*args)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Any]:
        """Hold the model: no request runs inside the block (yields the model). For in-process
        reference runs beside a live server (tests, benchmarks)."""
        with self._lock:
            yield self.model

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- work (model thread)

    def prepare(self, job: _Job) -> torch.Tensor:
        """Format the prompt; 400 when it does not fit in the context with ``max_tokens``."""
        from axislens.model.chat import ChatError, format_conversation

        try:
            conv = format_conversation(self.model, job.messages, add_generation_prompt=True)
        except ChatError as err:
            raise APIError(400, str(err), param="messages") from None
        n_ctx = int(self.model.cfg.n_ctx)
        if len(conv) + job.sampling.max_new_tokens > n_ctx:
            raise APIError(
                400,
                f"this model's context is {n_ctx} tokens; the messages take {len(conv)} and "
                f"max_tokens asks for {job.sampling.max_new_tokens} more",
                param="messages",
                code="context_length_exceeded",
            )
        return conv.input_ids

    def run(
        self,
        job: _Job,
        prompt: torch.Tensor,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> _Outcome:
        """Generate (with the interventions unless the job opts out), then project."""
        ivs = self.interventions if job.intervene else ()
        stream = _TextStream(self.model.tokenizer, job.stop)
        out = _Outcome(prompt_tokens=len(prompt))
        with self._applied(ivs, len(prompt)):
            for token in self._decode(prompt, job.sampling, job.seed):
                if token is None:
                    out.finish_reason = "stop"
                    break
                out.completion_tokens += 1
                piece = stream.push(token)
                if piece and on_text is not None:
                    on_text(piece)
                if stream.stopped:
                    out.finish_reason = "stop"
                    break
                if cancel is not None and cancel.is_set():
                    out.finish_reason = "cancelled"
                    break
            tail = stream.push(None)
            if tail and on_text is not None:
                on_text(tail)
            out.text = stream.text
            projection, turns = self._project(job.messages, out.text)
        out.axislens = {
            "intervened": bool(ivs),
            "interventions": [repr(iv) for iv in ivs],
            "layers": list(self.layers),
            "projection": projection,
            "turns": turns,
        }
        return out

    @contextlib.contextmanager
    def _applied(self, ivs: Sequence[Any], prompt_len: int) -> Iterator[None]:
        if not ivs:
            yield
            return
        from axislens.interventions.attach import intervene

        with intervene(self.model, *ivs, prompt_len=prompt_len):
            yield

    @torch.no_grad()
    def _decode(
        self, prompt: torch.Tensor, sampling: SamplingConfig, seed: int
    ) -> Iterator[int | None]:
        """One sequence through the bridge with a KV cache (hooks fire at every step), as
        :func:`axislens.generate_tokens` does; yields tokens, then ``None`` on a stop token."""
        from transformers import DynamicCache

        model = self.model
        device = model.cfg.device
        step = prompt[None].to(device)
        mask = torch.ones_like(step)
        position = torch.arange(len(prompt), device=device)[None]
        cache = DynamicCache(config=model.original_model.config)
        gens = [torch.Generator().manual_seed(seed)]
        for _ in range(sampling.max_new_tokens):
            logits = model(
                step,
                return_type="logits",
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
            )
            token = int(_sample(logits[:, -1, :], sampling, gens)[0])
            if token in self._stops:
                yield None
                return
            yield token
            step = torch.tensor([[token]], device=device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position[:, -1:] + 1

    def _project(
        self, messages: list[dict[str, str]], reply: str
    ) -> tuple[dict[str, float | None] | None, list[dict[str, Any]] | None]:
        if self.axis is None:
            return None, None
        from axislens.monitoring.projection import project_conversation

        full = [*messages, {"role": "assistant", "content": reply}] if reply.strip() else messages
        try:
            traj = project_conversation(self.model, self.axis, full, layers=list(self.layers))
        except ValueError as err:  # e.g. an empty message: monitoring never fails a request
            log.warning("no projection for this request: %s", err)
            return None, None
        items = sorted((*traj.user, *traj.assistant), key=lambda t: t.message_index)

        def as_map(values: Sequence[float]) -> dict[str, float | None]:
            return {
                str(layer): (None if math.isnan(v) else float(v))
                for layer, v in zip(self.layers, values, strict=True)
            }

        turns = [
            {
                "role": t.role,
                "turn": t.turn,
                "message_index": t.message_index,
                "projection": as_map(t.mean.tolist()),
            }
            for t in items
        ]
        last = traj.assistant[-1] if traj.assistant else None
        reply_index = len(messages)
        projection = (
            as_map(last.mean.tolist())
            if last is not None and last.message_index == reply_index
            else None
        )
        return projection, turns


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


async def _read_body(request: Any, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"the request body is larger than {limit} bytes", code="too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is larger than {limit} bytes", code="too_large")
    return bytes(body)


def create_app(
    model: Any,
    *,
    interventions: Sequence[Any] = (),
    axis: Direction | None = None,
    monitor_layers: Sequence[int] | None = None,
    name: str | None = None,
    limits: ServeLimits | None = None,
) -> Any:
    """The FastAPI app serving ``model`` with ``interventions`` on every request.

    Args:
        interventions: :class:`~axislens.interventions.attach.Intervention` values applied to every request
            (validated against the model now).
        axis: direction for the ``axislens.projection`` field (``None``: no projections).
        monitor_layers: layers to project at (default: the middle non-zero layer of ``axis``).
        name: model id clients must send (default: the model's provenance id).
        limits: request limits (:class:`ServeLimits`).

    Example:
        >>> app = create_app(axislens.tiny_model(), name="tiny")  # doctest: +SKIP
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    engine = Engine(
        model,
        interventions=interventions,
        axis=axis,
        monitor_layers=monitor_layers,
        name=name,
        limits=limits,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="axislens", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    started = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        api = APIError(err.status_code, str(err.detail), code=str(err.status_code))
        return JSONResponse(api.body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error")
        api = APIError(500, f"internal error: {type(err).__name__}", kind="server_error")
        return JSONResponse(api.body(), status_code=500)

    def model_card() -> dict[str, Any]:
        return {"id": engine.name, "object": "model", "created": started, "owned_by": "axislens"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> dict[str, Any]:
        if model_id != engine.name:
            raise APIError(
                404, f"the model {model_id!r} does not exist", param="model", code="model_not_found"
            )
        return model_card()

    async def chat_completions(request: Request) -> Any:
        body = await _read_body(request, engine.limits.max_body_bytes)
        try:
            req = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as err:
            raise _validation_error(err) from None
        job = parse_request(req, engine.name, engine.limits)
        prompt = await engine.submit(engine.prepare, job)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            out: _Outcome = await engine.submit(engine.run, job, prompt)
            reply = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": engine.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": out.text},
                        "logprobs": None,
                        "finish_reason": out.finish_reason,
                    }
                ],
                "usage": _usage(out),
                "axislens": out.axislens,
            }
            return JSONResponse(reply)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _stream(engine, job, prompt, cid, created, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # A plain (Starlette) route: the handler reads and validates the body itself, so that size
    # limits and errors are ours, and FastAPI does not introspect its (lazily imported) types.
    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    return app


async def _stream(
    engine: Engine, job: _Job, prompt: torch.Tensor, cid: str, created: int, include_usage: bool
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    cancel = threading.Event()

    def on_text(piece: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    async def work() -> _Outcome:
        try:
            result: _Outcome = await engine.submit(engine.run, job, prompt, on_text, cancel)
            return result
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(work())
    name = engine.name
    try:
        yield _chunk(cid, created, name, {"role": "assistant", "content": ""})
        while (piece := await queue.get()) is not None:
            yield _chunk(cid, created, name, {"content": piece})
        try:
            out = await task
        except APIError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        final = json.loads(_chunk(cid, created, name, {})[6:])
        final["choices"][0]["finish_reason"] = out.finish_reason
        final["axislens"] = out.axislens
        yield f"data: {json.dumps(final)}\n\n"
        if include_usage:
            usage = {**final, "choices": [], "usage": _usage(out)}
            usage.pop("axislens")
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that went away stops the generation at the next token


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def serve(
    model: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Serve ``model`` with uvicorn until interrupted (``app_kwargs`` go to :func:`create_app`)."""
    import uvicorn

    uvicorn.run(create_app(model, **app_kwargs), host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yields the base URL (``http://host:port/v1``).

    ``port=0`` picks a free port. The server is shut down when the block exits. For tests and
    benchmarks.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
