"""Trait vectors: ``mean(trait_pos responses) - mean(trait_neg responses)`` per trait, and
their cosines with the Assistant Axis.

Trait items in a store have ``kind`` ``"trait_pos"`` / ``"trait_neg"`` and ``role`` = the trait
name (:func:`axislens.collection.traits.trait_items` makes them). Read without a model, in float64,
like :mod:`axislens.analysis.vectors`.

Filtering (:class:`TraitFilter`), a documented *assumption* mirroring the role filter: trait
items are judged on the public 0-100 trait rubric; a positive item is kept when its score is
``> 50`` (the trait is expressed), a negative item when it is ``< 50`` (it is not). Unscored items
and REFUSAL verdicts (stored as ``None``) are dropped. ``score_filter=None`` keeps every response.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

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
    _field,
    _frozen,
    _stream,
    check_direction,
    open_source,
)
from axislens.directions import Direction

__all__ = ["TraitCosines", "TraitFilter", "TraitVectors", "trait_cosines", "trait_vectors"]


@dataclass(frozen=True, slots=True)
class TraitFilter:
    """Keep positive trait items scoring ``> pos_above`` and negative ones scoring
    ``< neg_below`` (0-100 trait scale; default 50/50, an assumption mirroring the paper's role
    filter)."""

    pos_above: int = 50
    neg_below: int = 50

    def __post_init__(self) -> None:
        for name in ("pos_above", "neg_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                raise ValueError(f"TraitFilter.{name} must be an int in 0..100, got {v!r}")

    def keeps(self, kind: str, score: int | None) -> bool:
        if score is None:
            return False
        return score > self.pos_above if kind == "trait_pos" else score < self.neg_below

    def describe(self) -> dict[str, int]:
        return {"pos_above": self.pos_above, "neg_below": self.neg_below}


def _select_side(
    src: Any, kind: str, filt: TraitFilter | None, min_count: int
) -> tuple[dict[str, tuple[Any, ...]], dict[str, int]]:
    """``({trait: items kept}, {trait: count} of traits below min_count)`` for one side."""
    items = src.query(kind=kind)
    if filt is not None:
        scores = [s.scores() for s in src.stores]
        got = [scores[k].get(r.id, {}).get("score") for k, r in items]
        if items and all(s is None for s in got):
            raise ValueError(
                f"{src.where}: no judge scores for the {kind!r} responses; judge them "
                f"(judge_store(..., kinds=('trait_pos', 'trait_neg'))) or pass score_filter=None"
            )
        items = [it for it, s in zip(items, got, strict=True) if filt.keeps(kind, s)]
    by: dict[str, list[Any]] = {n: [] for n in sorted({r.role for _, r in src.query(kind=kind)})}
    for item in items:
        by[item[1].role].append(item)
    low = {n: len(v) for n, v in by.items() if len(v) < min_count}
    kept = {
        n: tuple(sorted(v, key=lambda t: (t[0], t[1].id))) for n, v in by.items() if n not in low
    }
    return kept, low


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
    score_filter: TraitFilter | None = TraitFilter(),
    min_count: int = 1,
) -> TraitVectors:
    """``mean(trait_pos) - mean(trait_neg)`` per trait (items' ``role`` is the trait name).

    ``score_filter`` (default ``TraitFilter()``: positive items scoring > 50, negative < 50 on the
    0-100 trait rubric, an assumption) selects the responses; ``None`` keeps all of them.
    Traits missing either side, or with fewer than ``min_count`` responses on a side, are
    excluded and reported in ``excluded`` as ``(n_pos, n_neg)``.
    """
    if score_filter is not None and not isinstance(score_filter, TraitFilter):
        raise TypeError(f"score_filter must be a TraitFilter or None, got {score_filter!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    src = open_source(source, hook)
    cols = src.resolve_layers(layers)
    if not src.query(kind="trait_pos") and not src.query(kind="trait_neg"):
        raise ValueError(f"{src.where}: no collected trait responses (trait_pos/trait_neg)")
    gpos, low_pos = _select_side(src, "trait_pos", score_filter, min_count)
    gneg, low_neg = _select_side(src, "trait_neg", score_filter, min_count)
    npos = {n: len(g) for n, g in gpos.items()}
    nneg = {n: len(g) for n, g in gneg.items()}
    every = sorted({*gpos, *gneg, *low_pos, *low_neg})
    names = [n for n in every if n in npos and n in nneg]
    excluded = {
        n: (npos.get(n, low_pos.get(n, 0)), nneg.get(n, low_neg.get(n, 0)))
        for n in every
        if n not in names
    }
    if not names:
        raise ValueError(f"{src.where}: no trait has both positive and negative responses")
    if excluded:
        warnings.warn(f"traits excluded (n_pos, n_neg): {excluded}", UserWarning, stacklevel=2)
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
        provenance=src.provenance(
            score_filter=None if score_filter is None else score_filter.describe(),
            min_count=min_count,
        ),
    )


@dataclass(frozen=True, slots=True, eq=False)
class TraitCosines:
    """Cosine of each trait vector with the axis at one layer."""

    layer: int
    names: tuple[str, ...]
    cosines: Float[Tensor, " trait"]


def trait_cosines(traits: TraitVectors, axis: Direction, layer: int) -> TraitCosines:
    """cos(trait vector, axis) per trait at ``layer`` (float64)."""
    check_direction(
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
