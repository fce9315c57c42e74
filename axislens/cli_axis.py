"""``axislens axis``: the Assistant Axis, persona space and cap thresholds of a store, as files.

Writes into ``--out``:

- ``axis.safetensors``: the axis (:meth:`Direction.save`), one row per model layer;
- ``cap.json`` (+ ``cap.safetensors``, its direction): floor-convention cap thresholds at the
  cap layers (:func:`~axislens.analysis.calibrate_cap`);
- ``summary.json``: the numbers behind every figure (PC1 variance, dims for 70/80/90/95%,
  cos(axis, PC1) and axis norm per layer, role projections, thresholds, roles used/excluded);
- ``report.html``: one self-contained page (plotly.js embedded once, works offline).

Example (shell)::

    axislens axis --store runs/smol --min-score 3 --min-count 50 --out runs/smol/axis

Example (Python):
    >>> summary = run_axis("runs/smol", "runs/smol/axis", min_score=None)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import html
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axislens.cli import command

if TYPE_CHECKING:
    from axislens.persona_space import Scale

__all__ = ["default_cap_layers", "parse_cap_layers", "run_axis"]

CAP_DEPTH = (0.70, 0.85)
"""Default cap block as a fraction of model depth: the paper capped Qwen3-32B layers 46-53 of
64 (72-83%) and Llama-3.3-70B layers 56-71 of 80 (70-89%)."""


def default_cap_layers(stored: Sequence[int], n_model_layers: int) -> list[int]:
    """Stored layers at 70%-85% of the model's depth (at least the one nearest 77.5%)."""
    lo, hi = CAP_DEPTH
    chosen = [la for la in stored if lo <= la / n_model_layers < hi]
    if chosen:
        return chosen
    return [min(stored, key=lambda la: abs(la / n_model_layers - (lo + hi) / 2))]


def parse_cap_layers(text: str, stored: Sequence[int]) -> list[int]:
    """``"all"``; ``"21:26"`` (stop excluded, as in Python and the public ids); ``"21,23"``."""
    text = text.strip()
    try:
        if text == "all":
            return list(stored)
        if ":" in text:
            a, b = (int(p) for p in text.split(":"))
            return list(range(a, b))
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--cap-layers: expected 'all', a range such as 21:26 or a list such as 21,23; got {text!r}"
        ) from None


def _min_score(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0-3 or 'none', got {text!r}") from None


def _add_axis_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(help_text="compute the Assistant Axis, persona space and cap thresholds")
    p.add_argument("--store", required=True, help="activation store folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layer", type=int, default=None, help="layer for PCA (default: middle)")
    p.add_argument(
        "--min-score",
        type=_min_score,
        default=3,
        help="judge score a role response needs (0-3), or 'none' for all responses (default 3)",
    )
    p.add_argument("--min-count", type=int, default=50, help="responses a role needs (default 50)")
    p.add_argument(
        "--percentile", type=float, default=0.25, help="cap quantile, a fraction (default 0.25)"
    )
    p.add_argument(
        "--cap-layers", default=None, help="'all', '21:26' or '21,23' (default: 70-85%% depth)"
    )
    p.add_argument("--scale", default="center", choices=["center", "center_l2"])
    p.add_argument("--hook", default="resid_post")


@command("axis", _add_axis_args)
def _cmd_axis(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_axis(
            args.store,
            args.out,
            layer=args.layer,
            min_score=args.min_score,
            min_count=args.min_count,
            percentile=args.percentile,
            cap_layers=args.cap_layers,
            scale=args.scale,
            hook=args.hook,
        )
    for w in caught:
        print(f"note: {w.message}")
    pca = summary["pca"]
    print(
        f"{summary['model']}: {len(summary['roles_used'])} roles used, "
        f"{len(summary['roles_excluded'])} excluded, {summary['n_default']} default responses\n"
        f"layer {pca['layer']}: PC1 explains {100 * pca['pc1_variance']:.1f}% of variance, "
        f"{pca['dims']['70']} dims reach 70%, cos(axis, PC1) = {pca['cos_axis_pc1']:.3f}\n"
        f"cap: layers {summary['cap']['layers']} at the {100 * args.percentile:g}th percentile\n"
        f"wrote {', '.join(summary['files'])} to {args.out}"
    )
    return 0


def _floats(t: Any) -> list[float]:
    return [float(v) for v in t]


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
) -> dict[str, Any]:
    """Compute everything ``axislens axis`` writes; returns the ``summary.json`` content."""
    from axislens import plots
    from axislens.analysis import role_projections, role_vectors
    from axislens.persona_space import layer_profile, persona_pca
    from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json
    from axislens.thresholds import calibrate_cap
    from axislens.traits import trait_cosines, trait_vectors

    if scale not in ("center", "center_l2"):
        raise ValueError(f"unknown scale {scale!r}; expected 'center' or 'center_l2'")
    src = ActivationStore.open(store)
    out_dir = Path(out)
    rv = role_vectors(src, hook=hook, min_score=min_score, min_count=min_count)
    layer = rv.layers[len(rv.layers) // 2] if layer is None else layer
    rv.column(layer)  # raises naming the stored layers
    axis = rv.axis()
    n_model = rv.n_model_layers or max(rv.layers) + 1
    caps = (
        default_cap_layers(rv.layers, n_model)
        if cap_layers is None
        else parse_cap_layers(cap_layers, rv.layers)
        if isinstance(cap_layers, str)
        else list(cap_layers)
    )
    profile = layer_profile(rv, scale=scale)
    pca = persona_pca(rv, layer, scale=scale)
    proj = role_projections(rv, layer)
    cap = calibrate_cap(src, axis, layers=caps, percentile=percentile)
    figures = [
        plots.variance_bars(pca),
        plots.persona_space_scatter(pca, dims=2),
        *([plots.persona_space_scatter(pca, dims=3)] if pca.loadings.shape[1] >= 3 else []),
        plots.axis_layer_lines(profile),
        plots.role_projection_strip(proj),
    ]
    traits: dict[str, Any] | None = None
    if src.query(kind="trait_pos") and src.query(kind="trait_neg"):
        tc = trait_cosines(trait_vectors(src, hook=hook, layers=[layer]), axis, layer)
        traits = {"layer": layer, "cosines": dict(zip(tc.names, _floats(tc.cosines), strict=True))}
        figures.append(plots.trait_cosine_bars(tc))

    out_dir.mkdir(parents=True, exist_ok=True)
    axis.save(out_dir / "axis.safetensors")
    cap.save(out_dir / "cap.json")
    summary: dict[str, Any] = {
        "store": str(src.root),
        "model": src.model_id,
        "hook": hook,
        "min_score": min_score,
        "min_count": min_count,
        "roles_used": dict(zip(rv.names, rv.counts, strict=True)),
        "roles_excluded": dict(rv.excluded),
        "n_default": rv.default_count,
        "pca": {
            "layer": layer,
            "scale": scale,
            "pc1_variance": float(pca.explained_variance_ratio[0]),
            "explained_variance_ratio": _floats(pca.explained_variance_ratio[:50]),
            "dims": {str(k): v for k, v in pca.dims.items()},
            "cos_axis_pc1": pca.cos_axis_pc1,
            "default_position": _floats(pca.default_position[:10])
            if pca.default_position is not None
            else None,
            "pc1_loadings": dict(zip(pca.names, _floats(pca.pc1_loadings), strict=True)),
        },
        "layers": {
            "layer": list(profile.layers),
            "cos_axis_pc1": _floats(profile.cos_axis_pc1),
            "axis_norm": _floats(profile.axis_norm),
            "pc1_variance": _floats(profile.pc1_variance),
            "dims_70": list(profile.dims_70),
        },
        "role_projections": {
            "layer": layer,
            "default": proj.default,
            "roles": dict(zip(proj.names, _floats(proj.values), strict=True)),
        },
        "cap": {
            "convention": "floor: h <- h - unit(v_l) * min(h . unit(v_l) - tau_l, 0)",
            "layers": list(cap.layers),
            "thresholds": list(cap.thresholds),
            "percentile": cap.percentile,
            "n_items": cap.provenance["calibration"]["n_items"],
        },
        "traits": traits,
        "files": ["axis.safetensors", "cap.json", "cap.safetensors", "summary.json", "report.html"],
    }
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_bytes(out_dir / "report.html", _report(summary, figures).encode())
    return summary


def _report(summary: dict[str, Any], figures: Sequence[Any]) -> str:
    """One HTML page: a summary table, then every figure (plotly.js embedded in the first)."""
    pca = summary["pca"]
    rows = [
        ("model", summary["model"]),
        ("store", summary["store"]),
        (
            "roles used / excluded",
            f"{len(summary['roles_used'])} / {len(summary['roles_excluded'])}",
        ),
        ("default responses", summary["n_default"]),
        (f"PC1 variance (layer {pca['layer']})", f"{100 * pca['pc1_variance']:.1f}%"),
        ("dims for 70/80/90/95%", " / ".join(str(v) for v in pca["dims"].values())),
        ("cos(axis, PC1)", f"{pca['cos_axis_pc1']:.3f}"),
        ("cap layers", summary["cap"]["layers"]),
        ("cap thresholds", ", ".join(f"{t:.3f}" for t in summary["cap"]["thresholds"])),
    ]
    if summary["roles_excluded"]:
        rows.append(("roles excluded (count)", json.dumps(summary["roles_excluded"])))
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_height="560px")
        for i, fig in enumerate(figures)
    ]
    title = html.escape(f"axislens axis report: {summary['model']}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        "</style></head><body>"
        f"<h1>{title}</h1><table>{table}</table>{''.join(parts)}</body></html>\n"
    )
