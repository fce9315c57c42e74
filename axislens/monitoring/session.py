"""A live chat monitored on the axis, with an optional *conditional* cap.

:func:`chat_session` returns a :class:`ChatSession`: each :meth:`ChatSession.send` generates a
reply through the bridge (KV-cached, one forward per token) and reports the reply's mean
projection at the monitored layers (:class:`TurnReport`). A cap (:class:`CapConfig`, floor
convention) can stay off until the projection crosses a drift threshold; the hooks that measure
are the hooks that cap, one per hook point, in the same forward passes. ``session.trajectory``
is a :class:`axislens.monitoring.projection.DriftTrajectory`; ``session.figure()`` is a plotly figure that
updates after every turn.

Example:
    Needs a real model (not run by the doctest suite).

    >>> s = chat_session(model, axis=axis, cap=cap, monitor_layers=[15, 20],
    ...                  drift_threshold=12.0, sampling=SamplingConfig(max_new_tokens=128))  # doctest: +SKIP
    >>> print(s.send("Do you ever feel trapped in there?"))  # doctest: +SKIP
    [turn 0] projection L15 +13.204  L20 +9.871
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import torch

from axislens._types import Tensor
from axislens.directions import CapConfig, Direction
from axislens.interventions.attach import cap_intervention, intervention_hooks
from axislens.model.chat import fit_to_context
from axislens.model.decoding import SamplingConfig, decode_steps, item_seed, stop_token_ids
from axislens.model.layers import hook_name, resolve_layers
from axislens.model.protocol import Model
from axislens.monitoring.projection import (
    DriftTrajectory,
    TurnProjection,
    _check_axis,
    _decode_each,
    _model_meta,
    _units,
)

__all__ = ["ChatSession", "EngageRule", "TurnReport", "chat_session"]

EngageRule = Literal["token", "turn"]
"""When a conditional cap checks the drift threshold: after every reply token, or per reply."""


@dataclass(frozen=True, slots=True)
class TurnReport:
    """What :meth:`ChatSession.send` returns for one reply.

    ``projections``: ``{layer: mean projection of the reply's tokens}`` at each monitored layer,
    read as the activation reaches the hook (before that layer's own cap; layers above a capped
    layer see its effect). ``capped``: the cap acted on this reply; ``capped_from``: index of the
    first reply token whose activations were capped (0 when the cap was already on at the prompt).
    ``below_threshold``: the trigger layer's reply mean is below the drift threshold.
    """

    turn: int
    reply: str
    projections: Mapping[int, float]
    capped: bool
    capped_from: int | None
    n_tokens: int
    below_threshold: bool

    def __str__(self) -> str:
        proj = "  ".join(f"L{layer} {p:+.3f}" for layer, p in self.projections.items())
        flags = " (below threshold)" if self.below_threshold else ""
        if self.capped:
            flags += f" [capped from token {self.capped_from}]"
        return f"[turn {self.turn}] projection {proj}{flags}"


class ChatSession:
    """A multi-turn chat whose replies are projected on the axis as they are generated.

    Every hook point that is monitored or capped carries exactly **one** hook, which first
    measures the projection (pre-cap) of the activation and then, once the cap is engaged,
    applies the floor cap at the cap layers through the same compiled :class:`CapFloor` kernels
    that :func:`axislens.cap` attaches (:func:`axislens.interventions.attach.intervention_hooks`).

    When the conditional cap engages (``cap`` and ``drift_threshold`` both given):

    - ``engage="token"`` (default): after each forward pass of the reply, the running mean of the
      reply's projections at ``trigger_layer`` is compared with ``drift_threshold``; from the
      **next** forward pass on (the next token fed to the model), the cap is on. A reply token's
      activations are measured when it is fed back, so the earliest possible engagement is at
      the second reply token (``capped_from == 1``).
    - ``engage="turn"``: the mean of a finished reply is compared; the cap is on from the next
      turn's prompt.

    Once engaged, the cap stays on for the rest of the session and acts on every position the
    model processes: later turns re-read the whole conversation in one prefill, capped. With a
    ``cap`` and no ``drift_threshold`` the cap is on from the start (the paper's setting); with a
    ``drift_threshold`` and no ``cap`` the session only flags replies below it.

    Sampling is seeded per turn (``generate``'s per-item seed with key ``"turn/<n>"``), so a
    session replays identically. Not thread-safe; one session per model at a time.
    """

    def __init__(
        self,
        model: Model,
        *,
        axis: Direction,
        cap: CapConfig | None,
        monitor_layers: Sequence[int],
        drift_threshold: float | None,
        system: str | None,
        sampling: SamplingConfig,
        engage: EngageRule,
        trigger_layer: int | None,
        hook: str | None,
        max_tokens: int | None,
    ) -> None:
        if engage not in ("token", "turn"):
            raise ValueError(f"unknown engage rule {engage!r}; expected 'token' or 'turn'")
        if drift_threshold is not None and not math.isfinite(drift_threshold):
            raise ValueError(f"drift_threshold must be finite, got {drift_threshold}")
        if cap is not None and not isinstance(cap, CapConfig):
            raise TypeError(f"cap must be a CapConfig, got {type(cap).__name__}")
        self.model, self.axis, self.cap = model, axis, cap
        self.hook = _check_axis(model, axis, hook)
        n_layers = int(model.cfg.n_layers)
        self.layers = resolve_layers(monitor_layers, n_layers)
        if not self.layers:
            raise ValueError("monitor_layers is empty")
        trig = (
            self.layers[0]
            if trigger_layer is None
            else resolve_layers([trigger_layer], n_layers)[0]
        )
        if trig not in self.layers:
            raise ValueError(
                f"trigger_layer {trig} is not one of monitor_layers {list(self.layers)}"
            )
        if cap is not None:
            cap.direction.check_compatible(d_model=int(model.cfg.d_model))
            if max(cap.layers) >= n_layers:
                raise ValueError(f"cap layer {max(cap.layers)} out of range ({n_layers} layers)")
        self.trigger_layer, self.drift_threshold = trig, drift_threshold
        self.sampling, self.engage, self.system = sampling, engage, system
        self.limit = int(max_tokens or model.cfg.n_ctx)
        self.engaged = cap is not None and drift_threshold is None
        self._watch = engage == "token" and cap is not None and drift_threshold is not None
        self._units = _units(axis, self.layers, model)
        self._stops = set(stop_token_ids(model.tokenizer))
        self._history: list[dict[str, str]] = (
            [{"role": "system", "content": system}] if system is not None else []
        )
        self._assistant: list[TurnProjection] = []
        self._user: list[TurnProjection] = []
        self._reports: list[TurnReport] = []
        self._figures: list[tuple[Any, int | None]] = []
        self._displays: list[tuple[Any, int | None]] = []
        # Per-forward state read by the hooks.
        self._prefill = False
        self._user_span = slice(0, 0)
        self._user_buf: list[Tensor] = []
        self._tok_buf: list[list[Tensor]] = []
        self._trig_sum, self._trig_n = 0.0, 0
        self._hooks = self._make_hooks()

    # ---- hooks

    def _make_hooks(self) -> list[tuple[str, Any]]:
        monitor: dict[str, int] = {
            hook_name(self.hook, layer): j for j, layer in enumerate(self.layers)
        }
        caps: dict[str, list[Callable[..., Any]]] = {}
        if self.cap is not None:
            iv = cap_intervention(self.cap)
            for name, fn in intervention_hooks(self.model, iv):
                caps.setdefault(name, []).append(fn)
        trig_j = self.layers.index(self.trigger_layer)

        def make(j: int | None, capping: Sequence[Callable[..., Any]]) -> Any:
            def fn(act: Tensor, hook: Any) -> Tensor | None:
                if j is not None:
                    p = act[0].float() @ self._units[j]
                    if self._prefill:
                        self._user_buf[j] = p[self._user_span].cpu()
                    else:
                        self._tok_buf[j].append(p[-1])
                        if j == trig_j and self._watch and not self.engaged:
                            self._trig_sum += float(p[-1])
                            self._trig_n += 1
                if not capping or not self.engaged:
                    return None
                for cap_fn in capping:
                    out = cap_fn(act, hook)
                    act = act if out is None else out
                return act

            return fn

        return [(name, make(monitor.get(name), caps.get(name, ()))) for name in {**monitor, **caps}]

    # ---- public API

    @property
    def history(self) -> tuple[Mapping[str, str], ...]:
        """The conversation so far (system, user and generated assistant messages)."""
        return tuple(MappingProxyType(dict(m)) for m in self._history)

    @property
    def reports(self) -> tuple[TurnReport, ...]:
        return tuple(self._reports)

    @property
    def trajectory(self) -> DriftTrajectory:
        """The session's :class:`DriftTrajectory` (measured while generating)."""
        meta = {
            **_model_meta(self.model, self.axis),
            "cap": None
            if self.cap is None
            else {"layers": list(self.cap.layers), "thresholds": list(self.cap.thresholds)},
            "drift_threshold": self.drift_threshold,
            "engage": self.engage,
            "trigger_layer": self.trigger_layer,
            "sampling": {
                "max_new_tokens": self.sampling.max_new_tokens,
                "temperature": self.sampling.temperature,
                "top_p": self.sampling.top_p,
                "seed": self.sampling.seed,
            },
        }
        return DriftTrajectory(
            self.layers,
            self.hook,
            tuple(self._assistant),
            tuple(self._user),
            self.history,
            (),
            MappingProxyType(meta),
        )

    def send(self, user_text: str) -> TurnReport:
        """Add a user message, generate the reply (measuring, and capping once engaged), and
        report its projection."""
        if not isinstance(user_text, str) or not user_text.strip():
            raise ValueError("the user message must be a non-empty string")
        turn = len(self._reports)
        msgs = [*self._history, {"role": "user", "content": user_text}]
        conv, dropped, full = fit_to_context(
            self.model,
            msgs,
            self.limit,
            generation_prompt=True,
            reserve=self.sampling.max_new_tokens + 1,
        )
        if dropped:
            warnings.warn(
                f"turn {turn}: the conversation is longer than the context ({full} + "
                f"{self.sampling.max_new_tokens} new tokens > {self.limit}); the model sees it "
                f"without its first {dropped} messages",
                UserWarning,
                stacklevel=2,
            )
        user_span = conv.spans_of("user")[-1]
        tokens, capped_from = self._generate(conv.input_ids, user_span.slice, turn)
        reply = self.model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        n = len(tokens)
        proj = (
            torch.stack([torch.stack(b) if b else torch.empty(0) for b in self._tok_buf])
            .float()
            .cpu()
            .reshape(len(self.layers), n)
        )
        user_proj = torch.stack(self._user_buf).reshape(len(self.layers), -1)
        index = len(msgs) - 1
        self._user.append(
            TurnProjection(
                "user",
                turn,
                index,
                user_span.start,
                user_span.end,
                tuple(_decode_each(self.model.tokenizer, conv.input_ids[user_span.slice].tolist())),
                user_proj,
            )
        )
        item = TurnProjection(
            "assistant",
            turn,
            index + 1,
            len(conv),
            len(conv) + n,
            tuple(_decode_each(self.model.tokenizer, tokens)),
            proj,
            capped_from,
        )
        self._assistant.append(item)
        self._history = [*msgs, {"role": "assistant", "content": reply}]
        means = item.mean.tolist()
        trig = means[self.layers.index(self.trigger_layer)]
        below = self.drift_threshold is not None and trig < self.drift_threshold
        if self.engage == "turn" and below and self.cap is not None:
            self.engaged = True
        report = TurnReport(
            turn,
            reply,
            MappingProxyType(dict(zip(self.layers, means, strict=True))),
            capped_from is not None,
            capped_from,
            n,
            below,
        )
        self._reports.append(report)
        self._refresh()
        return report

    def _generate(
        self, prompt: Tensor, user_span: slice, turn: int
    ) -> tuple[list[int], int | None]:
        """One reply through :func:`axislens.model.decoding.decode_steps` (batch of one, the
        seed :func:`axislens.generate_tokens` uses for key ``"turn/<n>"``, so an uncapped
        session produces the same tokens). The last reply token is always fed back (one step
        past ``max_new_tokens``, whose sampled token is discarded), so every reply token is
        measured; the cap engages between two forward passes."""
        n = self.sampling.max_new_tokens
        self._prefill = True
        self._user_span = user_span
        self._user_buf = [torch.empty(0)] * len(self.layers)
        self._tok_buf = [[] for _ in self.layers]
        self._trig_sum, self._trig_n = 0.0, 0
        out: list[int] = []
        capped_from: int | None = 0 if self.engaged else None
        decoder = decode_steps(
            self.model,
            [prompt],
            replace(self.sampling, max_new_tokens=n + 1),
            seeds=[item_seed(self.sampling.seed, f"turn/{turn}")],
            stops=self._stops,
        )
        with self.model.hooks(fwd_hooks=self._hooks):
            for step in decoder:  # step k ran the forward that fed reply token k - 1
                self._prefill = False
                if self._token_trigger():
                    self.engaged = True
                if step.index == n:
                    break
                tok = int(step.tokens[0])
                if tok in self._stops:
                    break
                out.append(tok)
                if self.engaged and capped_from is None:
                    capped_from = step.index  # the next forward, fed this token, is capped
        return out, capped_from

    def _token_trigger(self) -> bool:
        return (
            self._watch
            and not self.engaged
            and self._trig_n > 0
            and self._trig_sum / self._trig_n < float(self.drift_threshold or 0.0)
        )

    # ---- figures

    def _figure_now(self, layer: int | None) -> Any:
        from axislens.plots.drift import drift_trajectory

        return drift_trajectory(
            self.trajectory,
            labels=["session"],
            layer=self.trigger_layer if layer is None else layer,
            threshold=self.drift_threshold,
        )

    def figure(self, layer: int | None = None) -> Any:
        """A plotly figure of the projection per turn at ``layer`` (default the trigger layer)
        that this session updates in place after every turn: a ``FigureWidget`` when plotly's
        widget support is installed (live in Jupyter), else a ``Figure`` (re-display it, or use
        :meth:`display` for a live view without widgets)."""
        import plotly.graph_objects as go

        fig = self._figure_now(layer)
        with contextlib.suppress(ImportError, ValueError):  # plotly's widgets need anywidget
            fig = go.FigureWidget(fig)
        self._figures.append((fig, layer))
        return fig

    def display(self, layer: int | None = None) -> None:
        """Show the figure in IPython/Jupyter and redraw it in place after every turn (works
        without ipywidgets, through an IPython display handle)."""
        from IPython.display import display

        handle = display(self._figure_now(layer), display_id=True)
        if handle is not None:  # None outside IPython: nothing to update later
            self._displays.append((handle, layer))

    def _refresh(self) -> None:
        for fig, layer in self._figures:
            new = self._figure_now(layer)
            if len(fig.data) == len(new.data):  # in place: a FigureWidget redraws smoothly
                with fig.batch_update():
                    for old, tr in zip(fig.data, new.data, strict=True):
                        old.update(x=tr.x, y=tr.y, marker=tr.marker, customdata=tr.customdata)
                    fig.layout.shapes = new.layout.shapes
                    fig.layout.annotations = new.layout.annotations
            else:
                fig.data = ()
                fig.add_traces(list(new.data))
                fig.layout = new.layout
        for handle, layer in self._displays:
            handle.update(self._figure_now(layer))


def chat_session(
    model: Model,
    *,
    axis: Direction,
    cap: CapConfig | None = None,
    monitor_layers: Sequence[int],
    drift_threshold: float | None = None,
    system: str | None = None,
    sampling: SamplingConfig | None = None,
    engage: EngageRule = "token",
    trigger_layer: int | None = None,
    hook: str | None = None,
    max_tokens: int | None = None,
) -> ChatSession:
    """Start a monitored chat (see :class:`ChatSession` for when a conditional cap engages).

    Args:
        model: the loaded model to chat with.
        axis: the axis to project on (unit vector per layer).
        cap: a floor cap (:class:`CapConfig`), applied once engaged.
        monitor_layers: layers whose projection is reported after each reply.
        drift_threshold: the projection below which the cap engages (at ``trigger_layer``,
            default the first monitored layer).
        system: system message opening the conversation (``None``: none).
        sampling: default :class:`SamplingConfig` (temperature 0.7, top-p 0.9, 512 tokens).
        engage: ``"token"`` (running mean of the current reply) or ``"turn"`` (reply mean).
        trigger_layer: the layer compared with ``drift_threshold``, one of ``monitor_layers``
            (default the first).
        hook: hook point of the monitored projections (default ``axis.hook``).
        max_tokens: context limit (default ``n_ctx``); older exchanges are hidden from the model
            (with a warning) when prompt plus ``max_new_tokens`` would exceed it.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> s = chat_session(model, axis=axis, cap=cap, monitor_layers=[15],
        ...                  drift_threshold=12.0)  # doctest: +SKIP
        >>> print(s.send("I feel like you're the only one who understands me."))  # doctest: +SKIP
        [turn 0] projection L15 +14.210
    """
    return ChatSession(
        model,
        axis=axis,
        cap=cap,
        monitor_layers=monitor_layers,
        drift_threshold=drift_threshold,
        system=system,
        sampling=sampling or SamplingConfig(),
        engage=engage,
        trigger_layer=trigger_layer,
        hook=hook,
        max_tokens=max_tokens,
    )
