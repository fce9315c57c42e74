"""Projections of stored responses on a direction, and cap thresholds calibrated from them.

``tau_l`` is the empirical percentile of ``h · v̂_l`` over the collected responses at layer ``l``
(DESIGN.md §1: the paper uses the 25th percentile); :func:`calibrate_cap` returns a
:class:`~axislens.directions.CapConfig` in axislens' floor convention
``h <- h - v̂_l min(h·v̂_l - tau_l, 0)``, convertible to the public ceiling form with
:meth:`~axislens.directions.CapConfig.to_ceiling`.

Example:
    >>> axis = assistant_axis(store)  # doctest: +SKIP
    >>> cap = calibrate_cap(store, axis, layers=range(21, 26), percentile=0.25)  # doctest: +SKIP
    >>> cap.percentile, cap.layers  # doctest: +SKIP
    (25.0, (21, 22, 23, 24, 25))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from axislens._types import Float, Tensor
from axislens.analysis.vectors import StoreSource, _check_direction, _open, _stream
from axislens.directions import CapConfig, Direction

__all__ = ["StoreProjections", "calibrate_cap", "project_store"]


@dataclass(frozen=True, slots=True, eq=False)
class StoreProjections:
    """Projections ``h · v̂_l`` (float64) of stored items on a direction, ``[sample, layer]``."""

    ids: tuple[str, ...]
    roles: tuple[str, ...]
    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    values: Float[Tensor, "sample layer"]
    stores: tuple[str, ...] = ()

    def at(self, layer: int) -> Float[Tensor, " sample"]:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} not projected (layers: {list(self.layers)})")
        return self.values[:, self.layers.index(layer)]


def project_store(
    source: StoreSource,
    direction: Direction,
    *,
    layers: Iterable[int] | None = None,
    kind: str | Sequence[str] | None = ("role", "default"),
    min_score: int | None = None,
) -> StoreProjections:
    """Project every collected item of ``kind`` (score ``>= min_score``) on ``direction``.

    Read at ``direction.hook``; unit vectors and dot products in float64.
    """
    src = _open(source, direction.hook)
    _check_direction(
        direction, d_model=src.d_model, hook=src.hook, model_id=src.model_id, where=src.where
    )
    cols = src.resolve_layers(layers)
    for layer in cols:
        if layer >= direction.n_layers:
            raise ValueError(
                f"Direction has {direction.n_layers} layers; layer {layer} is out of range"
            )
    rows = torch.stack([direction.vectors[layer].double() for layer in cols])
    norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    for layer, norm in zip(cols, norms[:, 0], strict=True):
        if not bool(norm > 0):
            raise ValueError(f"Direction has a zero vector at layer {layer}; nothing to project on")
    units = rows / norms
    items = tuple(src.query(kind=kind, min_score=min_score))
    if not items:
        raise ValueError(f"{src.where}: no collected items of kind {kind!r} to project")
    out = torch.empty(len(items), len(cols), dtype=torch.float64)
    pos = 0
    for _g, recs, x in _stream(src, [items], cols):
        out[pos : pos + len(recs)] = torch.einsum("nld,ld->nl", x, units)
        pos += len(recs)
    return StoreProjections(
        ids=tuple(r.id for _, r in items),
        roles=tuple(r.role for _, r in items),
        kinds=tuple(r.kind for _, r in items),
        layers=cols,
        values=out,
        stores=tuple(str(s.root) for s in src.stores),
    )


def calibrate_cap(
    source: StoreSource,
    axis: Direction,
    *,
    layers: Iterable[int],
    percentile: float = 0.25,
    kind: str | Sequence[str] = ("role", "default"),
    min_score: int | None = None,
) -> CapConfig:
    """Per-layer cap thresholds: ``tau_l`` = the empirical ``percentile`` of ``h · v̂_l`` over
    the collected responses of ``kind`` (score ``>= min_score``; default all) at layer ``l``.

    ``percentile`` is a *fraction* in [0, 1] as in the public ids (``0.25`` = the paper's 25th
    percentile); the returned :class:`CapConfig` records it on its 0-100 scale
    (``cap.percentile == 25.0``). The quantile interpolates linearly between order statistics
    (``torch.quantile(..., interpolation="linear")``, identical to ``numpy.percentile``'s default):
    with sorted projections ``p_0 <= ... <= p_{n-1}``, ``tau = p_i + (q(n-1) - i)(p_{i+1} - p_i)``
    for ``i = floor(q(n-1))``.

    Example:
        >>> cap = calibrate_cap(store, axis, layers=range(21, 26), percentile=0.25)  # doctest: +SKIP
        >>> cap.percentile, cap.layers  # doctest: +SKIP
        (25.0, (21, 22, 23, 24, 25))
    """
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, (int, float))
        or not 0 <= percentile <= 1
    ):
        raise ValueError(
            f"percentile is a fraction in [0, 1] (0.25 = the paper's 25th percentile), got "
            f"{percentile!r}; CapConfig.percentile records it on the 0-100 scale"
        )
    layer_list = tuple(layers)
    if not layer_list:
        raise ValueError("calibrate_cap needs at least one layer")
    proj = project_store(source, axis, layers=layer_list, kind=kind, min_score=min_score)
    q = float(percentile)
    taus = torch.quantile(proj.values, q, dim=0, interpolation="linear")
    return CapConfig(
        axis,
        layers=layer_list,
        thresholds=tuple(float(t) for t in taus),
        percentile=round(100 * q, 10),
        provenance={
            **dict(axis.provenance),
            "calibration": {
                "stores": list(proj.stores),
                "percentile_fraction": q,
                "interpolation": "linear (numpy.percentile default)",
                "kind": [kind] if isinstance(kind, str) else list(kind),
                "min_score": min_score,
                "n_items": len(proj.ids),
            },
        },
    )
