"""Typed intervention ops and position rules (pure torch; used by :mod:`axislens.interventions.attach`).

Ops (``v`` the layer's raw vector, ``v̂ = v/|v|``, ``p = h·v̂``; formulas as in
:mod:`axislens.tensor_math`, whose functions are the float64-checked reference):

- :class:`Add` ``(c)``: ``h + c v``
- :class:`Ablate` ``(c)``: ``h - p v̂ + c v`` (``c = 0`` projects out)
- :class:`MeanAblate` ``(mu)``: projection set to ``mu``, or ``h - p v̂ + mu`` for a vector
- :class:`CapFloor` ``(tau)``: ``h - v̂ min(p - tau, 0)``; :class:`CapCeiling`:
  ``h - v̂ max(p - tau, 0)``; :class:`ClampBand` ``(lo, hi)``: ``p`` clamped into the band.
  These leave positions they do not move bit-identical.

Every scalar is one number or one number per selected layer; NaN/inf raise at construction.
Each op compiles once per (intervention, layer) into a kernel over precomputed device tensors, so
a hook call does no validation, no host sync and no re-normalisation.

Positions: :class:`All`, :class:`Prompt`, :class:`Response`, :class:`Last`, :class:`Spans`
(absolute token positions; the prompt/response boundary is tracked by :func:`axislens.intervene`).

Example:
    >>> Add(-4.0), CapFloor((1.0, 2.0)), parse_positions("response")
    (Add(coeff=-4.0), CapFloor(thresholds=(1.0, 2.0)), Response())
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from axislens._types import Tensor

__all__ = [
    "Ablate",
    "Add",
    "All",
    "CapCeiling",
    "CapFloor",
    "ClampBand",
    "Last",
    "MeanAblate",
    "Op",
    "Positions",
    "Prompt",
    "Response",
    "Spans",
    "parse_positions",
]

Values = float | Sequence[float]
"""One number, or one number per selected layer (stored as a tuple)."""
Kernel = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- values


def _number(x: Any, what: str) -> float:
    if torch.is_tensor(x) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{what} must be a number, got {x!r}")
    if not math.isfinite(float(x)):
        raise ValueError(f"{what} must be finite, got {x!r}")
    return float(x)


def _values(x: Any, what: str) -> float | tuple[float, ...]:
    """A finite number or a non-empty tuple of finite numbers (one per layer)."""
    if torch.is_tensor(x) and x.ndim == 1:
        x = x.tolist()
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        if len(x) == 0:
            raise ValueError(f"{what} is an empty sequence; give a number or one per layer")
        return tuple(_number(e, f"{what}[{i}]") for i, e in enumerate(x))
    return _number(x, what)


def _at(values: Values, i: int, n: int, what: str) -> float:
    if not isinstance(values, (int, float)):
        if len(values) != n:
            raise ValueError(f"{what} has {len(values)} values for {n} layers")
        return values[i]
    return values


# --------------------------------------------------------------------------- ops


class _Ctx:
    """Precomputed, device-ready tensors for one (intervention, layer)."""

    __slots__ = ("scale", "u", "v")

    def __init__(self, v: Tensor, u: Tensor, scale: float | None) -> None:
        self.v, self.u, self.scale = v, u, scale

    def amount(self, x: float) -> float:
        return x if self.scale is None else x * self.scale

    def along(self, c: float) -> Tensor:
        """``c v`` (raw vector) or ``c * norm * v̂`` in norm units."""
        return c * self.v if self.scale is None else (c * self.scale) * self.u


def _where(touched: Tensor, moved: Tensor, h: Tensor) -> Tensor:
    return torch.where(touched.unsqueeze(-1), moved.to(h.dtype), h)


@dataclass(frozen=True, slots=True)
class Add:
    """Steer: ``h + coeff * v`` (``coeff * norm * v̂`` in norm units)."""

    coeff: Values

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff", _values(self.coeff, "Add.coeff"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        delta = ctx.along(_at(self.coeff, i, n, "Add.coeff"))

        def run(h: Tensor) -> Tensor:
            return (h.to(delta.dtype) + delta).to(h.dtype)

        return run


@dataclass(frozen=True, slots=True)
class Ablate:
    """Directional ablation with add-back: ``h - (h·v̂) v̂ + coeff * v``; ``coeff=0`` projects out."""

    coeff: Values = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff", _values(self.coeff, "Ablate.coeff"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        u, back = ctx.u, ctx.along(_at(self.coeff, i, n, "Ablate.coeff"))

        def run(h: Tensor) -> Tensor:
            hc = h.to(u.dtype)
            return (hc - (hc @ u).unsqueeze(-1) * u + back).to(h.dtype)

        return run


@dataclass(frozen=True, slots=True, eq=False)
class MeanAblate:
    """Mean ablation: the projection on ``v̂`` set to ``mu`` (a number, or one per layer), or
    ``h - (h·v̂) v̂ + mu`` for a vector ``mu`` (``[d_model]``, or ``[n_selected_layers, d_model]``;
    vectors are never scaled by norm units)."""

    mu: Values | Tensor

    def __post_init__(self) -> None:
        mu = self.mu
        if torch.is_tensor(mu) and mu.ndim >= 1 and not (mu.ndim == 1 and mu.shape[0] == 1):
            if mu.ndim > 2 or not bool(torch.isfinite(mu).all()):
                raise ValueError(
                    f"MeanAblate.mu must be finite with shape [d_model] or [layers, d_model], "
                    f"got shape {tuple(mu.shape)}"
                )
            object.__setattr__(self, "mu", mu.detach().to("cpu", torch.float64).clone())
        else:
            object.__setattr__(self, "mu", _values(mu, "MeanAblate.mu"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        u = ctx.u
        if torch.is_tensor(self.mu):
            mu = self.mu if self.mu.ndim == 1 else self.mu[i]
            if self.mu.ndim == 2 and self.mu.shape[0] != n:
                raise ValueError(f"MeanAblate.mu has {self.mu.shape[0]} rows for {n} layers")
            if mu.shape[0] != u.shape[0]:
                raise ValueError(
                    f"MeanAblate.mu has d_model {mu.shape[0]} but the model has {u.shape[0]}"
                )
            add = mu.to(device=u.device, dtype=u.dtype)
        else:
            add = ctx.amount(_at(self.mu, i, n, "MeanAblate.mu")) * u

        def run(h: Tensor) -> Tensor:
            hc = h.to(u.dtype)
            return (hc - (hc @ u).unsqueeze(-1) * u + add).to(h.dtype)

        return run


@dataclass(frozen=True, slots=True)
class CapFloor:
    """Floor cap (axislens' convention): raise projections below ``thresholds`` to it."""

    thresholds: Values

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _values(self.thresholds, "CapFloor.thresholds"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        u, tau = ctx.u, ctx.amount(_at(self.thresholds, i, n, "CapFloor.thresholds"))

        def run(h: Tensor) -> Tensor:
            hc = h.to(u.dtype)
            delta = hc @ u - tau
            return _where(delta < 0, hc - delta.unsqueeze(-1) * u, h)

        return run


@dataclass(frozen=True, slots=True)
class CapCeiling:
    """Ceiling cap (the public code's form): lower projections above ``thresholds`` to it."""

    thresholds: Values

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _values(self.thresholds, "CapCeiling.thresholds"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        u, tau = ctx.u, ctx.amount(_at(self.thresholds, i, n, "CapCeiling.thresholds"))

        def run(h: Tensor) -> Tensor:
            hc = h.to(u.dtype)
            delta = hc @ u - tau
            return _where(delta > 0, hc - delta.unsqueeze(-1) * u, h)

        return run


@dataclass(frozen=True, slots=True)
class ClampBand:
    """Clamp the projection into ``[lo, hi]`` (floor and ceiling at once)."""

    lo: Values
    hi: Values

    def __post_init__(self) -> None:
        object.__setattr__(self, "lo", _values(self.lo, "ClampBand.lo"))
        object.__setattr__(self, "hi", _values(self.hi, "ClampBand.hi"))

    def kernel(self, ctx: _Ctx, i: int, n: int) -> Kernel:
        lo = ctx.amount(_at(self.lo, i, n, "ClampBand.lo"))
        hi = ctx.amount(_at(self.hi, i, n, "ClampBand.hi"))
        if lo > hi:
            raise ValueError(f"ClampBand needs lo <= hi, got lo={lo} > hi={hi} (layer #{i})")
        u = ctx.u

        def run(h: Tensor) -> Tensor:
            hc = h.to(u.dtype)
            p = hc @ u
            delta = p - p.clamp(lo, hi)
            return _where(delta != 0, hc - delta.unsqueeze(-1) * u, h)

        return run


Op = Add | Ablate | MeanAblate | CapFloor | CapCeiling | ClampBand
"""One of the typed intervention ops."""
_OPS = (Add, Ablate, MeanAblate, CapFloor, CapCeiling, ClampBand)


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True, slots=True)
class All:
    """Every token, prompt and response."""

    def mask(self, start: int, n: int, boundary: int) -> Tensor | None:
        return None


@dataclass(frozen=True, slots=True)
class Prompt:
    """Prompt tokens only (absolute positions ``< prompt length``)."""

    def mask(self, start: int, n: int, boundary: int) -> Tensor | None:
        return torch.arange(start, start + n) < boundary


@dataclass(frozen=True, slots=True)
class Response:
    """Generated tokens only (absolute positions ``>= prompt length``)."""

    def mask(self, start: int, n: int, boundary: int) -> Tensor | None:
        return torch.arange(start, start + n) >= boundary


@dataclass(frozen=True, slots=True)
class Last:
    """The last prompt token (the position the first new token is predicted from).

    Not the public assistant-axis ``positions="last"``, which edits the last position of
    *every* forward (each new token during cached decoding): that is ``Last()`` plus
    ``Response()`` (docs/concepts.md, "Positions")."""

    def mask(self, start: int, n: int, boundary: int) -> Tensor | None:
        return torch.arange(start, start + n) == boundary - 1


@dataclass(frozen=True, slots=True)
class Spans:
    """Explicit ``[start, end)`` token spans (absolute positions of the model input).

    ``spans`` takes ``(start, end)`` pairs or objects with ``.start``/``.end`` (e.g.
    :class:`axislens.model.chat.MessageSpan`).
    """

    spans: Sequence[tuple[int, int]] | Sequence[Any]

    def __post_init__(self) -> None:
        out = []
        s: Any
        for k, s in enumerate(self.spans):
            pair = (s.start, s.end) if hasattr(s, "start") and hasattr(s, "end") else tuple(s)
            if len(pair) != 2:
                raise ValueError(f"Spans.spans[{k}] must be a (start, end) pair, got {s!r}")
            a, b = (operator.index(x) for x in pair)
            if not 0 <= a <= b:
                raise ValueError(f"Spans.spans[{k}] needs 0 <= start <= end, got {(a, b)}")
            out.append((a, b))
        object.__setattr__(self, "spans", tuple(out))

    def mask(self, start: int, n: int, boundary: int) -> Tensor | None:
        pos = torch.arange(start, start + n)
        m = torch.zeros(n, dtype=torch.bool)
        for a, b in self.spans:
            m |= (pos >= a) & (pos < b)
        return m


Positions = All | Prompt | Response | Last | Spans
"""Which tokens an intervention touches."""
_POSITIONS: dict[str, type[All | Prompt | Response | Last]] = {
    "all": All,
    "prompt": Prompt,
    "response": Response,
    "last": Last,
}


def parse_positions(text: str) -> Positions:
    """``"all" | "prompt" | "response" | "last"`` or ``"3:7,9:10"`` (spans) -> a position rule."""
    key = text.strip().lower()
    if key in _POSITIONS:
        return _POSITIONS[key]()
    pairs = []
    for part in key.split(","):
        bits = part.split(":")
        try:
            if len(bits) != 2:
                raise ValueError
            pairs.append((int(bits[0]), int(bits[1])))
        except ValueError:
            raise ValueError(
                f"unknown positions {text!r}; use all, prompt, response, last or spans like 3:7,9:12"
            ) from None
    return Spans(tuple(pairs))
