"""The HTML reports of the jobs: ``axislens axis``'s ``report.html`` and the demo's.

A report is a summary table (each row with a note saying what it means) followed by captioned
figures. The builders take the JSON summary a job wrote and the figures it made, and return the
page as a string; writing it is the job's business. Model-free: a report can be rebuilt from a
saved summary long after the model is gone.

Example:
    >>> table = {"layers": [4], "by_item": [0.91], "by_question": None}
    >>> stability_label(table, 4)
    'split-half cos (item / question), layer 4: +0.910 / n/a'
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from axislens.analysis.stability import SPLITS, stability_at
from axislens.plots.captions import figure_html
from axislens.plots.persona import (
    axis_layer_lines,
    persona_space_scatter,
    role_projection_strip,
    trait_cosine_bars,
    variance_bars,
)

if TYPE_CHECKING:
    from axislens.analysis.space import LayerProfile, PersonaPCA
    from axislens.analysis.traits import TraitCosines
    from axislens.analysis.vectors import RoleProjections

__all__ = [
    "Figures",
    "axis_figures",
    "axis_report_html",
    "balance_rows",
    "demo_report_html",
    "demo_table_rows",
    "figures_html",
    "stability_by_layer_label",
    "stability_label",
    "stability_row",
    "table_text",
    "weak_axis_warning",
]

WEAK_SPLIT_HALF = 0.5
"""Below this split-half cosine (by item or by question, at the reported layer) a report
warns that its axis is weak: half the data would give a direction this far from it."""

Figures = list[tuple[Any, str]]
"""``(plotly figure, note)`` pairs, shown in order; the note goes above the plot."""


# --------------------------------------------------------------------------- split-half notes


def _cos_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _stability_pair(table: dict[str, Any], layer: int) -> str:
    """``"+0.991 / +0.874"``: the split-half cosines (item / question) at ``layer``."""
    return " / ".join(_cos_text(v) for v in stability_at(table, layer).values())


def stability_label(table: dict[str, Any], layer: int) -> str:
    """The one-line note shown beside a figure of ``layer`` (a
    :func:`~axislens.analysis.stability.stability_table`)."""
    return f"split-half cos (item / question), layer {layer}: {_stability_pair(table, layer)}"


def stability_by_layer_label(table: dict[str, Any], layers: Sequence[int]) -> str:
    """The note beside a figure of every layer: the cosines at each plotted layer."""
    pairs = ", ".join(f"{layer}: {_stability_pair(table, layer)}" for layer in layers)
    return f"split-half cos (item / question) by layer (dotted lines): {pairs}"


def stability_row(table: dict[str, Any], layer: int) -> tuple[str, str]:
    """The summary-table row of the split-half cosines at ``layer`` (a split that could not be
    made shows ``n/a`` and why)."""
    why = "; ".join(
        f"{by}: {table[f'by_{by}_reason']}" for by in SPLITS if table.get(f"by_{by}_reason")
    )
    value = _stability_pair(table, layer) + (f" ({why})" if why else "")
    return f"split-half cos (item / question), layer {layer}", value


def _with_stability_traces(fig: Any, table: dict[str, Any]) -> Any:
    """Add the per-layer split-half cosines to :func:`~axislens.plots.axis_layer_lines`'s
    cosine axis (dotted lines); returns ``fig``."""
    for by in SPLITS:
        if table[f"by_{by}"] is not None:
            fig.add_scatter(
                x=table["layers"],
                y=table[f"by_{by}"],
                mode="lines+markers",
                line={"dash": "dot"},
                name=f"split-half cos ({by})",
                secondary_y=False,
            )
    return fig


def weak_axis_warning(table: dict[str, Any], layer: int) -> str | None:
    """The warning a report shows above everything when a split-half cosine at ``layer`` is
    below :data:`WEAK_SPLIT_HALF` (or could not be computed), else ``None``.

    Example:
        >>> weak_axis_warning({"layers": [4], "by_item": [0.9], "by_question": [0.1]}, 4)[:40]
        'weak axis at layer 4: split-half cosine '
        >>> weak_axis_warning({"layers": [4], "by_item": [0.9], "by_question": [0.8]}, 4) is None
        True
    """
    at = stability_at(table, layer)
    weak = [
        f"{k.removeprefix('by_')} {_cos_text(v)}"
        for k, v in at.items()
        if v is None or v < WEAK_SPLIT_HALF
    ]
    if not weak:
        return None
    return (
        f"weak axis at layer {layer}: split-half cosine {', '.join(weak)} (below "
        f"{WEAK_SPLIT_HALF} or not computable). Half of the data would give another direction: "
        "read the figures below as noise, or as specific to the questions asked, until more "
        "data raises it."
    )


def _warning_html(table: dict[str, Any], layer: int) -> str:
    text = weak_axis_warning(table, layer)
    return "" if text is None else f"<p class='warning'>{html.escape(text)}</p>"


# --------------------------------------------------------------------------- figures


def axis_figures(
    pca: PersonaPCA,
    profile: LayerProfile,
    projections: RoleProjections,
    stability: dict[str, Any],
    traits: TraitCosines | None = None,
) -> Figures:
    """The figures of an axis summary, each with the axis's split-half cosines at its layer:
    variance bars, the persona space in 2-D (and 3-D when there are three components), the
    per-layer profile with the cosines as dotted lines, the role projections, and the trait
    cosines when the store has traits."""
    at = stability_label(stability, pca.layer)
    return [
        (variance_bars(pca), at),
        (persona_space_scatter(pca, dims=2), at),
        *([(persona_space_scatter(pca, dims=3), at)] if pca.loadings.shape[1] >= 3 else []),
        (
            _with_stability_traces(axis_layer_lines(profile), stability),
            stability_by_layer_label(stability, profile.layers),
        ),
        (role_projection_strip(projections), at),
        *([(trait_cosine_bars(traits), at)] if traits is not None else []),
    ]


def figures_html(figures: Figures, **kwargs: Any) -> str:
    """Every ``(figure, note)`` as a captioned ``<figure>`` with its note above the plot
    (plotly.js embedded in the first)."""
    return "".join(
        figure_html(fig, include_plotlyjs=(i == 0), note=note, **kwargs)
        for i, (fig, note) in enumerate(figures)
    )


# --------------------------------------------------------------------------- table rows


def _design_row(offset: dict[str, Any]) -> tuple[str, str]:
    """The summary-table row of the question design: name, questions per side, overlap."""
    name = (offset.get("design") or {}).get("name", "not recorded")
    return (
        "question design",
        f"{name}: default {offset['default_questions']} questions, roles "
        f"{offset['role_questions']}, overlap {offset['overlap']}, weight gap "
        f"{offset['weight_gap']:.2f}",
    )


def _estimator_row(est: dict[str, Any]) -> tuple[str, str]:
    return "estimator", f"{est['name']} ({est['reason']})"


def _offset_row(offset: dict[str, Any], layer: int) -> tuple[str, str]:
    """|b-hat| / |axis| and cos(axis, b-hat) at ``layer`` (or why they are not available)."""
    label = f"question offset |b|/|axis|, cos (layer {layer})"
    if offset["offset_over_axis"] is None:
        return label, f"n/a ({offset['reason']})"
    i = offset["layers"].index(layer)
    cos = offset["cos_axis_offset"][i]
    return label, f"{offset['offset_over_axis'][i]:.3f}, {_cos_text(cos)}"


def balance_rows(summary: dict[str, Any], layer: int) -> list[tuple[str, str]]:
    """The design, estimator and question-offset rows of an axis summary at ``layer``."""
    return [
        _design_row(summary["question_offset"]),
        _estimator_row(summary["estimator"]),
        _offset_row(summary["question_offset"], layer),
    ]


def _pool_rows(cap: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per cap pool: the thresholds over the cap layers (the first is the one used)."""
    pools = cap.get("pools") or {cap["pool"].get("name", "?"): cap["thresholds"]}
    used = cap["pool"].get("name")
    return [
        (
            f"cap thresholds, {name} pool{' (used)' if name == used else ''}",
            ", ".join(f"{t:.3f}" for t in taus),
        )
        for name, taus in pools.items()
    ]


_REPORT_CSS = (
    "p.warning{background:#fff3cd;border:1px solid #e0b000;padding:.8em 1em;font-weight:bold}"
    "td.note{color:#555;font-size:90%;padding-left:1.5em}"
    "p.figure-note{color:#333;margin:1.5em 0 0 1em;font-weight:bold}"
    "figcaption{color:#333;margin:0 0 2em 1em;font-style:italic}"
)

# What each summary-table row means (matched by the start of its label), shown beside it.
_ROW_NOTES = (
    ("model", "the model the responses were generated with and read from"),
    ("store", "the activation store the vectors were read from"),
    ("persona catalogue", "where the roles, system prompts and questions came from"),
    ("roles used", "roles with enough kept responses / roles left out for too few"),
    ("responses / roles used", "generated responses (roles and default) / roles kept for the axis"),
    ("default responses", "responses to the default (no persona) prompts, the Assistant end"),
    ("PC1 variance", "share of the role vectors' variance on the first principal component"),
    ("dims for", "principal components needed to explain that share of the variance"),
    ("cos(axis, PC1)", "cosine between the Assistant Axis (default - mean of roles) and PC1"),
    ("split-half cos", "the cosine between the axes computed from two disjoint halves of the "
     "responses (halved by item / by question): near 1 = stable, near 0 = noise"),
    ("cap layers", "layers whose projection on the axis is held at or above the threshold"),
    ("question design", "which questions the roles and the default set answered: shared and "
     "rotated designs weigh them alike, nested does not"),
    ("estimator", "plain means, or question-adjusted (role effects with the default set's "
     "question mix) when the two sides weigh the questions differently"),
    ("question offset", "|b|/|axis|: how long an axis the question mix alone could make "
     "(0 on a balanced design), and its cosine with the axis"),
    ("cap thresholds,", "per-layer floor tau under each pool: default = the Assistant's own "
     "responses (used), balanced = roles and default weighted equally, all = every item"),
    ("cap threshold", "per-layer floor tau: that percentile of the stored responses' projections"),
    ("projection drop", "unsteered minus steered-away projection of one reply: > 0 means steering "
     "moved it away from the Assistant end as intended"),
    ("replay mean projection", "the replayed drift conversation's assistant turns, mean projection "
     "on the axis at this layer, without and with the cap: capped should be the higher"),
    ("stage seconds", "wall time of each stage"),
    ("peak memory", "largest resident memory of this process"),
    ("roles excluded", "roles left out, with their kept-response counts"),
)  # fmt: skip


def _row_note(label: str) -> str:
    """The explanation of a summary-table row (empty when there is none)."""
    return next((note for start, note in _ROW_NOTES if label.startswith(start)), "")


def _table_html(rows: Sequence[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td>"
        f"<td class='note'>{html.escape(_row_note(str(k)))}</td></tr>"
        for k, v in rows
    )


def table_text(rows: Sequence[tuple[str, str]]) -> str:
    """The rows as a plain-text table between two rules (what the demo prints).

    Example:
        >>> print(table_text([("model", "m"), ("layers", "3")]))  # doctest: +NORMALIZE_WHITESPACE
        ==============================================
        model   m
        layers  3
        ==============================================
    """
    width = max(len(k) for k, _ in rows)
    rule = "=" * (width + 40)
    return "\n".join([rule, *(f"{k:<{width}}  {v}" for k, v in rows), rule])


# --------------------------------------------------------------------------- pages


def axis_report_html(summary: dict[str, Any], figures: Figures) -> str:
    """``axislens axis``'s page: a summary table, then every ``(figure, note)`` (plotly.js
    embedded in the first; the note, above the plot, gives the split-half cosine at its
    layer)."""
    pca = summary["pca"]
    stab = summary["stability"]
    rows: list[tuple[str, Any]] = [
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
        *balance_rows(summary, stab["layer"]),
        stability_row(stab, stab["layer"]),
        ("cap layers", summary["cap"]["layers"]),
        *_pool_rows(summary["cap"]),
    ]
    if summary["roles_excluded"]:
        rows.append(("roles excluded (count)", json.dumps(summary["roles_excluded"])))
    parts = figures_html(figures, default_height="560px")
    title = html.escape(f"axislens axis report: {summary['model']}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        f"{_REPORT_CSS}</style></head><body>"
        f"<h1>{title}</h1>{_warning_html(stab, stab['layer'])}<table>{_table_html(rows)}</table>"
        f"{parts}</body></html>\n"
    )


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def demo_table_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The demo summary's table: the axis, its stability, the cap, steering and the replay."""
    cap = s["cap"]
    mid = s["middle_layer"]
    measure = s["steering"]["measure_layer"]
    return [
        ("model", s["model"]["model_id"]),
        ("persona catalogue", str(s.get("personas", {}).get("source", "?"))),
        ("responses / roles used", f"{s['items']['responses']} / {s['roles_used']}"),
        (f"PC1 variance (layer {mid})", f"{100 * s['pc1_variance']:.1f}%"),
        ("dims for 70% variance", str(s["dims_70"])),
        (f"cos(axis, PC1) (layer {mid})", f"{s['cos_axis_pc1_middle']:+.3f}"),
        *(balance_rows(s, mid) if "question_offset" in s else []),
        *([stability_row(s["stability"], mid)] if "stability" in s else []),
        (
            f"cap threshold (p{cap['percentile']:g}, layers {cap['layers'][0]}-{cap['layers'][-1]}"
            f", {cap.get('pool', {}).get('name', 'all')} pool)",
            ", ".join(f"{t:.2f}" for t in cap["thresholds"]),
        ),
        (
            f"projection drop, steering {-s['config']['steer_coeff']:+g} (layer {measure})",
            f"{s['steering']['projection_drop_negative']:+.3f}",
        ),
        (
            f"replay mean projection unsteered / capped (layer {measure})",
            f"{_mean(s['replay']['unsteered']['means']):+.3f} / "
            f"{_mean(s['replay']['capped']['means']):+.3f}",
        ),
        (
            "stage seconds",
            ", ".join(f"{k.split(' (')[0]} {v}" for k, v in s["stage_seconds"].items()),
        ),
        ("peak memory (RSS)", f"{s['peak_rss_gib']} GiB"),
    ]


def demo_report_html(summary: dict[str, Any], figures: Figures) -> str:
    """The demo's page: the summary table, the steering replies, then every ``(figure, note)``
    (the note, above the plot, gives the axis's split-half cosine at its layer)."""
    replies = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{summary['steering']['projection'][k]:+.3f}</td>"
        f"<td>{html.escape(v)}</td></tr>"
        for k, v in summary["steering"]["replies"].items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>axislens demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "th{text-align:left;padding-right:1em}"
        f"td{{vertical-align:top}}{_REPORT_CSS}</style></head><body>"
        "<h1>axislens demo: the Assistant Axis</h1>"
        f"{_warning_html(summary['stability'], summary['middle_layer'])}"
        f"<table>{_table_html(demo_table_rows(summary))}</table><h2>Steering one prompt</h2>"
        f"<table>{replies}</table><h2>Figures</h2>{figures_html(figures)}</body></html>"
    )
