"""Persona space: PCA of the role vectors, per-layer profiles, and cross-model comparison.

PCA is an SVD in float64 (``torch.linalg.svd``) of the role vectors at one layer after scaling:

- ``"center"``: subtract the mean over roles (each role weighs the same);
- ``"center_l2"``: subtract the mean over roles, L2-normalise each row, then centre again (the
  public code's ``L2MeanScaler`` followed by scikit-learn's PCA, which centres its input).

The default vector is put through the same transform and projected on every component.

**Sign convention.** PC1 is flipped so that the default vector sits at its *positive* end (the
Assistant-like end, matching the axis: higher = more Assistant-like); without a default vector,
so that ``cos(axis, PC1) >= 0`` when an axis is given. Every other component (and PC1 when
neither is available) takes scikit-learn's ``svd_flip`` convention: its largest-magnitude entry
is positive.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> rv = role_vectors(store, min_score=3, min_count=50)  # doctest: +SKIP
    >>> pca = persona_pca(rv, layer=15)  # doctest: +SKIP
    >>> pca.explained_variance_ratio[0], pca.dims[70], pca.cos_axis_pc1  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from axislens._types import Float, Tensor
from axislens.analysis.vectors import (
    RoleVectors,
    StoreSource,
    _check_filters,
    check_direction,
    role_vectors,
)
from axislens.directions import Direction
from axislens.display import compact_repr, html_summary

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PCA1",
    "CrossModelLoadings",
    "LayerProfile",
    "PersonaPCA",
    "Scale",
    "compare_loadings",
    "cross_model",
    "layer_profile",
    "persona_pca",
]

Scale = Literal["center", "center_l2"]
THRESHOLDS = (70, 80, 90, 95)
"""Cumulative-variance percentages whose dimension counts :class:`PersonaPCA` reports."""


def _check_scale(scale: str) -> None:
    if scale not in get_args(Scale):
        raise ValueError(f"unknown scale {scale!r}; expected one of {list(get_args(Scale))}")


@dataclass(frozen=True, slots=True)
class _Fit:
    components: Tensor  # [k, d]
    variance: Tensor  # [k]
    ratio: Tensor  # [k]
    loadings: Tensor  # [R, k]
    mean: Tensor  # [d]
    default_position: Tensor | None  # [k]


def _svd_flip(vh: Tensor) -> Tensor:
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh[torch.arange(vh.shape[0]), idx])
    return vh * torch.where(signs == 0, 1.0, signs)[:, None]


def _fit_pca(
    x: Float[Tensor, "role d_model"],
    scale: str,
    default: Float[Tensor, " d_model"] | None = None,
    axis_unit: Float[Tensor, " d_model"] | None = None,
) -> _Fit:
    """Scaled PCA of ``x`` (float64), signs fixed as documented in the module."""
    _check_scale(scale)
    n_roles, d_model = x.shape
    if n_roles < 2:
        raise ValueError(f"persona PCA needs at least 2 roles, got {n_roles}")
    x = x.double()
    mean = x.mean(dim=0)

    def transform(rows: Tensor) -> Tensor:
        z = rows - mean
        if scale == "center_l2":
            z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1e-12)
        return z

    z0 = transform(x)
    recenter = z0.mean(dim=0)
    z = z0 - recenter
    _u, s, vh = torch.linalg.svd(z, full_matrices=False)
    k = min(n_roles - 1, d_model)
    vh = _svd_flip(vh[:k])
    zd = None if default is None else transform(default.double()[None])[0] - recenter
    if zd is not None and float(zd @ vh[0]) != 0:
        sign = 1.0 if float(zd @ vh[0]) > 0 else -1.0
    elif axis_unit is not None and float(axis_unit.double() @ vh[0]) != 0:
        sign = 1.0 if float(axis_unit.double() @ vh[0]) > 0 else -1.0
    else:
        sign = 1.0
    vh[0] *= sign
    total = (s**2).sum()
    return _Fit(
        components=vh,
        variance=s[:k] ** 2 / (n_roles - 1),
        ratio=s[:k] ** 2 / total if bool(total > 0) else torch.zeros(k, dtype=torch.float64),
        loadings=z @ vh.T,
        mean=mean,
        default_position=None if zd is None else zd @ vh.T,
    )


def _dims_for(ratio: Tensor, fraction: float) -> int:
    cum = torch.cumsum(ratio, dim=0)
    hit = (cum >= fraction - 1e-12).nonzero()
    return int(hit[0, 0]) + 1 if hit.numel() else int(ratio.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class PersonaPCA:
    """PCA of the role vectors at one layer (all tensors float64).

    Fields:
        layer, scale: what was analysed and how (see the module docstring).
        names, descriptions, counts: the roles, in the order of the rows of :attr:`loadings`.
        components: ``[component, d_model]`` unit principal axes, sign-fixed.
        explained_variance: ``s_k^2 / (n_roles - 1)``; explained_variance_ratio: its share.
        loadings: ``[role, component]`` coordinates of each role in persona space.
        mean: the mean role vector subtracted before the PCA.
        default_position: ``[component]`` coordinates of the default vector (same transform).
        axis_projections: ``[role]`` raw role vectors projected on the unit axis (plot colours).
        default_axis_projection: the default vector's projection on the unit axis.
        cos_axis_pc1: cosine between the axis and PC1 (after the sign convention).
        model_id, hook: where the vectors came from.
    """

    layer: int
    scale: str
    names: tuple[str, ...]
    components: Float[Tensor, "component d_model"]
    explained_variance: Float[Tensor, " component"]
    explained_variance_ratio: Float[Tensor, " component"]
    loadings: Float[Tensor, "role component"]
    mean: Float[Tensor, " d_model"]
    default_position: Float[Tensor, " component"] | None = None
    axis_projections: Float[Tensor, " role"] | None = None
    default_axis_projection: float | None = None
    cos_axis_pc1: float | None = None
    descriptions: tuple[str, ...] | None = None
    counts: tuple[int, ...] | None = None
    model_id: str | None = None
    hook: str = "resid_post"

    def dims_for(self, fraction: float) -> int:
        """Fewest components whose cumulative explained variance reaches ``fraction`` (0-1)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        return _dims_for(self.explained_variance_ratio, fraction)

    @property
    def dims(self) -> Mapping[int, int]:
        """``{70: n, 80: n, 90: n, 95: n}``: components needed for each percentage."""
        return {t: self.dims_for(t / 100) for t in THRESHOLDS}

    @property
    def pc1_loadings(self) -> Float[Tensor, " role"]:
        return self.loadings[:, 0]

    def _facts(self) -> list[tuple[str, Any]]:
        ratio = self.explained_variance_ratio
        return [
            ("model", self.model_id),
            ("layer", self.layer),
            ("scale", self.scale),
            ("roles", len(self.names)),
            ("d_model", int(self.components.shape[-1])),
            ("components", int(self.components.shape[0])),
            ("PC1 variance share", float(ratio[0]) if ratio.numel() else None),
            ("dims for 70%", self.dims_for(0.7) if ratio.numel() else None),
            ("cos(axis, PC1)", self.cos_axis_pc1),
        ]

    def __repr__(self) -> str:
        return compact_repr("PersonaPCA", self._facts())

    def _repr_html_(self) -> str:
        return html_summary(
            "PersonaPCA", self._facts(), self.to_pandas(), caption="roles by PC1 loading"
        )

    def to_pandas(self, components: int = 3) -> pd.DataFrame:
        """One row per role: ``role``, ``count``, ``PC1``.. ``PC{components}`` loadings and
        ``axis_projection`` (where known), sorted by PC1."""
        import pandas as pd

        k = min(components, int(self.loadings.shape[1]))
        data: dict[str, Any] = {"role": list(self.names)}
        if self.counts is not None:
            data["count"] = list(self.counts)
        for c in range(k):
            data[f"PC{c + 1}"] = self.loadings[:, c].tolist()
        if self.axis_projections is not None:
            data["axis_projection"] = self.axis_projections.tolist()
        df = pd.DataFrame(data)
        return df.sort_values("PC1", ascending=False, ignore_index=True) if k else df


def persona_pca(
    source: RoleVectors | StoreSource,
    layer: int,
    *,
    scale: Scale = "center",
    axis: Direction | None = None,
) -> PersonaPCA:
    """PCA of the role vectors at ``layer``.

    ``source`` is a :class:`~axislens.analysis.vectors.RoleVectors` (choose its filters there) or a
    store (read with :func:`~axislens.analysis.vectors.role_vectors`' defaults). ``axis`` defaults to the
    vectors' own Assistant Axis when they have a default vector.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> pca = persona_pca(rv, 15, scale="center")  # doctest: +SKIP
        >>> float(pca.explained_variance_ratio[0]), pca.dims[70]  # doctest: +SKIP
    """
    _check_scale(scale)
    rv = source if isinstance(source, RoleVectors) else role_vectors(source, layers=[layer])
    col = rv.column(layer)
    x = rv.vectors[:, col]
    default = None if rv.default is None else rv.default[col]
    if axis is not None:
        check_direction(
            axis, d_model=rv.d_model, hook=rv.hook, model_id=rv.model_id, where="the role vectors"
        )
        u: Tensor | None = axis.unit(layer).double()
    elif default is not None:
        a = default - x.mean(dim=0)
        norm = torch.linalg.vector_norm(a)
        u = a / norm if bool(norm > 0) else None
    else:
        u = None
    fit = _fit_pca(x, scale, default, u)
    return PersonaPCA(
        layer=layer,
        scale=scale,
        names=rv.names,
        components=fit.components,
        explained_variance=fit.variance,
        explained_variance_ratio=fit.ratio,
        loadings=fit.loadings,
        mean=fit.mean,
        default_position=fit.default_position,
        axis_projections=None if u is None else x @ u,
        default_axis_projection=None if u is None or default is None else float(default @ u),
        cos_axis_pc1=None if u is None else float(u @ fit.components[0]),
        descriptions=rv.descriptions,
        counts=rv.counts,
        model_id=rv.model_id,
        hook=rv.hook,
    )


@dataclass(frozen=True, slots=True, eq=False)
class LayerProfile:
    """Per-layer summary: axis norm, cos(axis, PC1), PC1 variance share, dims for 70%."""

    layers: tuple[int, ...]
    axis_norm: Float[Tensor, " layer"]
    cos_axis_pc1: Float[Tensor, " layer"]
    pc1_variance: Float[Tensor, " layer"]
    dims_70: tuple[int, ...]
    scale: str = "center"
    model_id: str | None = None


def layer_profile(
    roles: RoleVectors, *, scale: Scale = "center", layers: Iterable[int] | None = None
) -> LayerProfile:
    """:func:`persona_pca` and the Assistant Axis at every layer of ``roles`` (needs defaults).

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> prof = layer_profile(role_vectors(store))  # doctest: +SKIP
        >>> prof.cos_axis_pc1  # paper: > 0.71 at middle layers  # doctest: +SKIP
    """
    chosen = roles.layers if layers is None else tuple(layers)
    rows = roles.axis_rows()
    fits = [persona_pca(roles, layer, scale=scale) for layer in chosen]
    return LayerProfile(
        layers=chosen,
        axis_norm=torch.linalg.vector_norm(rows[[roles.column(la) for la in chosen]], dim=-1),
        cos_axis_pc1=torch.tensor([f.cos_axis_pc1 for f in fits], dtype=torch.float64),
        pc1_variance=torch.stack([f.explained_variance_ratio[0] for f in fits]),
        dims_70=tuple(f.dims[70] for f in fits),
        scale=scale,
        model_id=roles.model_id,
    )


@dataclass(frozen=True, slots=True)
class PCA1:
    """PC1 of the role vectors at each layer, unit length, default at its positive end.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> PCA1(min_score=3, min_count=50).fit(store)  # doctest: +SKIP
    """

    min_score: int | None = 3
    min_count: int = 50
    scale: Scale = "center"
    layers: Iterable[int] | None = None

    def __post_init__(self) -> None:
        _check_filters(self.min_score, self.min_count)
        _check_scale(self.scale)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def fit(self, source: StoreSource, *, hook: str = "resid_post") -> Direction:
        rv = role_vectors(
            source,
            hook=hook,
            layers=self.layers,
            min_score=self.min_score,
            min_count=self.min_count,
        )
        fits = [persona_pca(rv, layer, scale=self.scale) for layer in rv.layers]
        return rv.to_direction(
            torch.stack([f.components[0] for f in fits]),
            method="pca",
            scale=self.scale,
            pc1_variance=[float(f.explained_variance_ratio[0]) for f in fits],
        )


@dataclass(frozen=True, slots=True, eq=False)
class CrossModelLoadings:
    """PC1 (or another component's) loadings of the roles two analyses share, paired."""

    names: tuple[str, ...]
    a: Float[Tensor, " role"]
    b: Float[Tensor, " role"]
    r: float
    flipped: bool
    model_a: str | None
    model_b: str | None
    layer_a: int
    layer_b: int
    component: int = 0


def compare_loadings(a: PersonaPCA, b: PersonaPCA, *, component: int = 0) -> CrossModelLoadings:
    """Pearson correlation of the loadings of the roles common to ``a`` and ``b``.

    Each PCA is fit on its own model's roles; only the loadings are paired (in ``a``'s order).
    When both analyses have a default vector their PC1 signs are already aligned (default at
    the positive end) and a negative ``r`` is reported as such; otherwise ``b`` is flipped when
    that makes ``r`` positive (``flipped=True``). The paper reports ``r > 0.92``.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> cmp = compare_loadings(persona_pca(rv_gemma, 22), persona_pca(rv_qwen, 32))  # doctest: +SKIP
        >>> cmp.r  # doctest: +SKIP
    """
    for name, p in (("a", a), ("b", b)):
        if not 0 <= component < p.loadings.shape[1]:
            raise ValueError(
                f"component {component} out of range for {name} ({p.loadings.shape[1]} components)"
            )
    index_b = {n: i for i, n in enumerate(b.names)}
    common = [(i, index_b[n]) for i, n in enumerate(a.names) if n in index_b]
    if len(common) < 3:
        raise ValueError(
            f"need at least 3 roles in common to correlate loadings, got {len(common)}"
        )
    la = a.loadings[[i for i, _ in common], component]
    lb = b.loadings[[j for _, j in common], component]
    ca, cb = la - la.mean(), lb - lb.mean()
    denom = torch.linalg.vector_norm(ca) * torch.linalg.vector_norm(cb)
    if not bool(denom > 0):
        raise ValueError("loadings are constant over the common roles; correlation undefined")
    r = float((ca @ cb) / denom)
    aligned = component == 0 and a.default_position is not None and b.default_position is not None
    flipped = not aligned and r < 0
    return CrossModelLoadings(
        names=tuple(a.names[i] for i, _ in common),
        a=la,
        b=-lb if flipped else lb,
        r=-r if flipped else r,
        flipped=flipped,
        model_a=a.model_id,
        model_b=b.model_id,
        layer_a=a.layer,
        layer_b=b.layer,
        component=component,
    )


def cross_model(
    store_a: StoreSource,
    store_b: StoreSource,
    *,
    layer_a: int,
    layer_b: int,
    min_score: int | None = 3,
    min_count: int = 50,
    scale: Scale = "center",
    hook: str = "resid_post",
) -> CrossModelLoadings:
    """:func:`compare_loadings` of two stores (e.g. two models), each with its own PCA.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> cmp = cross_model("runs/gemma", "runs/qwen", layer_a=22, layer_b=32)  # doctest: +SKIP
        >>> cmp.r, len(cmp.names)  # doctest: +SKIP
    """
    pcas = [
        persona_pca(
            role_vectors(s, hook=hook, layers=[la], min_score=min_score, min_count=min_count),
            la,
            scale=scale,
        )
        for s, la in ((store_a, layer_a), (store_b, layer_b))
    ]
    return compare_loadings(pcas[0], pcas[1])
