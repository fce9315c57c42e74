"""Does the axis carry a question offset? The design of a store and the offset estimate b̂.

With additive question effects ``beta_q``, the plain axis ``mean(default) - mean(role vectors)``
equals the persona difference plus ``b = sum_q (w_d(q) - w_r(q)) beta_q``, where ``w_d`` are the
default set's question weights and ``w_r`` the roles' (each role's weights, averaged over roles,
as the plain axis averages role vectors). :func:`question_offset` estimates it from the default
responses alone:

``b̂ = sum_q (w_d(q) - w_r(q)) m_d(q)``, with ``m_d(q)`` the default set's mean on question ``q``:
the default mean under its own question weights minus the default mean reweighted to the role
items' question weights. It is zero when both sides weigh the questions alike (a shared or
rotated design), whatever the activations. ``|b̂| / |axis|`` and ``cos(axis, b̂)`` say how much
of an axis the question mix alone could make.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> off = question_offset(store, axis, min_score=None, min_count=1)  # doctest: +SKIP
    >>> off.ratio_at(15), off.cos_at(15)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from axislens.analysis.effects import question_weights
from axislens.analysis.vectors import (
    StoreSource,
    _defaults,
    _frozen,
    _question_counts,
    _select,
    _stream,
    check_direction,
    open_source,
)
from axislens.directions import Direction

__all__ = ["QuestionOffset", "question_offset"]


@dataclass(frozen=True, slots=True, eq=False)
class QuestionOffset:
    """The question design of a store and the offset estimate b̂ per layer.

    Fields:
        default_questions: distinct questions the default responses answer.
        role_questions: distinct questions the (used) role responses answer.
        overlap: questions both sides answer.
        weight_gap: ``sum_q |w_d(q) - w_r(q)| / 2``, 0 (same mix) to 1 (disjoint).
        layers: the layers of :attr:`ratio` and :attr:`cosine`.
        ratio: ``|b̂| / |axis|`` per layer (None when b̂ cannot be estimated).
        cosine: ``cos(axis, b̂)`` per layer (None when b̂ is zero or cannot be estimated).
        reason: why b̂ could not be estimated, else None.
        design: the store manifest's ``generation.design`` record, if any.
        estimator: the estimator the axis was made with (its provenance), if recorded.
    """

    default_questions: int
    role_questions: int
    overlap: int
    weight_gap: float
    layers: tuple[int, ...]
    ratio: tuple[float, ...] | None
    cosine: tuple[float | None, ...] | None
    reason: str | None = None
    design: Mapping[str, Any] = field(default_factory=dict)
    estimator: str | None = None

    def ratio_at(self, layer: int) -> float | None:
        return None if self.ratio is None else self.ratio[self.layers.index(layer)]

    def cos_at(self, layer: int) -> float | None:
        return None if self.cosine is None else self.cosine[self.layers.index(layer)]

    def to_dict(self) -> dict[str, Any]:
        """The ``question_offset`` entry of a summary JSON."""
        return {
            "design": dict(self.design) or None,
            "estimator": self.estimator,
            "default_questions": self.default_questions,
            "role_questions": self.role_questions,
            "overlap": self.overlap,
            "weight_gap": self.weight_gap,
            "layers": list(self.layers),
            "offset_over_axis": None if self.ratio is None else list(self.ratio),
            "cos_axis_offset": None if self.cosine is None else list(self.cosine),
            "reason": self.reason,
            "note": "b-hat = default mean under the default set's question weights minus the "
            "default mean reweighted to the role items' question weights; 0 when both sides "
            "weigh the questions alike",
        }


def question_offset(
    source: StoreSource,
    axis: Direction,
    *,
    min_score: int | None = 3,
    min_count: int = 50,
    layers: Iterable[int] | None = None,
) -> QuestionOffset:
    """The store's question design and the offset estimate b̂ against ``axis`` (module
    docstring). Roles are those :func:`~axislens.analysis.vectors.assistant_axis` would use with
    the same ``min_score``/``min_count``, each weighing the same. Streams the default responses
    once, in float64."""
    src = open_source(source, axis.hook)
    check_direction(
        axis, d_model=src.d_model, hook=src.hook, model_id=src.model_id, where=src.where
    )
    cols = src.resolve_layers(layers)
    sel = _select(src, "role", min_score, min_count, warn=False)
    defaults = _defaults(src)
    if not defaults:
        raise ValueError(f"{src.where}: no collected default responses; the axis needs them")
    qids, counts = _question_counts((*sel.groups, defaults))
    w = question_weights(counts)
    w_d, w_r = w[-1], w[:-1].mean(dim=0)
    on_d, on_r = counts[-1] > 0, counts[:-1].sum(dim=0) > 0
    gap = float((w_d - w_r).abs().sum() / 2)
    design = src.manifest.get("generation", {}).get("design") or {}
    estimator = axis.provenance.get("estimator")
    common: dict[str, Any] = {
        "default_questions": int(on_d.sum()),
        "role_questions": int(on_r.sum()),
        "overlap": int((on_d & on_r).sum()),
        "weight_gap": gap,
        "layers": cols,
        "design": _frozen(design),
        "estimator": None if estimator is None else str(estimator),
    }
    missing = int((on_r & ~on_d).sum())
    if missing:
        return QuestionOffset(
            **common,
            ratio=None,
            cosine=None,
            reason=f"the roles answer {missing} question(s) the default set does not; b-hat "
            f"needs the default set's mean on every role question",
        )
    col = {q: j for j, q in enumerate(qids)}
    qsums = torch.zeros(len(qids), len(cols), src.d_model, dtype=torch.float64)
    for _g, recs, x in _stream(src, [defaults], cols):
        qsums.index_add_(0, torch.tensor([col[r.question_id] for r in recs]), x)
    m_d = qsums / counts[-1].clamp_min(1)[:, None, None]
    diff = w_d - w_r
    diff[diff.abs() < 1e-12] = 0.0  # equal weights up to rounding: exactly no offset
    b_hat = torch.einsum("q,qld->ld", diff, m_d)
    rows = torch.stack([axis.vectors[layer].double() for layer in cols])
    a_norm = torch.linalg.vector_norm(rows, dim=-1)
    b_norm = torch.linalg.vector_norm(b_hat, dim=-1)
    ratio = tuple(float(r) for r in b_norm / a_norm.clamp_min(1e-300))
    cosine = tuple(
        None if float(bn) == 0.0 else float((a @ b) / (an * bn))
        for a, b, an, bn in zip(rows, b_hat, a_norm, b_norm, strict=True)
    )
    return QuestionOffset(**common, ratio=ratio, cosine=cosine)
