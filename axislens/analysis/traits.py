"""Trait vectors: ``mean(trait_pos responses) - mean(trait_neg responses)`` per trait, and
their cosines with the Assistant Axis.

Trait items in a store have ``kind`` ``"trait_pos"`` / ``"trait_neg"`` and ``role`` = the trait
name. Read without a model, in float64, like :mod:`axislens.analysis.vectors`.

Example:
    >>> tv = trait_vectors(store)  # doctest: +SKIP
    >>> tc = trait_cosines(tv, assistant_axis(store), layer=15)  # doctest: +SKIP
    >>> sorted(zip(tc.cosines.tolist(), tc.names))[:5]  # most anti-Assistant traits  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from axislens._types import Float, Tensor
from axislens.analysis.vectors import (
    StoreSource,
    _check_direction,
    _field,
    _frozen,
    _open,
    _select,
    _stream,
)
from axislens.directions import Direction

__all__ = ["TraitCosines", "TraitVectors", "trait_cosines", "trait_vectors"]


@dataclass(frozen=True, slots=True, eq=False)
class TraitVectors:
    """Per-trait ``mean(trait_pos) - mean(trait_neg)`` vectors, ``[trait, layer, d_model]``."""

    names: tuple[str, ...]
    vectors: Float[Tensor, "trait layer d_model"]
    counts_pos: tuple[int, ...]
    counts_neg: tuple[int, ...]
    layers: tuple[int, ...]
    hook: str = "resid_post"
    excluded: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vectors).detach().to("cpu", torch.float64).clone()
        if v.ndim != 3 or v.shape[0] != len(self.names) or v.shape[1] != len(self.layers):
            raise ValueError(
                f"TraitVectors.vectors has shape {tuple(v.shape)}; expected [trait, layer, d_model]"
            )
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "excluded", _frozen(self.excluded))
        object.__setattr__(self, "provenance", _frozen(self.provenance))

    __hash__ = None  # type: ignore[assignment]

    def at(self, layer: int) -> Float[Tensor, "trait d_model"]:
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} not in these trait vectors (layers: {list(self.layers)})"
            )
        return self.vectors[:, self.layers.index(layer)]


def trait_vectors(
    source: StoreSource,
    *,
    hook: str = "resid_post",
    layers: Iterable[int] | None = None,
    min_score: int | None = None,
    min_count: int = 1,
) -> TraitVectors:
    """``mean(trait_pos) - mean(trait_neg)`` per trait (items' ``role`` is the trait name).

    Traits missing either side, or with fewer than ``min_count`` responses on a side, are
    excluded and reported in ``excluded`` as ``(n_pos, n_neg)``.
    """
    src = _open(source, hook)
    cols = src.resolve_layers(layers)
    pos = _select(src, "trait_pos", min_score, min_count, warn=False)
    neg = _select(src, "trait_neg", min_score, min_count, warn=False)
    npos = dict(zip(pos.names, (len(g) for g in pos.groups), strict=True))
    nneg = dict(zip(neg.names, (len(g) for g in neg.groups), strict=True))
    every = sorted({*pos.names, *neg.names, *pos.excluded, *neg.excluded})
    names = [n for n in every if n in npos and n in nneg]
    excluded = {
        n: (npos.get(n, pos.excluded.get(n, 0)), nneg.get(n, neg.excluded.get(n, 0)))
        for n in every
        if n not in names
    }
    if not names:
        raise ValueError(f"{src.where}: no trait has both positive and negative responses")
    if excluded:
        warnings.warn(f"traits excluded (n_pos, n_neg): {excluded}", UserWarning, stacklevel=2)
    gpos = dict(zip(pos.names, pos.groups, strict=True))
    gneg = dict(zip(neg.names, neg.groups, strict=True))
    groups = [gpos[n] for n in names] + [gneg[n] for n in names]
    sums = torch.zeros(len(groups), len(cols), src.d_model, dtype=torch.float64)
    for g, _recs, x in _stream(src, groups, cols):
        sums[g] += x.sum(dim=0)
    means = sums / torch.tensor([len(g) for g in groups], dtype=torch.float64)[:, None, None]
    return TraitVectors(
        names=tuple(names),
        vectors=means[: len(names)] - means[len(names) :],
        counts_pos=tuple(npos[n] for n in names),
        counts_neg=tuple(nneg[n] for n in names),
        layers=cols,
        hook=hook,
        excluded=excluded,
        provenance=src.provenance(min_score=min_score, min_count=min_count),
    )


@dataclass(frozen=True, slots=True, eq=False)
class TraitCosines:
    """Cosine of each trait vector with the axis at one layer."""

    layer: int
    names: tuple[str, ...]
    cosines: Float[Tensor, " trait"]


def trait_cosines(traits: TraitVectors, axis: Direction, layer: int) -> TraitCosines:
    """cos(trait vector, axis) per trait at ``layer`` (float64)."""
    _check_direction(
        axis,
        d_model=int(traits.vectors.shape[-1]),
        hook=traits.hook,
        model_id=_field(traits.provenance, "model.model_id"),
        where="the trait vectors",
    )
    t = traits.at(layer)
    u = axis.unit(layer).double()
    norms = torch.linalg.vector_norm(t, dim=-1)
    if bool((norms == 0).any()):
        raise ValueError(
            f"trait {traits.names[int((norms == 0).nonzero()[0])]!r} has a zero vector"
        )
    return TraitCosines(layer, traits.names, (t @ u) / norms)
