"""An OpenAI-compatible chat server around one model, with an intervention on every request.

:func:`create_app` builds a FastAPI (ASGI) app; :func:`serve` runs it with uvicorn. Endpoints:

- ``POST /v1/chat/completions``: OpenAI chat completions, non-streaming and streaming (server-sent
  events in OpenAI's chunk format, ending with ``data: [DONE]``; a stream that fails mid-way
  sends an OpenAI error object as its last event, then ``data: [DONE]``). The configured
  interventions (e.g. an activation cap) are attached for the whole generation of every
  request. Each response has an extra top-level field (on the last chunk when streaming)::

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

The model is served under ``name`` (default: the model's id; a local folder's name, never its
path). Requests are validated with pydantic and :class:`ServeLimits` (body size, message count
and length, ``max_tokens`` bounds, context length, stop strings); errors are OpenAI-style JSON
``{"error": {"message", "type", "param", "code"}}`` with status 400 (invalid, or a ``Host``
header not in ``allowed_hosts``), 401 (missing or wrong API key), 404 (unknown model or route),
413 (body too large), 415 (a body that is not ``application/json``), 503 (queue full) or 500.
Message text is tokenized as plain text: it cannot forge the template's control tokens
(:func:`axislens.model.chat.format_conversation`).

Security: ``api_key`` turns on Bearer authentication (OpenAI style; ``/health`` stays open) and
:func:`serve` refuses to listen beyond loopback without one. ``allowed_hosts`` (Starlette's
``TrustedHostMiddleware``; default the loopback names) rejects requests whose ``Host`` header
names another host, so a web page cannot reach a loopback server through DNS rebinding, and a
cross-site form post (``text/plain``) is refused with 415.

Concurrency: the model (and its hooks, which are global to the model) is only ever touched by
one worker thread (:mod:`axislens.serving.scheduler`). Concurrent requests are batched: the
worker gathers waiting requests, groups those that can share a forward (same intervention
switch, temperature and top-p; every row keeps its own seed) and decodes each group together
with :func:`axislens.model.decoding.decode_steps`; requests that arrive meanwhile join the next
batch. A client that disconnects (streaming or not) stops costing compute within one decode
step: its row is dropped from the batch, and a request not yet started, or not yet projected,
is skipped. The event loop never blocks, so streams, health checks and errors are served while a
batch runs. A greedy reply equals the in-process greedy generation up to float rounding between
padded and unpadded forwards. Do not use the same model object elsewhere in the process while
the server runs (:meth:`Engine.exclusive` holds the worker for in-process reference runs).

Example:
    Needs a real model (not run by the doctest suite).

    >>> app = create_app(model, interventions=[cap_intervention(cap)], axis=cap.direction)  # doctest: +SKIP
    >>> serve(model, interventions=[...], axis=axis, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from axislens.directions import Direction
from axislens.extras import require
from axislens.model.decoding import stop_token_ids
from axislens.model.protocol import Model
from axislens.serving.api import (
    APIError,
    ChatCompletionRequest,
    ServeLimits,
    _chunk,
    _Job,
    _Outcome,
    _usage,
    _validation_error,
    parse_request,
)
from axislens.serving.scheduler import BatchScheduler, Ticket

__all__ = [
    "LOOPBACK_HOSTS",
    "APIError",
    "ChatCompletionRequest",
    "Engine",
    "ServeLimits",
    "background_server",
    "create_app",
    "is_loopback",
    "serve",
    "served_name",
]

log = logging.getLogger("axislens.serving.engine")

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
"""``Host`` header names accepted by default (the port is ignored)."""


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port; IPv6 literals unbracketed.

    >>> host_name("[::1]:8000"), host_name("Example.org:80"), host_name("127.0.0.1")
    ('::1', 'example.org', '127.0.0.1')
    """
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HostCheck:
    """ASGI middleware: requests whose ``Host`` is not in ``allowed`` (names; ``*`` any,
    ``*.example.org`` its subdomains) get a 400 in the OpenAI error shape. Unlike Starlette's
    ``TrustedHostMiddleware`` it reads bracketed IPv6 hosts (``[::1]:8000``)."""

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = [a.strip().lower() for a in allowed]
        self.any = "*" in self.allowed

    def ok(self, name: str) -> bool:
        return self.any or any(
            name == a or (a.startswith("*.") and name.endswith(a[1:])) for a in self.allowed
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
        name = host_name(raw)
        if self.ok(name):
            await self.app(scope, receive, send)
            return
        from fastapi.responses import JSONResponse

        message = f"Host header {raw!r} is not allowed (allowed: {', '.join(self.allowed)})"
        body = APIError(400, message, param="Host", code="invalid_host").body()
        await JSONResponse(body, status_code=400)(scope, receive, send)


def served_name(model: Model) -> str:
    """The default model id a server answers to: the model's provenance id, or a local folder's
    name (never its absolute path).

    Example:
        >>> served_name(model)  # the tiny llama the examples run on
        'axislens-tiny-llama-4x64-seed0'
    """
    from axislens.model.loading import model_provenance

    prov = model_provenance(model)
    return Path(prov.model_id).name if prov.source == "local" else prov.model_id


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Engine:
    """Owns the model: formatting, batched generation and projections all run on the worker
    thread of its :class:`~axislens.serving.scheduler.BatchScheduler`."""

    def __init__(
        self,
        model: Model,
        *,
        interventions: Sequence[Any] = (),
        axis: Direction | None = None,
        monitor_layers: Sequence[int] | None = None,
        name: str | None = None,
        limits: ServeLimits | None = None,
    ) -> None:
        self.model = model
        self.interventions = tuple(interventions)
        self.limits = limits or ServeLimits()
        self.name = name or served_name(model)
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
        self.scheduler = BatchScheduler(self, self.limits, stop_token_ids(model.tokenizer))

    @property
    def projects(self) -> bool:
        """Whether finished requests need a projection pass (an axis was given)."""
        return self.axis is not None

    # ---- event-loop side

    def submit(self, job: _Job, on_text: Callable[[str], None] | None = None) -> Ticket:
        """Queue ``job`` for the worker (503 when the queue is full); see :class:`Ticket`."""
        return self.scheduler.submit(job, on_text)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Model]:
        """Hold the model: no batch runs inside the block (yields the model). For in-process
        reference runs beside a live server (tests, benchmarks)."""
        with self.scheduler.lock:
            yield self.model

    def close(self) -> None:
        self.scheduler.close()

    # ---- worker side

    def prepare(self, job: _Job) -> torch.Tensor:
        """Format the prompt; 400 when it does not fit in the context with ``max_tokens``."""
        from axislens.model.chat import ChatError, format_conversation

        try:
            conv = format_conversation(self.model, job.messages, add_generation_prompt=True)
        except ChatError as err:
            raise APIError(400, str(err), param="messages") from None
        limit = self.limits.max_prompt_tokens
        if len(conv) > limit:
            raise APIError(
                400,
                f"the messages take {len(conv)} tokens; this server accepts prompts of at most "
                f"{limit} (axislens serve --max-prompt-tokens)",
                param="messages",
                code="context_length_exceeded",
            )
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

    @contextlib.contextmanager
    def applied(self, ivs: Sequence[Any], prompt_len: int | None = None) -> Iterator[None]:
        """The interventions attached for the block (none: nothing attached)."""
        if not ivs:
            yield
            return
        from axislens.interventions.attach import intervene

        with intervene(self.model, *ivs, prompt_len=prompt_len):
            yield

    def annotate(
        self, job: _Job, out: _Outcome, prompt_len: int, cancelled: Callable[[], bool]
    ) -> None:
        """Fill ``out.axislens``; the projection pass runs with the job's interventions on."""
        ivs = self.interventions if job.intervene else ()
        projection: dict[str, float | None] | None = None
        turns: list[dict[str, Any]] | None = None
        if self.axis is not None and not cancelled():
            with self.applied(ivs, prompt_len):
                projection, turns = self._project(job.messages, out.text)
        out.axislens = {
            "intervened": bool(ivs),
            "interventions": [repr(iv) for iv in ivs],
            "layers": list(self.layers),
            "projection": projection,
            "turns": turns,
        }

    def _project(
        self, messages: list[dict[str, str]], reply: str
    ) -> tuple[dict[str, float | None] | None, list[dict[str, Any]] | None]:
        from axislens.monitoring.projection import project_conversation

        assert self.axis is not None
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


class _ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


async def _read_body(request: Any, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"the request body is larger than {limit} bytes", code="too_large")
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(
                    413, f"the request body is larger than {limit} bytes", code="too_large"
                )
    except ClientDisconnect:
        raise _ClientGone from None  # gone mid-body: nothing to answer, nothing to log
    return bytes(body)


def _check_json(request: Any) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise APIError(
            415,
            f"the request body must be application/json, got {media or 'no content-type'!r}",
            code="unsupported_media_type",
        )


async def _disconnect(request: Any) -> None:
    """Returns once the client has gone (the body is already read: only a disconnect remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _until_done(request: Any, ticket: Ticket, fut: Future[Any]) -> Any:
    """``fut``'s result; cancels ``ticket`` and raises :class:`_ClientGone` when the client
    disconnects first."""
    waiter = asyncio.wrap_future(fut)
    listener = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({waiter, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
    if waiter in done:
        return waiter.result()
    ticket.cancel()
    waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
    raise _ClientGone


def _bearer_auth(key: str) -> Any:
    """A Starlette authentication backend checking ``Authorization: Bearer <key>``."""
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        AuthenticationError,
        SimpleUser,
    )

    want = key.encode()

    class BearerKey(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
            if conn.url.path == "/health":
                return None
            scheme, _, token = conn.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                token.strip().encode(), want
            ):
                raise AuthenticationError(
                    "invalid or missing API key: send the header 'Authorization: Bearer <key>'"
                )
            return AuthCredentials(["authenticated"]), SimpleUser("client")

    return BearerKey()


def create_app(
    model: Model,
    *,
    interventions: Sequence[Any] = (),
    axis: Direction | None = None,
    monitor_layers: Sequence[int] | None = None,
    name: str | None = None,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Any:
    """The FastAPI app serving ``model`` with ``interventions`` on every request.

    Args:
        model: the loaded model to serve.
        interventions: :class:`~axislens.interventions.attach.Intervention` values applied to every request
            (validated against the model now).
        axis: direction for the ``axislens.projection`` field (``None``: no projections).
        monitor_layers: layers to project at (default: the middle non-zero layer of ``axis``).
        name: model id clients must send (default: :func:`served_name`).
        limits: request and batching limits (:class:`ServeLimits`).
        api_key: when given, every request but ``/health`` needs ``Authorization: Bearer <key>``
            (else 401).
        allowed_hosts: accepted ``Host`` header names (default :data:`LOOPBACK_HOSTS`;
            ``["*"]`` accepts any).

    Example:
        >>> app = create_app(model, name="tiny", api_key="s3cret")
        >>> sorted(r.path for r in app.routes if r.path.startswith("/v1"))[:2]
        ['/v1/chat/completions', '/v1/models']
    """
    require("fastapi", "serve", "the OpenAI-compatible server (axislens serve)")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException
    from starlette.middleware.authentication import AuthenticationMiddleware

    if api_key is not None and not api_key.strip():
        raise ValueError("api_key must be a non-empty string")
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
    if api_key is not None:

        def unauthorized(conn: Any, err: Exception) -> JSONResponse:
            body = APIError(401, str(err), code="invalid_api_key").body()
            return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})

        app.add_middleware(
            AuthenticationMiddleware, backend=_bearer_auth(api_key), on_error=unauthorized
        )
    hosts = list(LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts)
    app.add_middleware(HostCheck, allowed=hosts)  # outermost: checked first

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
        _check_json(request)
        try:
            body = await _read_body(request, engine.limits.max_body_bytes)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it
        try:
            req = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as err:
            raise _validation_error(err) from None
        job = parse_request(req, engine.name, engine.limits)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        stream = _EventStream(engine.name, cid, created) if req.stream else None
        ticket = engine.submit(job, stream.on_text if stream is not None else None)
        try:
            await _until_done(request, ticket, ticket.admitted)  # 400s come before any stream
            if stream is not None:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return StreamingResponse(
                    stream.events(ticket, include_usage),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            out: _Outcome = await _until_done(request, ticket, ticket.done)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it
        except BaseException:
            ticket.cancel()
            raise
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

    # A plain (Starlette) route: the handler reads and validates the body itself, so that size
    # limits and errors are ours, and FastAPI does not introspect its (lazily imported) types.
    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    return app


class _EventStream:
    """Server-sent events of one streamed reply: text pieces pushed from the worker thread."""

    def __init__(self, name: str, cid: str, created: int) -> None:
        self.name, self.cid, self.created = name, cid, created
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def _put(self, item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def on_text(self, piece: str) -> None:
        self._put(piece)

    async def events(self, ticket: Ticket, include_usage: bool) -> AsyncIterator[str]:
        ticket.done.add_done_callback(lambda _: self._put(None))
        cid, created, name = self.cid, self.created, self.name
        try:
            yield _chunk(cid, created, name, {"role": "assistant", "content": ""})
            while (piece := await self.queue.get()) is not None:
                yield _chunk(cid, created, name, {"content": piece})
            try:
                out = ticket.done.result()
            except APIError as err:
                yield f"data: {json.dumps(err.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            except Exception as err:  # a failure mid-stream: an error event, then the end
                api = APIError(500, f"internal error: {type(err).__name__}", kind="server_error")
                yield f"data: {json.dumps(api.body())}\n\n"
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
            ticket.cancel()  # a client that went away stops the generation at the next step


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def serve(
    model: Model,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    **app_kwargs: Any,
) -> None:
    """Serve ``model`` with uvicorn until interrupted (``app_kwargs`` go to :func:`create_app`).

    Beyond loopback an ``api_key`` is required (``ValueError`` otherwise). ``allowed_hosts``
    defaults to the loopback names plus ``host`` itself, or any host when ``host`` is a wildcard
    address (``0.0.0.0``, ``::``), which the API key then guards.
    """
    uvicorn = require("uvicorn", "serve", "the OpenAI-compatible server (axislens serve)")

    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"listening on {host} (beyond loopback) needs an API key: pass --api-key "
            f"(or api_key=...)"
        )
    if allowed_hosts is None:
        wildcard = host in ("0.0.0.0", "::", "")
        allowed_hosts = ["*"] if wildcard else [*LOOPBACK_HOSTS, host]
    app = create_app(model, api_key=api_key, allowed_hosts=allowed_hosts, **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yields the base URL (``http://host:port/v1``).

    ``port=0`` picks a free port. The server is shut down when the block exits. For tests and
    benchmarks.
    """
    uvicorn = require("uvicorn", "serve", "the OpenAI-compatible server (axislens serve)")

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
