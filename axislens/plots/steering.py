"""Figures for sweeps and attribution: plotly figures and a circuitsvis token view.

Every function takes a result object (:class:`~axislens.evals.sweeps.SweepResult`,
:class:`~axislens.evals.attribution.Attribution`, :class:`~axislens.evals.attribution.LogitLens`) and
returns a figure without rendering it, so tests inspect ``fig.data``. No model, no
transformer_lens import.

Example:
    The results come from a sweep and an attribution on a real model (not run by the doctest
    suite); ``token_view`` renders in Jupyter.

    >>> fig = sweep_heatmap(result, "dproj@29")  # doctest: +SKIP
    >>> fig.write_html("sweep.html")  # doctest: +SKIP
    >>> token_view(attr)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

if TYPE_CHECKING:
    from axislens.evals.attribution import Attribution, LogitLens
    from axislens.evals.sweeps import SweepResult

__all__ = [
    "ablation_bars",
    "attribution_bars",
    "head_heatmap",
    "logit_lens_bars",
    "sweep_heatmap",
    "token_view",
]


def sweep_heatmap(result: SweepResult, metric: str) -> go.Figure:
    """Heatmap of one metric: strength (rows) x layer (columns)."""
    z = result.table(metric).T  # [strength, layer]
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=[str(la) for la in result.layers],
            y=[f"{s:g}" for s in result.strengths],
            colorscale="RdBu",
            zmid=0.0 if metric != "kl" else None,
            colorbar={"title": metric},
            hovertemplate="layer %{x}<br>strength %{y}<br>" + metric + " %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{result.op} at {result.hook}: {metric}",
        xaxis_title="layer",
        yaxis_title="strength",
    )
    return fig


def ablation_bars(result: SweepResult, metric: str | None = None) -> go.Figure:
    """Bar chart of one metric per ablated layer (default: the first ``drop@`` metric)."""
    if metric is None:
        drops = [m for m in result.metrics if m.startswith("drop@")]
        if not drops:
            raise ValueError("this sweep has no drop@ metric; pass metric=...")
        metric = drops[0]
    values = result.table(metric)[:, 0]
    fig = go.Figure(go.Bar(x=list(result.layers), y=values.tolist(), name=metric))
    fig.update_layout(
        title=f"{result.op} per layer: {metric}", xaxis_title="layer", yaxis_title=metric
    )
    return fig


def attribution_bars(attr: Attribution, top_k: int = 20) -> go.Figure:
    """Horizontal bars of the ``top_k`` components by absolute span-mean projection."""
    top = attr.top(top_k)[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in top],
            y=[label for label, _ in top],
            orientation="h",
            marker_color=["#2166ac" if v >= 0 else "#b2182b" for _, v in top],
        )
    )
    fig.update_layout(
        title=f"direct attribution to the axis at {attr.hook} {attr.layer} "
        f"(total {attr.total_mean():.3g})",
        xaxis_title="projection on the axis (span mean)",
        height=max(300, 22 * len(top) + 120),
    )
    return fig


def head_heatmap(attr: Attribution) -> go.Figure:
    """Layer x head heatmap of the heads' span-mean projections."""
    m = attr.head_matrix()
    fig = go.Figure(
        go.Heatmap(
            z=m.tolist(),
            x=[f"H{h}" for h in range(m.shape[1])],
            y=[f"L{la}" for la in range(m.shape[0])],
            colorscale="RdBu",
            zmid=0.0,
            colorbar={"title": "projection"},
        )
    )
    fig.update_layout(title=f"heads' direct attribution at {attr.hook} {attr.layer}")
    return fig


def logit_lens_bars(lens: LogitLens) -> go.Figure:
    """Two bar traces: promoted tokens (positive scores) and suppressed ones."""
    fig = go.Figure(
        [
            go.Bar(
                x=[repr(t) for t, _ in lens.promoted],
                y=[s for _, s in lens.promoted],
                name="promoted",
            ),
            go.Bar(
                x=[repr(t) for t, _ in lens.suppressed],
                y=[s for _, s in lens.suppressed],
                name="suppressed",
            ),
        ]
    )
    fig.update_layout(title=f"logit lens of the axis at layer {lens.layer}", yaxis_title="logit")
    return fig


def token_view(attr: Attribution, component: str | None = None) -> Any:
    """The circuitsvis ``colored_tokens`` of the per-token projection (the residual's, or one
    component's by label)."""
    from circuitsvis.tokens import colored_tokens

    if component is None:
        values = attr.total
    else:
        if component not in attr.labels:
            raise ValueError(f"unknown component {component!r}; e.g. {list(attr.labels[:4])}")
        values = attr.per_token[attr.labels.index(component)]
    bound = float(values.abs().max()) or 1.0
    return colored_tokens(
        list(attr.tokens), values.float().tolist(), min_value=-bound, max_value=bound
    )
