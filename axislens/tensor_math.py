"""Pure tensor maths for interventions along one direction of the residual stream.

Every function takes activations ``h`` of shape ``[..., d_model]`` and a direction ``v`` of
shape ``[d_model]``, and returns a *new* tensor with the shape and dtype of ``h`` (inputs are
never mutated). Dot products and updates are computed in float32 when ``h`` is float16 or
bfloat16 (float64 stays float64), then cast back. ``v`` is moved to the device of ``h``.

Notation: ``v̂ = v / |v|`` is the unit direction, ``p = h·v̂`` the projection (one scalar per
position). Scalars (``coeff``, ``tau``, ``lo``, ``hi``, scalar ``mu``) may be Python numbers or
0-d tensors.

- :func:`add`          ``h + coeff * v``                 (``v`` *not* normalised, as in the paper)
- :func:`project_out`  ``h - p v̂``
- :func:`ablate`       ``h - p v̂ + coeff * v``
- :func:`mean_ablate`  ``h - p v̂ + mu``  (vector ``mu``) or ``h - p v̂ + mu v̂`` (scalar ``mu``)
- :func:`cap_floor`    ``h - v̂ min(p - tau, 0)``        (raise the projection to ``tau``)
- :func:`cap_ceiling`  ``h - v̂ max(p - tau, 0)``        (lower the projection to ``tau``)
- :func:`clamp_band`   projection clamped into ``[lo, hi]``
- :func:`projection`   ``p``

The caps and the band leave positions they do not touch bit-identical. Each call checks that
``v`` is non-zero and tensor scalars are finite (one host sync per check on a GPU); gradients flow
through ``h`` and ``v``.

Example:
    >>> import torch
    >>> from axislens import ops
    >>> h = torch.tensor([[3.0, 1.0], [-2.0, 5.0]])
    >>> v = torch.tensor([2.0, 0.0])
    >>> ops.projection(h, v)
    tensor([ 3., -2.])
    >>> ops.cap_floor(h, v, 0.0)  # second row raised to projection 0, first row untouched
    tensor([[3., 1.],
            [0., 5.]])
"""

from __future__ import annotations

import math

import torch

from axislens._types import Float, Tensor, Vec

Acts = Float[Tensor, "... d_model"]
"""Activations with any leading shape."""
Proj = Float[Tensor, "..."]
"""One projection per position of :data:`Acts`."""
Scalar = int | float | Tensor
"""A Python number or a 0-d tensor."""

__all__ = [
    "ablate",
    "add",
    "cap_ceiling",
    "cap_floor",
    "clamp_band",
    "mean_ablate",
    "project_out",
    "projection",
    "unit",
]


# --------------------------------------------------------------------------- helpers


def _compute_dtype(h: Tensor) -> torch.dtype:
    if not torch.is_tensor(h):
        raise TypeError(f"h must be a torch.Tensor, got {type(h).__name__}")
    if not h.is_floating_point():
        raise TypeError(f"h must be a floating-point tensor, got dtype {h.dtype}")
    if h.ndim < 1:
        raise ValueError("h must have a trailing d_model dimension, got a 0-d tensor")
    return torch.promote_types(h.dtype, torch.float32)


def _as_vector(v: Tensor, h: Tensor, dtype: torch.dtype, name: str = "v") -> Tensor:
    if not torch.is_tensor(v):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != 1 or v.shape[0] != h.shape[-1]:
        raise ValueError(
            f"{name} must have shape [d_model]=[{h.shape[-1]}] to match h {tuple(h.shape)}, "
            f"got {tuple(v.shape)}"
        )
    return v.to(device=h.device, dtype=dtype)


def _unit(v: Tensor) -> Tensor:
    norm = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(norm)) or not bool(norm > 0):
        raise ValueError(f"direction v must be non-zero and finite, got norm {float(norm)}")
    return v / norm


def _as_scalar(x: Scalar, name: str, h: Tensor, dtype: torch.dtype) -> Tensor:
    if torch.is_tensor(x):
        if x.ndim != 0:
            raise ValueError(
                f"{name} must be a Python number or a 0-d tensor, got shape {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x)):
            raise ValueError(f"{name} must be finite, got {float(x)}")
        return x.to(device=h.device, dtype=dtype)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a Python number or a 0-d tensor, got {type(x).__name__}")
    if not math.isfinite(float(x)):
        raise ValueError(f"{name} must be finite, got {x}")
    return torch.tensor(float(x), device=h.device, dtype=dtype)


def _prepare(h: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(h in compute dtype, unit v̂, projection p)``."""
    dtype = _compute_dtype(h)
    u = _unit(_as_vector(v, h, dtype))
    hc = h.to(dtype)
    return hc, u, hc @ u


def _shift(h: Tensor, hc: Tensor, u: Tensor, delta: Tensor, touched: Tensor) -> Tensor:
    """``h - delta v̂`` where ``touched``, ``h`` itself (bit-identical) elsewhere."""
    moved = (hc - delta.unsqueeze(-1) * u).to(h.dtype)
    return torch.where(touched.unsqueeze(-1), moved, h)


# --------------------------------------------------------------------------- operations


def unit(v: Vec) -> Vec:
    """``v / |v|`` in the dtype of ``v`` (float32 or higher); raises on a zero or non-finite ``v``.

    Example:
        >>> unit(torch.tensor([3.0, 4.0]))
        tensor([0.6000, 0.8000])
    """
    if not torch.is_tensor(v) or v.ndim != 1:
        raise ValueError("v must be a 1-d tensor of shape [d_model]")
    return _unit(v.to(torch.promote_types(v.dtype, torch.float32)))


def projection(h: Acts, v: Vec) -> Proj:
    """Projection ``h·v̂`` of every position on the unit direction, in the dtype of ``h``.

    Example:
        >>> projection(torch.tensor([[1.0, 2.0]]), torch.tensor([0.0, 5.0]))
        tensor([2.])
    """
    _, _, p = _prepare(h, v)
    return p.to(h.dtype)


def add(h: Acts, v: Vec, coeff: Scalar) -> Acts:
    """Steering by addition, ``h + coeff * v`` (``v`` is used as given, not normalised).

    Example:
        >>> add(torch.zeros(2), torch.tensor([1.0, 2.0]), 0.5)
        tensor([0.5000, 1.0000])
    """
    dtype = _compute_dtype(h)
    vc = _as_vector(v, h, dtype)
    c = _as_scalar(coeff, "coeff", h, dtype)
    return (h.to(dtype) + c * vc).to(h.dtype)


def project_out(h: Acts, v: Vec) -> Acts:
    """Remove the component along ``v``: ``h - (h·v̂) v̂``.

    Example:
        >>> project_out(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0]))
        tensor([0., 4.])
    """
    hc, u, p = _prepare(h, v)
    return (hc - p.unsqueeze(-1) * u).to(h.dtype)


def ablate(h: Acts, v: Vec, coeff: Scalar) -> Acts:
    """Directional ablation with add-back: ``h - (h·v̂) v̂ + coeff * v`` (``v`` raw).

    ``coeff = 0`` is a pure projection-out; the result's projection is ``coeff * |v|``.

    Example:
        >>> ablate(torch.tensor([3.0, 4.0]), torch.tensor([2.0, 0.0]), 1.5)
        tensor([3., 4.])
    """
    hc, u, p = _prepare(h, v)
    c = _as_scalar(coeff, "coeff", h, hc.dtype)
    vc = _as_vector(v, h, hc.dtype)
    return (hc - p.unsqueeze(-1) * u + c * vc).to(h.dtype)


def mean_ablate(h: Acts, v: Vec, mu: Vec | Scalar) -> Acts:
    """Mean ablation: replace the component along ``v`` by a reference value.

    - ``mu`` a ``[d_model]`` vector (the public code's form): ``h - (h·v̂) v̂ + mu``. ``mu`` is
      added as given, so any part of it orthogonal to ``v`` is added too (pass ``mu`` already
      projected on ``v̂`` to touch only the axis).
    - ``mu`` a scalar (number or 0-d tensor): the projection value to set,
      ``h - (h·v̂) v̂ + mu v̂``, so every position ends with projection ``mu``.

    Example:
        >>> mean_ablate(torch.tensor([3.0, 4.0]), torch.tensor([2.0, 0.0]), 7.0)
        tensor([7., 4.])
    """
    hc, u, p = _prepare(h, v)
    base = hc - p.unsqueeze(-1) * u
    if torch.is_tensor(mu) and mu.ndim == 1:
        return (base + _as_vector(mu, h, hc.dtype, name="mu")).to(h.dtype)
    m = _as_scalar(mu, "mu", h, hc.dtype)
    return (base + m * u).to(h.dtype)


def cap_floor(h: Acts, v: Vec, tau: Scalar) -> Acts:
    """Floor cap (axislens' convention): ``h - v̂ min(h·v̂ - tau, 0)``.

    Positions whose projection is below ``tau`` are moved along ``v̂`` to projection ``tau``;
    the others are returned bit-identical. ``cap_floor(h, v, tau) == cap_ceiling(h, -v, -tau)``.

    Example:
        >>> cap_floor(torch.tensor([[-1.0, 2.0], [5.0, 2.0]]), torch.tensor([1.0, 0.0]), 1.0)
        tensor([[1., 2.],
                [5., 2.]])
    """
    hc, u, p = _prepare(h, v)
    delta = p - _as_scalar(tau, "tau", h, hc.dtype)
    return _shift(h, hc, u, delta, delta < 0)


def cap_ceiling(h: Acts, v: Vec, tau: Scalar) -> Acts:
    """Ceiling cap (the public assistant-axis code's form): ``h - v̂ max(h·v̂ - tau, 0)``.

    Positions whose projection exceeds ``tau`` are moved back to projection ``tau``; the
    others are returned bit-identical.

    Example:
        >>> cap_ceiling(torch.tensor([[3.0, 2.0], [0.5, 2.0]]), torch.tensor([1.0, 0.0]), 1.0)
        tensor([[1.0000, 2.0000],
                [0.5000, 2.0000]])
    """
    hc, u, p = _prepare(h, v)
    delta = p - _as_scalar(tau, "tau", h, hc.dtype)
    return _shift(h, hc, u, delta, delta > 0)


def clamp_band(h: Acts, v: Vec, lo: Scalar, hi: Scalar) -> Acts:
    """Clamp the projection into ``[lo, hi]``: floor at ``lo`` and ceiling at ``hi`` at once.

    Positions already inside the band are returned bit-identical; raises if ``lo > hi``.

    Example:
        >>> clamp_band(torch.tensor([[5.0, 1.0], [0.0, 1.0]]), torch.tensor([1.0, 0.0]), -1.0, 2.0)
        tensor([[2., 1.],
                [0., 1.]])
    """
    hc, u, p = _prepare(h, v)
    lo_t = _as_scalar(lo, "lo", h, hc.dtype)
    hi_t = _as_scalar(hi, "hi", h, hc.dtype)
    if bool(lo_t > hi_t):
        raise ValueError(f"clamp_band needs lo <= hi, got lo={float(lo_t)} > hi={float(hi_t)}")
    below = p < lo_t
    above = p > hi_t
    delta = torch.where(below, p - lo_t, torch.where(above, p - hi_t, torch.zeros_like(p)))
    return _shift(h, hc, u, delta, below | above)
