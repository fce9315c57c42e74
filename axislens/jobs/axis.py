"""The axis job (``axislens axis``): from a store, the axis, persona space, cap thresholds and
their stability, written as ``axis.safetensors``, ``cap.json``, ``summary.json`` and
``report.html``.

Example:
    >>> from axislens.jobs import AxisConfig
    >>> AxisConfig("runs/smol", "runs/smol-axis", layer=15).percentile
    0.25

    Needs a collected store of a real model (not run by the doctest suite).

    >>> result = run(AxisConfig("runs/smol", "runs/smol-axis"))  # doctest: +SKIP
    >>> result.to_pandas()  # one row per stored layer  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axislens.analysis.balance import question_offset
from axislens.analysis.space import layer_profile, persona_pca
from axislens.analysis.stability import stability_at, stability_table
from axislens.analysis.thresholds import cap_pools
from axislens.analysis.traits import TraitFilter, trait_cosines, trait_vectors
from axislens.analysis.vectors import role_projections, role_vectors
from axislens.directions import CapConfig, Direction
from axislens.display import as_floats, compact_repr, html_summary
from axislens.jobs.specs import SummaryMapping
from axislens.model.layers import parse_cap_layers
from axislens.plots.reports import Figures, axis_figures, axis_report_html
from axislens.presets import default_cap_layers, known_model
from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

    from axislens.analysis.space import LayerProfile, PersonaPCA, Scale
    from axislens.analysis.traits import TraitCosines
    from axislens.analysis.vectors import Adjust, RoleProjections, RoleVectors

__all__ = ["AxisConfig", "AxisResult", "run", "run_axis"]

FILES = ("axis.safetensors", "cap.json", "cap.safetensors", "summary.json", "report.html")
CAP_CONVENTION = "floor: h <- h - unit(v_l) * min(h . unit(v_l) - tau_l, 0)"


@dataclass(frozen=True, slots=True)
class AxisConfig:
    """What the axis job reads, where it writes, and how it estimates.

    Attributes:
        store: the activation store folder.
        out: the output folder (created).
        layer: the layer of the persona-space figures and the PCA table; ``None``: the known
            target layer (Gemma-2-27B: 22), else the middle stored layer.
        min_score: keep role responses judged at least this (``None``: every response).
        min_count: roles with fewer kept responses are left out.
        percentile: the cap threshold's percentile of the calibration projections.
        cap_layers: the capped layers: a list, :func:`~axislens.model.layers.parse_cap_layers`
            text, or ``None`` for the known cap window (else the depth rule).
        scale: persona-space scaling (``"center"`` or ``"center_l2"``).
        hook: the stored hook the vectors are read from.
        seed: draws the split halves of the stability check.
        adjust: the estimator (:func:`~axislens.analysis.vectors.role_vectors`).
    """

    store: str | os.PathLike[str]
    out: str | os.PathLike[str]
    layer: int | None = None
    min_score: int | None = 3
    min_count: int = 50
    percentile: float = 0.25
    cap_layers: str | Sequence[int] | None = None
    scale: Scale = "center"
    hook: str = "resid_post"
    seed: int = 0
    adjust: Adjust = "auto"

    def __post_init__(self) -> None:
        if self.scale not in ("center", "center_l2"):
            raise ValueError(f"unknown scale {self.scale!r}; expected 'center' or 'center_l2'")


@dataclass(frozen=True, slots=True, eq=False)
class AxisResult(SummaryMapping):
    """The axis job's outputs. It reads as the ``summary.json`` mapping (``result["pca"]``);
    the analysis objects are there when the job just ran, ``None`` after :meth:`load`.

    Attributes:
        out: the folder the files were written to.
        summary: the ``summary.json`` content.
        axis: the Assistant Axis (every stored layer).
        cap: the cap (default pool) at the cap layers.
        vectors, pca, profile, projections, traits: the analysis the figures were drawn from.
    """

    out: Path
    summary: dict[str, Any]
    axis: Direction
    cap: CapConfig
    vectors: RoleVectors | None = None
    pca: PersonaPCA | None = None
    profile: LayerProfile | None = None
    projections: RoleProjections | None = None
    traits: TraitCosines | None = None

    @property
    def layer(self) -> int:
        """The layer of the persona-space figures."""
        return int(self.summary["pca"]["layer"])

    def figures(self) -> Figures:
        """The report's figures (needs the analysis objects: a result that just ran)."""
        if self.pca is None or self.profile is None or self.projections is None:
            raise ValueError(f"{self.out}: a loaded AxisResult has no analysis objects; rerun")
        stab = self.summary["stability"]
        return axis_figures(self.pca, self.profile, self.projections, stab, self.traits)

    def to_pandas(self) -> pd.DataFrame:
        """One row per stored layer: cos(axis, PC1), axis norm, PC1 variance, dims for 70%, and
        the split-half cosines by item and by question."""
        import pandas as pd

        lay, stab = self.summary["layers"], self.summary["stability"]
        rows = {
            "cos_axis_pc1": lay["cos_axis_pc1"],
            "axis_norm": lay["axis_norm"],
            "pc1_variance": lay["pc1_variance"],
            "dims_70": lay["dims_70"],
        }
        at = [stability_at(stab, layer) for layer in lay["layer"]]
        rows |= {k: [a[k] for a in at] for k in ("by_item", "by_question")}
        return pd.DataFrame(rows, index=pd.Index(lay["layer"], name="layer"))

    def _facts(self) -> list[tuple[str, Any]]:
        s = self.summary
        return [
            ("model", s["model"]),
            ("layer", self.layer),
            ("roles", len(s["roles_used"])),
            ("estimator", s["estimator"]["name"]),
            ("cos(axis, PC1)", s["pca"]["cos_axis_pc1"]),
            ("split-half", tuple(stability_at(s["stability"], self.layer).values())),
            ("cap layers", tuple(s["cap"]["layers"])),
        ]

    def __repr__(self) -> str:
        return compact_repr("AxisResult", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("AxisResult", self._facts(), self.to_pandas())

    def save(self, out: str | os.PathLike[str] | None = None) -> Path:
        """Write the axis, the cap, ``summary.json`` and (when the figures can be drawn)
        ``report.html`` into ``out`` (default: :attr:`out`); returns the folder."""
        folder = Path(self.out if out is None else out)
        folder.mkdir(parents=True, exist_ok=True)
        self.axis.save(folder / "axis.safetensors")
        self.cap.save(folder / "cap.json")
        atomic_write_json(folder / "summary.json", self.summary)
        if self.pca is not None:
            page = axis_report_html(self.summary, self.figures())
            atomic_write_bytes(folder / "report.html", page.encode())
        return folder

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> AxisResult:
        """The result a run wrote into ``out`` (summary, axis and cap; no analysis objects)."""
        folder = Path(out)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        axis = Direction.load(folder / "axis.safetensors")
        return cls(folder, summary, axis, CapConfig.load(folder / "cap.json"))


def _target_layer(src: ActivationStore, layers: Sequence[int]) -> int:
    """The known target layer (Gemma-2-27B: 22) when stored, else the middle stored layer."""
    known = known_model(src.model_id) if src.model_id else None
    if known is not None and known.target_layer in layers:
        return known.target_layer
    return layers[len(layers) // 2]


def _cap_layers(cfg: AxisConfig, rv: RoleVectors, model_id: str | None) -> list[int]:
    n_model = rv.n_model_layers or max(rv.layers) + 1
    if cfg.cap_layers is None:
        return default_cap_layers(rv.layers, n_model, model_id)
    if isinstance(cfg.cap_layers, str):
        return parse_cap_layers(cfg.cap_layers, rv.layers, n_model)
    return list(cfg.cap_layers)


def fit_filters(
    src: ActivationStore, min_score: int | None, min_count: int
) -> tuple[int | None, int]:
    """The response filters the store can satisfy, so that `collect` then `axis` with default
    flags works: a store without judge scores uses every response (``min_score=None``), and
    ``min_count`` drops to the most responses any role has when no role reaches it. Each
    change is said in one :class:`UserWarning` line."""
    if not src.query(kind="role"):
        return min_score, min_count  # the analysis names what is missing
    if min_score is not None and not src.query(kind="role", min_score=0):
        warnings.warn(
            "the store has no judge scores (collected with --judge none): every response is "
            "used (min_score None)",
            UserWarning,
            stacklevel=2,
        )
        min_score = None
    counts = collections.Counter(r.role for r in src.query(kind="role", min_score=min_score))
    most = max(counts.values(), default=0)
    if 0 < most < min_count:
        warnings.warn(
            f"no role has {min_count} kept responses: min_count lowered to {most}, the most any "
            f"role has in this store",
            UserWarning,
            stacklevel=2,
        )
        min_count = most
    return min_score, min_count


def run(cfg: AxisConfig) -> AxisResult:
    """Run the axis job; writes its files into ``cfg.out`` and returns them.

    The summary's ``stability`` holds the split-half cosines by item and by question at every
    layer; ``estimator`` says which estimator ran and why; ``question_offset`` holds the design
    and the question-offset estimate b̂ (:func:`~axislens.analysis.balance.question_offset`);
    ``cap.pools`` the thresholds under the default, balanced and all pools.
    """
    src = ActivationStore.open(cfg.store)
    min_score, min_count = fit_filters(src, cfg.min_score, cfg.min_count)
    cfg = dataclasses.replace(cfg, min_score=min_score, min_count=min_count)
    kept: dict[str, Any] = {"min_score": cfg.min_score, "min_count": cfg.min_count}
    rv = role_vectors(src, hook=cfg.hook, adjust=cfg.adjust, **kept)
    layer = _target_layer(src, rv.layers) if cfg.layer is None else cfg.layer
    rv.column(layer)  # raises naming the stored layers
    axis = rv.axis()
    profile = layer_profile(rv, scale=cfg.scale)
    pca = persona_pca(rv, layer, scale=cfg.scale)
    proj = role_projections(rv, layer)
    pools = cap_pools(
        src, axis, layers=_cap_layers(cfg, rv, src.model_id), percentile=cfg.percentile
    )
    offset = question_offset(src, axis, **kept)
    stab = stability_table(src, rv.layers, seed=cfg.seed, hook=cfg.hook, adjust=cfg.adjust, **kept)
    tc = None
    if src.query(kind="trait_pos") and src.query(kind="trait_neg"):
        tfilter = TraitFilter() if cfg.min_score is not None else None  # > 50 / < 50
        tv = trait_vectors(src, hook=cfg.hook, layers=[layer], score_filter=tfilter)
        tc = trait_cosines(tv, axis, layer)
    summary = _summary(cfg, src, rv, pca, profile, proj, pools, offset.to_dict(), stab, tc)
    result = AxisResult(Path(cfg.out), summary, axis, pools["default"], rv, pca, profile, proj, tc)
    result.save()
    return result


def _summary(
    cfg: AxisConfig,
    src: ActivationStore,
    rv: RoleVectors,
    pca: PersonaPCA,
    profile: LayerProfile,
    proj: RoleProjections,
    pools: dict[str, CapConfig],
    offset: dict[str, Any],
    stab: dict[str, Any],
    tc: TraitCosines | None,
) -> dict[str, Any]:
    """The ``summary.json`` content."""
    cap = pools["default"]
    calibration = cap.provenance["calibration"]
    return {
        "store": str(src.root),
        "model": src.model_id,
        "hook": cfg.hook,
        "min_score": cfg.min_score,
        "min_count": cfg.min_count,
        "roles_used": dict(zip(rv.names, rv.counts, strict=True)),
        "roles_excluded": dict(rv.excluded),
        "n_default": rv.default_count,
        "estimator": {
            "adjust": cfg.adjust,
            "name": rv.provenance["estimator"],
            "reason": rv.provenance["estimator_reason"],
        },
        "question_offset": offset,
        "pca": {
            "layer": pca.layer,
            "scale": cfg.scale,
            "pc1_variance": float(pca.explained_variance_ratio[0]),
            "explained_variance_ratio": as_floats(pca.explained_variance_ratio[:50]),
            "dims": {str(k): v for k, v in pca.dims.items()},
            "cos_axis_pc1": pca.cos_axis_pc1,
            "default_position": as_floats(pca.default_position[:10])
            if pca.default_position is not None
            else None,
            "pc1_loadings": dict(zip(pca.names, as_floats(pca.pc1_loadings), strict=True)),
        },
        "layers": {
            "layer": list(profile.layers),
            "cos_axis_pc1": as_floats(profile.cos_axis_pc1),
            "axis_norm": as_floats(profile.axis_norm),
            "pc1_variance": as_floats(profile.pc1_variance),
            "dims_70": list(profile.dims_70),
        },
        "role_projections": {
            "layer": proj.layer,
            "default": proj.default,
            "roles": dict(zip(proj.names, as_floats(proj.values), strict=True)),
        },
        "cap": {
            "convention": CAP_CONVENTION,
            "layers": list(cap.layers),
            "thresholds": list(cap.thresholds),
            "percentile": cap.percentile,
            "n_items": calibration["n_items"],
            "unit": calibration["unit"],
            "pool": calibration["pool"],
            "pools": {k: list(c.thresholds) for k, c in pools.items()},
            "assumption": "unit, pool and percentile: docs/concepts.md, 'Cap thresholds'",
        },
        "stability": {"layer": pca.layer, "at_layer": stability_at(stab, pca.layer), **stab},
        "traits": None
        if tc is None
        else {
            "layer": pca.layer,
            "cosines": dict(zip(tc.names, as_floats(tc.cosines), strict=True)),
        },
        "files": list(FILES),
    }


def run_axis(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layer: int | None = None,
    min_score: int | None = 3,
    min_count: int = 50,
    percentile: float = 0.25,
    cap_layers: str | Sequence[int] | None = None,
    scale: Scale = "center",
    hook: str = "resid_post",
    seed: int = 0,
    adjust: Adjust = "auto",
) -> AxisResult:
    """:func:`run` with the :class:`AxisConfig` fields as keywords.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> result = run_axis("runs/smol", "runs/smol-axis", min_count=3)  # doctest: +SKIP
        >>> result["stability"]["at_layer"]  # doctest: +SKIP
    """
    return run(
        AxisConfig(
            store,
            out,
            layer,
            min_score,
            min_count,
            percentile,
            cap_layers,
            scale,
            hook,
            seed,
            adjust,
        )
    )
