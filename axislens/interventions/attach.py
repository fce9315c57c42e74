"""Interventions along a direction at TransformerLens hook points: steer, ablate, cap.

An :class:`Intervention` is a frozen value naming *what* to do (a typed op from
:mod:`axislens.interventions.operations`: :class:`Add`, :class:`Ablate`, :class:`MeanAblate`, :class:`CapFloor`,
:class:`CapCeiling`, :class:`ClampBand`), *along what* (a :class:`~axislens.directions.Direction`,
row ``l`` used at layer ``l``), *where* (layers and a per-block hook) and *at which tokens*
(:class:`All`, :class:`Prompt`, :class:`Response`, :class:`Last`, :class:`Spans`).
:func:`intervene` attaches interventions for a ``with`` block, for any forward,
``run_with_cache`` or generation call, and removes them in ``finally`` even when the body raises.
Everything is validated against the model before any hook is attached.

Residual-norm units: with ``norm_units`` (``[n_layers]``, e.g. from :func:`residual_norms`),
every scalar of the op is multiplied by ``norm_units[l]`` and ``Add``/``Ablate`` use the *unit*
vector: ``Add(2.0)`` adds a vector twice as long as the layer's average residual norm.

Positions under generation: with a KV cache, decode steps show the hooks only the new tokens. A
tracker (a forward pre-hook on the wrapped HF model, removed with the hooks) reads the cache length,
so every hook knows the absolute position of its tokens. The prompt is what the first forward over
an empty cache processes, unless ``prompt_len`` is given to :func:`intervene`: ``Prompt`` = positions
``< prompt_len``, ``Response`` = ``>= prompt_len`` (generated tokens), ``Last`` = the last prompt
token. The rules are the same with or without the cache, so a cached generation equals recomputing
the full sequence at every step. Positions index the model input (left padding included).

``resid_mid`` is edited through ``attn_out`` (``resid_mid = resid_pre + attn_out``): the bridge's
``hook_resid_mid`` only feeds the MLP's norm, so editing it would not change the carried stream.

Example:
    Needs a real model (not run by the doctest suite).

    >>> axis = Direction.load("axis.safetensors")  # doctest: +SKIP
    >>> with intervene(model, Intervention(Add(-4.0), axis, layers=slice(12, 16))):  # doctest: +SKIP
    ...     logits = model(tokens)
    >>> with cap(model, CapConfig.load("cap.json")):  # doctest: +SKIP
    ...     text = generate_text(model, [conv], SamplingConfig(temperature=0.0))
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from axislens._types import Float, Tensor
from axislens.directions import CapConfig, CeilingCap, Direction, HookName, check_hook
from axislens.interventions.operations import (
    _OPS,
    Ablate,
    Add,
    All,
    CapCeiling,
    CapFloor,
    Kernel,
    Last,
    Op,
    Positions,
    Prompt,
    Response,
    Spans,
    _Ctx,
)
from axislens.model.layers import LayerSpec, hook_name, layer_device, parse_layers, resolve_layers
from axislens.model.protocol import Model

__all__ = [
    "Intervention",
    "LayerSpec",
    "ablate",
    "cap",
    "cap_intervention",
    "ceiling_sequence_interventions",
    "intervene",
    "intervention_hooks",
    "residual_norms",
    "steer",
]

# --------------------------------------------------------------------------- interventions


def _layers_value(layers: Any) -> LayerSpec:
    if isinstance(layers, str):  # the command line's syntax: "12:16", "-4:", "3", "1,5,-1"
        return _layers_value(parse_layers(layers, "Intervention.layers"))
    if isinstance(layers, (slice, range)):
        return layers
    if isinstance(layers, bool):
        raise ValueError(f"Intervention.layers must be ints, got {layers!r}")
    if isinstance(layers, numbers.Integral):
        return (int(layers),)
    if isinstance(layers, Sequence) and not isinstance(layers, (str, bytes)):
        out = []
        for x in layers:
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                raise ValueError(f"Intervention.layers must be ints, got {x!r} in {layers!r}")
            out.append(int(x))
        if not out:
            raise ValueError("Intervention.layers is empty")
        return tuple(out)
    raise ValueError(
        f"Intervention.layers must be an int, a sequence of ints, a slice or a range, got {layers!r}"
    )


@dataclass(frozen=True, slots=True, eq=False)
class Intervention:
    """One op along one direction at a set of layers, hook and positions.

    Fields:
        op: :class:`Add`, :class:`Ablate`, :class:`MeanAblate`, :class:`CapFloor`,
            :class:`CapCeiling` or :class:`ClampBand`.
        direction: row ``l`` is used at layer ``l``.
        layers: int, sequence, slice or range (negatives count from the end), or the command
            line's text (``"12:16"`` stop-exclusive, ``"-4:"``, ``"1,5,-1"``); resolved
            against the model when attached.
        hook: ``resid_post`` (the direction's own hook when ``None``), ``resid_pre``,
            ``resid_mid``, ``attn_out`` or ``mlp_out``.
        positions: :class:`All` (default), :class:`Prompt`, :class:`Response`, :class:`Last`,
            :class:`Spans`.
        norm_units: optional ``[n_layers]`` average residual norms; scalars then count in them.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> Intervention(Add(-4.0), axis, layers=range(12, 16), positions=Response())  # doctest: +SKIP
    """

    op: Op
    direction: Direction
    layers: LayerSpec
    hook: HookName | None = None
    positions: Positions = field(default_factory=All)
    norm_units: Float[Tensor, " layer"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.op, _OPS):
            raise ValueError(
                f"Intervention.op must be one of {[c.__name__ for c in _OPS]}, got {self.op!r}"
            )
        if not isinstance(self.direction, Direction):
            raise ValueError(
                f"Intervention.direction must be a Direction, got {type(self.direction).__name__}"
            )
        object.__setattr__(self, "layers", _layers_value(self.layers))
        hook = self.direction.hook if self.hook is None else self.hook
        check_hook(hook, "Intervention.hook")
        object.__setattr__(self, "hook", hook)
        if not isinstance(self.positions, (All, Prompt, Response, Last, Spans)):
            raise ValueError(
                f"Intervention.positions must be All(), Prompt(), Response(), Last() or Spans(...), "
                f"got {self.positions!r}"
            )
        if self.norm_units is not None:
            n = torch.as_tensor(self.norm_units).detach().to("cpu", torch.float64)
            if n.ndim != 1:
                raise ValueError(
                    f"Intervention.norm_units must have shape [n_layers], got {tuple(n.shape)}"
                )
            object.__setattr__(self, "norm_units", n.clone())

    def __repr__(self) -> str:
        return (
            f"Intervention({self.op!r}, {self.direction.method!r} direction, layers={self.layers!r}, "
            f"hook={self.hook!r}, positions={self.positions!r}"
            f"{', norm_units' if self.norm_units is not None else ''})"
        )


def cap_intervention(
    cap_config: CapConfig | CeilingCap,
    *,
    n_layers: int | None = None,
    positions: Positions | None = None,
    hook: HookName | None = None,
) -> Intervention:
    """The :class:`Intervention` applying a cap: :class:`CapFloor` over its layers and direction.

    A public-code :class:`CeilingCap` is converted first (``n_layers`` sizes its direction).
    """
    if isinstance(cap_config, CeilingCap):
        cap_config = CapConfig.from_ceiling(cap_config, n_layers=n_layers)
    if not isinstance(cap_config, CapConfig):
        raise ValueError(f"cap needs a CapConfig or CeilingCap, got {type(cap_config).__name__}")
    return Intervention(
        CapFloor(cap_config.thresholds),
        cap_config.direction,
        layers=cap_config.layers,
        hook=hook,
        positions=positions if positions is not None else All(),
    )


def ceiling_sequence_interventions(
    caps: Any,
    *,
    n_layers: int,
    positions: Positions | None = None,
    hook: HookName = "resid_post",
) -> list[Intervention]:
    """The interventions applying a public multi-vector capping experiment
    (:class:`axislens.paper_artifacts.CeilingSequence`) exactly: one :class:`CapCeiling` per *slot*
    (slot ``k`` = the ``k``-th cap of each layer), attached in slot order, so at every layer the
    caps run one after the other in file order, as the public steerer applies them.

    Example:
        Needs the paper's released files (not run by the doctest suite).

        >>> seq = CeilingSequence.from_torch("capping_config.pt", 0)  # doctest: +SKIP
        >>> with intervene(model, *ceiling_sequence_interventions(seq, n_layers=64)):  # doctest: +SKIP
        ...     out = model(tokens)
    """
    from axislens.paper_artifacts import CeilingSequence

    if not isinstance(caps, CeilingSequence):
        raise ValueError(f"expected a CeilingSequence, got {type(caps).__name__}")
    if max(caps.layers) >= n_layers:
        raise ValueError(f"the caps reach layer {max(caps.layers)}; n_layers={n_layers}")
    out = []
    for k, (vectors, thresholds) in enumerate(caps.slots()):
        layers = tuple(sorted(vectors))
        rows = torch.zeros(n_layers, next(iter(vectors.values())).shape[0])
        for layer in layers:
            rows[layer] = vectors[layer]
        direction = Direction(
            rows, method="imported", hook=hook, provenance={**dict(caps.provenance), "slot": k}
        )
        out.append(
            Intervention(
                CapCeiling(tuple(thresholds[la] for la in layers)),
                direction,
                layers=layers,
                hook=hook,
                positions=positions if positions is not None else All(),
            )
        )
    return out


# --------------------------------------------------------------------------- attaching


class _Tracker:
    """Absolute position of the current forward's first token, and the prompt length."""

    __slots__ = ("boundary", "fixed", "masks", "start")

    def __init__(self, prompt_len: int | None) -> None:
        self.fixed = prompt_len
        self.start = 0
        self.boundary = prompt_len if prompt_len is not None else 0
        self.masks: dict[tuple[Any, ...], Tensor | bool | None] = {}

    def pre_hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args and torch.is_tensor(args[0]) else None
        if x is None:
            x = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        cache = kwargs.get("past_key_values")
        past = int(cache.get_seq_length()) if cache is not None else 0
        self.start = past
        self.masks.clear()
        if past == 0 and self.fixed is None and x is not None:
            self.boundary = int(x.shape[1])


def _model_sizes(model: Model) -> tuple[int, int]:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layers") or not hasattr(cfg, "d_model"):
        raise ValueError(
            "intervene needs a TransformerLens model with cfg.n_layers and cfg.d_model"
        )
    return int(cfg.n_layers), int(cfg.d_model)


def compile_kernels(
    iv: Intervention,
    n_layers: int,
    d_model: int,
    dtype: torch.dtype,
    device_of: Callable[[int], Any],
    where: str,
) -> list[tuple[int, Kernel]]:
    """Validate one intervention against a model's sizes and compile its op into one kernel per
    selected layer, ``[(layer, kernel), ...]``: the one kernel builder of the bridge path
    (:func:`intervene`) and the plain-HF path (:mod:`axislens.hf`). ``device_of(layer)`` is the
    device holding that layer; vectors are cast to ``dtype`` there once."""
    if iv.direction.d_model != d_model:
        raise ValueError(
            f"{where}: direction has d_model {iv.direction.d_model} but the model has {d_model}"
        )
    layers = resolve_layers(iv.layers, n_layers, where)
    for layer in layers:
        if layer >= iv.direction.n_layers:
            raise ValueError(
                f"{where}: layer {layer} but the direction has only {iv.direction.n_layers} layers"
            )
    if iv.norm_units is not None and iv.norm_units.shape[0] != n_layers:
        raise ValueError(
            f"{where}: norm_units has {iv.norm_units.shape[0]} entries for {n_layers} layers"
        )
    out: list[tuple[int, Kernel]] = []
    for i, layer in enumerate(layers):
        scale = None
        if iv.norm_units is not None:
            scale = float(iv.norm_units[layer])
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(
                    f"{where}: norm_units[{layer}] must be finite and > 0, got {scale}"
                )
        try:
            u = iv.direction.unit(layer)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        v = iv.direction.vectors[layer]
        dev = device_of(layer)  # per layer: models split over GPUs
        ctx = _Ctx(v.to(dev, dtype), u.to(dev, dtype), scale)
        out.append((layer, iv.op.kernel(ctx, i, len(layers))))
    return out


def _compile(
    model: Model, ivs: Sequence[Intervention], tracker: _Tracker
) -> list[tuple[str, Callable[..., Any]]]:
    """Validate every intervention against the model and build its hook functions."""
    n_layers, d_model = _model_sizes(model)
    names = set(model.hook_dict)
    dtype = torch.promote_types(model.cfg.dtype, torch.float32)
    hooks: list[tuple[str, Callable[..., Any]]] = []
    captures: list[tuple[str, Callable[..., Any]]] = []
    compiled = []
    for k, iv in enumerate(ivs):
        if not isinstance(iv, Intervention):
            raise ValueError(
                f"intervention #{k}: expected an Intervention, got {type(iv).__name__}"
            )
        where = f"intervention #{k} ({type(iv.op).__name__})"
        kernels = compile_kernels(
            iv, n_layers, d_model, dtype, lambda layer: layer_device(model, layer), where
        )
        assert iv.hook is not None
        needed = ("resid_pre", "attn_out") if iv.hook == "resid_mid" else (iv.hook,)
        for layer, _ in kernels:
            for h in (iv.hook, *needed):
                if hook_name(h, layer) not in names:
                    raise ValueError(f"{where}: the model has no hook {hook_name(h, layer)!r}")
        compiled.append((iv, kernels))
    for iv, kernels in compiled:
        for layer, kernel in kernels:
            if iv.hook == "resid_mid":
                slot: dict[str, Tensor] = {}
                captures.append((hook_name("resid_pre", layer), _capture(slot)))
                hooks.append(
                    (hook_name("attn_out", layer), _mid_hook(kernel, iv.positions, tracker, slot))
                )
            else:
                assert iv.hook is not None
                hooks.append((hook_name(iv.hook, layer), _hook(kernel, iv.positions, tracker)))
    # resid_mid needs the final resid_pre: captures go after every edit at that hook.
    return hooks + captures


def _positions_mask(
    positions: Positions, tracker: _Tracker, n: int, device: Any
) -> Tensor | bool | None:
    """``None``: every position; ``False``: none; else a bool mask over the ``n`` positions.
    Cached per forward, so the layers of one step share one mask."""
    if isinstance(positions, All):
        return None
    key = (positions, tracker.start, tracker.boundary, n, device)
    hit = tracker.masks.get(key, True)
    if hit is not True:
        return hit
    m = positions.mask(tracker.start, n, tracker.boundary)
    assert m is not None
    out: Tensor | bool | None
    if not bool(m.any()):
        out = False
    elif bool(m.all()):
        out = None
    else:
        out = m.to(device)
    tracker.masks[key] = out
    return out


def _hook(kernel: Kernel, positions: Positions, tracker: _Tracker) -> Callable[..., Any]:
    def fn(h: Tensor, hook: Any) -> Tensor | None:
        m = _positions_mask(positions, tracker, h.shape[-2], h.device)
        if m is False:
            return None
        out = kernel(h)
        if m is None:
            return out
        return torch.where(m.unsqueeze(-1), out, h)  # type: ignore[union-attr]

    return fn


def _capture(slot: dict[str, Tensor]) -> Callable[..., Any]:
    def fn(h: Tensor, hook: Any) -> None:
        slot["pre"] = h

    return fn


def _mid_hook(
    kernel: Kernel, positions: Positions, tracker: _Tracker, slot: dict[str, Tensor]
) -> Callable[..., Any]:
    """``resid_mid = resid_pre + attn_out``: edit the stream there by editing ``attn_out`` (the
    bridge's ``hook_resid_mid`` only feeds the MLP norm, not the carried residual)."""

    def fn(attn: Tensor, hook: Any) -> Tensor | None:
        m = _positions_mask(positions, tracker, attn.shape[-2], attn.device)
        if m is False:
            return None
        pre = slot.pop("pre")
        mid = pre + attn
        new = kernel(mid)
        touched = new != mid
        touched = touched.any(-1) if m is None else touched.any(-1) & m
        return torch.where(touched.unsqueeze(-1), new - pre, attn)

    return fn


def _hf_module(model: Model) -> torch.nn.Module:
    hf = getattr(
        model, "original_model", None
    )  # a bridge wraps the HF model; HookedTransformer is one
    return hf if isinstance(hf, torch.nn.Module) else cast(torch.nn.Module, model)


@contextlib.contextmanager
def intervene(
    model: Model, *interventions: Intervention, prompt_len: int | None = None
) -> Iterator[Any]:
    """Attach ``interventions`` to ``model`` for the ``with`` block; yields the model.

    Every intervention is checked against the model first (d_model, layers, hooks, per-layer
    value counts, norm units); nothing is attached if one is wrong. Hooks fire at prefill and at
    every decode step of a KV-cached generation. ``prompt_len`` fixes the prompt/response
    boundary (default: the length of the first forward over an empty cache). The model itself is
    never modified; hooks are removed in ``finally``.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with intervene(model, Intervention(Ablate(), axis, layers=[10])):  # doctest: +SKIP
        ...     logits = model(tokens)
    """
    if prompt_len is not None and (isinstance(prompt_len, bool) or operator.index(prompt_len) < 0):
        raise ValueError(f"prompt_len must be a non-negative int, got {prompt_len!r}")
    tracker = _Tracker(prompt_len)
    fwd = _compile(model, interventions, tracker)
    needs_tracker = any(not isinstance(iv.positions, All) for iv in interventions)
    handle = (
        _hf_module(model).register_forward_pre_hook(tracker.pre_hook, with_kwargs=True)
        if needs_tracker
        else None
    )
    try:
        with model.hooks(fwd_hooks=fwd):
            yield model
    finally:
        if handle is not None:
            handle.remove()


def intervention_hooks(
    model: Model, *interventions: Intervention
) -> list[tuple[str, Callable[..., Any]]]:
    """The validated ``(hook name, hook function)`` pairs :func:`intervene` attaches, for a
    caller that runs its own hooks and applies the ops itself (e.g. a conditional cap that a
    chat session switches on mid-reply): one compiled kernel path for every op. Only for
    interventions at :class:`All` positions (the others need the position tracker that
    :func:`intervene` attaches).

    Example:
        Needs a real model (not run by the doctest suite).

        >>> [name for name, _ in intervention_hooks(model, cap_intervention(cfg))]  # doctest: +SKIP
        ['blocks.12.hook_resid_post', 'blocks.14.hook_resid_post']
    """
    for k, iv in enumerate(interventions):
        if isinstance(iv, Intervention) and not isinstance(iv.positions, All):
            raise ValueError(
                f"intervention #{k}: intervention_hooks supports All() positions only, "
                f"got {iv.positions!r}; use intervene()"
            )
    return _compile(model, interventions, _Tracker(None))


def steer(
    model: Model,
    direction: Direction,
    coeff: float | Sequence[float],
    layers: LayerSpec | str,
    *,
    hook: HookName | None = None,
    positions: Positions | None = None,
    norm_units: Tensor | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """Add ``coeff * v`` at ``layers`` inside the block.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with steer(model, axis, -4.0, slice(12, 16)):  # doctest: +SKIP
        ...     reply = generate_text(model, [conv], greedy)
    """
    iv = Intervention(
        Add(coeff),
        direction,
        _layers_value(layers),
        hook=hook,
        positions=positions or All(),
        norm_units=norm_units,
    )
    return intervene(model, iv, prompt_len=prompt_len)


def ablate(
    model: Model,
    direction: Direction,
    layers: LayerSpec | str,
    coeff: float | Sequence[float] = 0.0,
    *,
    hook: HookName | None = None,
    positions: Positions | None = None,
    norm_units: Tensor | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """Project the direction out at ``layers`` inside the block (and add ``coeff * v`` back).

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with ablate(model, axis, [10]):  # doctest: +SKIP
        ...     logits = model(tokens)
    """
    iv = Intervention(
        Ablate(coeff),
        direction,
        _layers_value(layers),
        hook=hook,
        positions=positions or All(),
        norm_units=norm_units,
    )
    return intervene(model, iv, prompt_len=prompt_len)


def cap(
    model: Model,
    cap_config: CapConfig | CeilingCap,
    *,
    positions: Positions | None = None,
    hook: HookName | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """Apply an activation cap inside the block (floor convention; a public
    :class:`CeilingCap` is converted).

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with cap(model, cap_config):  # doctest: +SKIP
        ...     reply = generate_text(model, [conv], greedy)
    """
    iv = cap_intervention(
        cap_config, n_layers=_model_sizes(model)[0], positions=positions, hook=hook
    )
    return intervene(model, iv, prompt_len=prompt_len)


# --------------------------------------------------------------------------- norms


def _as_ids(model: Model, item: Any) -> tuple[Tensor, Tensor]:
    """``(ids, weights)`` for a conversation (content tokens of every message, else all but the
    first token) or a 1-d token tensor (all but the first token)."""
    ids = item.input_ids if hasattr(item, "input_ids") else torch.as_tensor(item)
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError(
            f"expected a 1-d token tensor or a FormattedConversation, got shape {tuple(ids.shape)}"
        )
    w = torch.zeros(len(ids))
    spans = getattr(item, "spans", ())
    for s in spans:
        w[s.start : s.end] = 1.0
    if not bool(w.any()):
        w[1:] = 1.0
        if len(ids) == 1:
            w[0] = 1.0
    return ids, w


@torch.no_grad()
def residual_norms(
    model: Model,
    conversations: Sequence[Any],
    layers: LayerSpec | None = None,
    *,
    hook: HookName = "resid_post",
) -> Float[Tensor, " layer"]:
    """Average residual norm ``mean |h|`` per layer, from one right-padded batched forward.

    Tokens averaged: the content tokens of every message of each
    :class:`~axislens.model.chat.FormattedConversation` (no BOS or template tokens, whose norms are
    outliers), or every token but the first of a plain token tensor. Returns ``[n_layers]``
    float32 with NaN at layers not measured; pass it as ``norm_units``.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> norms = residual_norms(model, [conv1, conv2])  # doctest: +SKIP
        >>> Intervention(Add(-2.0), axis, layers=[12], norm_units=norms)  # doctest: +SKIP
    """
    if len(conversations) == 0:
        raise ValueError("residual_norms needs at least one conversation")
    n_layers, _ = _model_sizes(model)
    chosen = resolve_layers(
        _layers_value(layers) if layers is not None else slice(None), n_layers, "residual_norms"
    )
    pairs = [_as_ids(model, c) for c in conversations]
    width = max(len(i) for i, _ in pairs)
    ids = torch.full((len(pairs), width), int(model.tokenizer.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    w = torch.zeros((len(pairs), width), dtype=torch.float64)
    for b, (t, wt) in enumerate(pairs):
        ids[b, : len(t)], mask[b, : len(t)], w[b, : len(t)] = t, 1, wt
    sums: dict[int, float] = {}
    device = model.cfg.device
    wd = w.to(device)

    def recorder(layer: int) -> Callable[..., None]:
        def record(h: Tensor, hook: Any) -> None:
            wl = wd if wd.device == h.device else wd.to(h.device)  # layers split over devices
            sums[layer] = float((h.double().norm(dim=-1) * wl).sum())

        return record

    fwd = [(hook_name(hook, layer), recorder(layer)) for layer in chosen]
    with model.hooks(fwd_hooks=fwd):
        model(ids.to(device), attention_mask=mask.to(device), return_type=None)
    out = torch.full((n_layers,), float("nan"))
    for layer in chosen:
        out[layer] = sums[layer] / float(w.sum())
    return out
