"""How stable are the axis and persona space? Split halves and seeded bootstrap intervals.

- :func:`split_half` splits the responses in two (by question id, so the halves share no
  question, or by item) and reports, per layer, the cosine between the two halves' axes.
- :func:`bootstrap` resamples responses with replacement *within* each role and within the
  defaults, recomputes the role vectors, and gives percentile intervals of the cosine between
  each replicate's axis and the full-data axis, and of every role's PC1 loading.

Both stream the store chunk by chunk and are deterministic for a given ``seed``.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> sh = split_half(store, by="question", seed=0)  # doctest: +SKIP
    >>> sh.cosines  # one per stored layer  # doctest: +SKIP
    >>> bs = bootstrap(store, layer=15, n_boot=200, seed=0)  # doctest: +SKIP
    >>> bs.axis_ci, bs.pc1_ci[:3]  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from axislens._types import Float, Tensor
from axislens.analysis.space import Scale, _check_scale, _fit_pca
from axislens.analysis.vectors import (
    Adjust,
    StoreSource,
    _adjusts,
    _check_adjust,
    _defaults,
    _estimate,
    _question_counts,
    _select,
    _stream,
    open_source,
)

__all__ = [
    "SPLITS",
    "STABILITY_NOTE",
    "Bootstrap",
    "SplitBy",
    "SplitHalf",
    "bootstrap",
    "split_half",
    "stability_at",
    "stability_table",
]

SplitBy = Literal["question", "item"]
_BOOT_BYTES = 512 << 20  # replicate role means held at once


@dataclass(frozen=True, slots=True, eq=False)
class SplitHalf:
    """Cosine per layer between the axes of two disjoint halves of the responses.

    ``half_a`` lists the question ids (``by="question"``) or item ids (``by="item"``) of the
    first half; ``roles`` the roles present in both halves (the others are dropped from both);
    ``estimator`` the estimator each half's axis used (``adjust``).
    """

    layers: tuple[int, ...]
    cosines: Float[Tensor, " layer"]
    by: str
    seed: int
    roles: tuple[str, ...]
    half_a: tuple[str, ...]
    n_items: tuple[int, int]
    estimator: str = "plain"


def _generator(seed: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + stream)


def split_half(
    source: StoreSource,
    *,
    by: SplitBy = "question",
    seed: int = 0,
    min_score: int | None = 3,
    min_count: int = 50,
    hook: str = "resid_post",
    layers: Iterable[int] | None = None,
    adjust: Adjust = "auto",
) -> SplitHalf:
    """Axes from two disjoint halves of the data, and their cosine at each layer.

    Roles are chosen on the full data (``min_score``/``min_count`` as in
    :func:`~axislens.analysis.vectors.assistant_axis`); a role absent from one half is dropped
    from both. Both halves use the estimator ``adjust`` picks for the *full* data
    (:func:`~axislens.analysis.vectors.role_vectors`), so the cosine is about the axis that is
    reported; a random halving alone never switches it.
    """
    if by not in get_args(SplitBy):
        raise ValueError(f"unknown split {by!r}; expected one of {list(get_args(SplitBy))}")
    _check_adjust(adjust)
    src = open_source(source, hook)
    cols = src.resolve_layers(layers)
    sel = _select(src, "role", min_score, min_count)
    defaults = _defaults(src)
    if not defaults:
        raise ValueError(f"{src.where}: no collected default responses; the axis needs them")
    groups = (*sel.groups, defaults)
    if by == "question":
        qids = sorted({r.question_id for g in groups for _, r in g})
        if len(qids) < 2:
            raise ValueError(f"only {len(qids)} distinct question id(s); use by='item'")
        perm = torch.randperm(len(qids), generator=_generator(seed))
        half_a = {qids[int(i)] for i in perm[: len(qids) // 2]}
        in_a = {r.id: r.question_id in half_a for g in groups for _, r in g}
    else:
        in_a, half_a = {}, set()
        for k, g in enumerate(groups):
            perm = torch.randperm(len(g), generator=_generator(seed, k + 1))
            chosen = {g[int(i)][1].id for i in perm[: (len(g) + 1) // 2]}
            half_a |= chosen
            in_a.update({r.id: r.id in chosen for _, r in g})
    n_roles = len(sel.names)
    # the full data's estimator, for both halves: the one the reported axis uses
    adjust = "questions" if _adjusts(adjust, _question_counts(groups)[1]) else "none"
    halves = [[tuple(it for it in g if in_a[it[1].id] == side) for g in groups] for side in (1, 0)]
    if any(not h[-1] for h in halves):
        raise ValueError("the default responses all fall in one half; use by='item'")
    keep = [k for k in range(n_roles) if halves[0][k] and halves[1][k]]
    if not keep:
        raise ValueError("no role has responses in both halves; use by='item' or more data")
    axes, estimators = [], set()
    for h in halves:
        part = [h[k] for k in keep] + [h[-1]]
        names = [sel.names[k] for k in keep] + ["default"]
        est = _estimate(src, part, cols, adjust, names)
        estimators.add(est.estimator)
        axes.append(est.means[-1] - est.means[:-1].mean(dim=0))
    cos = (axes[0] * axes[1]).sum(-1) / (
        torch.linalg.vector_norm(axes[0], dim=-1) * torch.linalg.vector_norm(axes[1], dim=-1)
    )
    n_items = tuple(sum(len(h[k]) for k in (*keep, -1)) for h in halves)
    return SplitHalf(
        cols,
        cos,
        by,
        seed,
        tuple(sel.names[k] for k in keep),
        tuple(sorted(half_a)),
        (n_items[0], n_items[1]),
        " / ".join(sorted(estimators)),
    )


@dataclass(frozen=True, slots=True, eq=False)
class Bootstrap:
    """Seeded bootstrap at one layer: percentile intervals at level ``ci``.

    Fields:
        axis_cosines: ``[boot]`` cos(replicate axis, full-data axis).
        axis_ci: interval of those cosines.
        names, pc1_loadings: roles and their full-data PC1 loadings (default-positive sign).
        pc1_ci: ``[role, 2]`` interval of each role's loading over the replicates (each
            replicate's PC1 sign-aligned with the full-data PC1).
        pc1_cosines: ``[boot]`` |cos(replicate PC1, full PC1)|.
    """

    layer: int
    n_boot: int
    ci: float
    seed: int
    scale: str
    axis_cosines: Float[Tensor, " boot"]
    axis_ci: tuple[float, float]
    names: tuple[str, ...]
    pc1_loadings: Float[Tensor, " role"]
    pc1_ci: Float[Tensor, "role 2"]
    pc1_cosines: Float[Tensor, " boot"]


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1) / (
        torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    )


def bootstrap(
    source: StoreSource,
    layer: int,
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    min_score: int | None = 3,
    min_count: int = 50,
    hook: str = "resid_post",
    scale: Scale = "center",
) -> Bootstrap:
    """Bootstrap intervals of the axis (cosine to the full axis) and of PC1 role loadings.

    Replicate ``b`` draws, for every role and for the defaults, as many responses as it has
    with replacement (counts from a generator seeded by ``seed`` and the group's index). Memory
    is bounded: replicates are processed in blocks of at most ~512 MiB, re-reading the store.

    The replicates use plain group means. On a store whose groups weigh the questions
    differently (a rotated or nested design, or judge filtering) the axis the other analyses
    report is the question-adjusted one; the intervals here are then of the plain axis, and a
    ``UserWarning`` says so (:func:`split_half` uses the adjusted estimator).
    """
    _check_scale(scale)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot must be an int >= 2, got {n_boot!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    src = open_source(source, hook)
    cols = src.resolve_layers([layer])
    sel = _select(src, "role", min_score, min_count)
    defaults = _defaults(src)
    if not defaults:
        raise ValueError(f"{src.where}: no collected default responses; the axis needs them")
    groups = (*sel.groups, defaults)
    if _adjusts("auto", _question_counts(groups)[1]):
        warnings.warn(
            f"{src.where}: the groups weigh the questions differently, so the reported axis is "
            "question-adjusted; bootstrap resamples plain means, and its intervals describe the "
            "plain axis (split_half uses the adjusted estimator)",
            UserWarning,
            stacklevel=2,
        )
    n_roles, d = len(sel.names), src.d_model
    block = max(1, min(n_boot, _BOOT_BYTES // (8 * len(groups) * d)))
    full = torch.zeros(len(groups), d, dtype=torch.float64)
    loads: list[Tensor] = []
    pc1_cos: list[float] = []
    axis_cos: list[Tensor] = []
    for b0 in range(0, n_boot, block):
        b1 = min(n_boot, b0 + block)
        reps = torch.zeros(b1 - b0, len(groups), d, dtype=torch.float64)
        for g, chunks in itertools.groupby(_stream(src, groups, cols), key=lambda t: t[0]):
            n = len(groups[g])
            idx = torch.randint(n, (n_boot, n), generator=_generator(seed, g))[b0:b1]
            w = torch.zeros(b1 - b0, n, dtype=torch.float64).scatter_add_(
                1, idx, torch.ones(idx.shape, dtype=torch.float64)
            )
            start = 0
            for _, recs, x in chunks:
                reps[:, g] += w[:, start : start + len(recs)] @ x[:, 0]
                if b0 == 0:
                    full[g] += x[:, 0].sum(dim=0)
                start += len(recs)
            reps[:, g] /= n
        if b0 == 0:
            full /= torch.tensor([len(g) for g in groups], dtype=torch.float64)[:, None]
            axis = full[n_roles] - full[:n_roles].mean(dim=0)
            base = _fit_pca(full[:n_roles], scale, full[n_roles])
            pc1 = base.components[0]
        for rep in reps:
            fit = _fit_pca(rep[:n_roles], scale, rep[n_roles])
            dot = float(fit.components[0] @ pc1)
            loads.append((1.0 if dot >= 0 else -1.0) * fit.loadings[:, 0])
            pc1_cos.append(abs(dot))
        axis_cos.append(_cos(reps[:, n_roles] - reps[:, :n_roles].mean(dim=1), axis[None]))
    axis_cosines = torch.cat(axis_cos)
    q = torch.tensor([(1 - ci) / 2, (1 + ci) / 2], dtype=torch.float64)
    lo, hi = (float(t) for t in torch.quantile(axis_cosines, q))
    return Bootstrap(
        layer=layer,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        scale=scale,
        axis_cosines=axis_cosines,
        axis_ci=(lo, hi),
        names=sel.names,
        pc1_loadings=base.loadings[:, 0],
        pc1_ci=torch.quantile(torch.stack(loads), q, dim=0).T.contiguous(),
        pc1_cosines=torch.tensor(pc1_cos, dtype=torch.float64),
    )


# --------------------------------------------------------------------------- per-layer table

SPLITS: tuple[SplitBy, ...] = ("item", "question")
"""The two splits every summary reports, in the order they are shown (item / question)."""

STABILITY_NOTE = (
    "split-half cosine: the cosine between the axes computed from two disjoint halves of the "
    "responses (by item: each role's and the defaults' responses halved at random; by question: "
    "the questions halved, so the halves share none); near 1 = stable, near 0 = noise"
)


def stability_table(
    src: StoreSource,
    layers: Iterable[int],
    *,
    seed: int = 0,
    min_score: int | None = 3,
    min_count: int = 50,
    hook: str = "resid_post",
    adjust: Adjust = "auto",
) -> dict[str, Any]:
    """The split-half cosines every summary reports: at each of ``layers``, by item and by
    question (:func:`split_half`), as a JSON-ready dict.

    Keys: ``layers``, ``by_item`` / ``by_question`` (one cosine per layer, or ``None`` when the
    data cannot be split that way), ``by_item_reason`` / ``by_question_reason`` (why not, else
    ``None``), the settings (``seed``, ``min_score``, ``min_count``, ``adjust``) and ``note``.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> table = stability_table(store, [10, 15], min_count=3)  # doctest: +SKIP
        >>> stability_at(table, 15)  # doctest: +SKIP
        {'by_item': 0.86, 'by_question': 0.74}
    """
    layers = list(layers)
    out: dict[str, Any] = {"layers": layers}
    for by in SPLITS:
        try:
            sh = split_half(
                src,
                by=by,
                seed=seed,
                min_score=min_score,
                min_count=min_count,
                hook=hook,
                layers=layers,
                adjust=adjust,
            )
        except ValueError as err:  # too few questions, defaults in one half, no shared role
            out[f"by_{by}"], out[f"by_{by}_reason"] = None, str(err)
        else:
            out[f"by_{by}"], out[f"by_{by}_reason"] = [float(c) for c in sh.cosines], None
    settings = {"seed": seed, "min_score": min_score, "min_count": min_count, "adjust": adjust}
    return {**out, **settings, "note": STABILITY_NOTE}


def stability_at(table: dict[str, Any], layer: int) -> dict[str, float | None]:
    """``{"by_item": cos, "by_question": cos}`` of a :func:`stability_table` at ``layer``
    (``None`` where not computed).

    Example:
        >>> table = {"layers": [3, 4], "by_item": [0.9, 0.8], "by_question": None}
        >>> stability_at(table, 4)
        {'by_item': 0.8, 'by_question': None}
    """
    i = table["layers"].index(layer) if layer in table["layers"] else None
    return {
        f"by_{by}": None if i is None or table[f"by_{by}"] is None else table[f"by_{by}"][i]
        for by in SPLITS
    }
