"""Plotly figures of persona space and the Assistant Axis, built from result objects.

Each function takes a result of :mod:`axislens.analysis.vectors` / :mod:`axislens.analysis.space` and
returns a ``plotly.graph_objects.Figure``; nothing is computed here beyond sorting and
formatting, so the numbers in a figure's traces are exactly the result's numbers.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> pca = persona_pca(role_vectors(store), 15)  # doctest: +SKIP
    >>> variance_bars(pca).show()  # doctest: +SKIP
    >>> persona_space_scatter(pca, dims=3).write_html("space.html")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from axislens.display import as_floats
from axislens.plots.captions import with_caption

if TYPE_CHECKING:
    from axislens.analysis.space import CrossModelLoadings, LayerProfile, PersonaPCA
    from axislens.analysis.traits import TraitCosines
    from axislens.analysis.vectors import RoleProjections

__all__ = [
    "axis_layer_lines",
    "cross_model_scatter",
    "persona_space_scatter",
    "role_projection_strip",
    "trait_cosine_bars",
    "variance_bars",
]

_COLORSCALE = "RdBu"  # red = role-like (low projection), blue = Assistant-like (high)


def _extremes(values: list[float], n: int) -> set[int]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    return set(order[:n]) | set(order[-n:]) if n > 0 else set()


def variance_bars(pca: PersonaPCA, *, max_components: int | None = 30) -> go.Figure:
    """Explained variance per component (bars, %) and its cumulative sum (line, %).

    Dashed lines mark 70/80/90/95% with the number of components each needs.
    """
    ratio = as_floats(pca.explained_variance_ratio)
    cum = as_floats(torch.cumsum(pca.explained_variance_ratio, dim=0))
    k = len(ratio) if max_components is None else min(len(ratio), max_components)
    xs = list(range(1, k + 1))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=[100 * r for r in ratio[:k]], name="component", opacity=0.7))
    fig.add_trace(
        go.Scatter(x=xs, y=[100 * c for c in cum[:k]], mode="lines+markers", name="cumulative")
    )
    for pct, dims in pca.dims.items():
        fig.add_hline(y=pct, line_dash="dash", line_width=1, opacity=0.5)
        fig.add_annotation(
            x=1, xref="paper", xanchor="right", y=pct, yshift=-10, showarrow=False,
            text=f"{pct}%: {dims} dims", font={"size": 10, "color": "gray"},
        )  # fmt: skip
    fig.update_layout(
        title=f"Persona space variance, layer {pca.layer} ({pca.scale})",
        xaxis_title="principal component",
        yaxis_title="variance explained (%)",
        yaxis_range=[0, 102],
    )
    return with_caption(
        fig,
        "Cumulative variance explained by each principal component of the role vectors: a tall "
        "first bar means one direction (PC1) dominates persona space.",
    )


def persona_space_scatter(
    pca: PersonaPCA, *, dims: Literal[2, 3] = 2, label_extremes: int = 5
) -> go.Figure:
    """Roles on the first 2 or 3 PCs, coloured by axis projection; the default as a star.

    The ``label_extremes`` roles at each end of the axis projection (PC1 loading when the
    result has no axis) are labelled; hover shows name, description and projection.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    n_comp = int(pca.loadings.shape[1])
    if n_comp < dims:
        raise ValueError(f"need {dims} components, the PCA has {n_comp} (too few roles)")
    coords = [as_floats(pca.loadings[:, j]) for j in range(dims)]
    has_axis = pca.axis_projections is not None
    color = as_floats(
        pca.axis_projections if pca.axis_projections is not None else pca.loadings[:, 0]
    )
    label = _extremes(color, label_extremes)
    desc = pca.descriptions or ("",) * len(pca.names)
    hover = [
        f"<b>{n}</b><br>{d}<br>{'axis projection' if has_axis else 'PC1'}: {c:.3g}"
        for n, d, c in zip(pca.names, desc, color, strict=True)
    ]
    text = [n if i in label else "" for i, n in enumerate(pca.names)]
    marker = {
        "color": color,
        "colorscale": _COLORSCALE,
        "colorbar": {"title": "axis projection" if has_axis else "PC1"},
        "size": 7 if dims == 2 else 4,
    }
    common = {"mode": "markers+text", "name": "roles", "text": text, "hovertext": hover,
              "hoverinfo": "text", "marker": marker}  # fmt: skip
    ratio = as_floats(pca.explained_variance_ratio[:dims])
    titles = [f"PC{j + 1} ({100 * ratio[j]:.1f}%)" for j in range(dims)]
    fig = go.Figure()
    if dims == 2:
        fig.add_trace(go.Scatter(x=coords[0], y=coords[1], textposition="top center", **common))
        fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
    else:
        fig.add_trace(go.Scatter3d(x=coords[0], y=coords[1], z=coords[2], **common))
        fig.update_layout(
            scene={"xaxis_title": titles[0], "yaxis_title": titles[1], "zaxis_title": titles[2]}
        )
    if pca.default_position is not None:
        d = as_floats(pca.default_position[:dims])
        star = {"size": 16 if dims == 2 else 8, "symbol": "star" if dims == 2 else "diamond",
                "color": "black"}  # fmt: skip
        kw = {"mode": "markers+text", "name": "default", "text": ["default"], "marker": star}
        if dims == 2:
            fig.add_trace(go.Scatter(x=[d[0]], y=[d[1]], textposition="bottom center", **kw))
        else:
            fig.add_trace(go.Scatter3d(x=[d[0]], y=[d[1]], z=[d[2]], **kw))
    fig.update_layout(title=f"Persona space, layer {pca.layer} ({len(pca.names)} roles)")
    # The legend (roles, default) under the plot, so it never sits on the colourbar's title.
    fig.update_layout(
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.15, "yanchor": "top"},
        margin={"b": 110},
    )
    return with_caption(
        fig,
        "Each dot is a role, coloured by its projection on the Assistant Axis (blue = "
        "Assistant-like): assistant-like roles sit near the default (star) end of PC1.",
    )


def axis_layer_lines(profile: LayerProfile) -> go.Figure:
    """cos(axis, PC1) (left axis) and the axis norm |a_l| (right axis) by layer."""
    layers = list(profile.layers)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(x=layers, y=as_floats(profile.cos_axis_pc1), mode="lines+markers",
                   name="cos(axis, PC1)"),
        secondary_y=False,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=layers, y=as_floats(profile.axis_norm), mode="lines+markers", name="|axis|"),
        secondary_y=True,
    )
    fig.update_layout(title="Assistant Axis by layer", xaxis_title="layer")
    fig.update_yaxes(title_text="cos(axis, PC1)", range=[-1.05, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="axis norm", secondary_y=True)
    return with_caption(
        fig,
        "Where |cos(axis, PC1)| is near 1 the Assistant Axis is the main direction of persona "
        "variation at that layer; the norm shows where the axis is strongest.",
    )


def role_projection_strip(proj: RoleProjections, *, label_extremes: int = 8) -> go.Figure:
    """Roles ranked along the axis (x = projection, sorted), the default as a dashed line."""
    values = as_floats(proj.values)
    order = sorted(range(len(values)), key=lambda i: values[i])
    label = _extremes(values, label_extremes)
    desc = proj.descriptions or ("",) * len(values)
    xs = [values[i] for i in order]
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=[0.0] * len(xs),
            mode="markers+text",
            name="roles",
            text=[proj.names[i] if i in label else "" for i in order],
            textposition=["top center" if k % 2 else "bottom center" for k in range(len(xs))],
            hovertext=[f"<b>{proj.names[i]}</b><br>{desc[i]}<br>{values[i]:.4g}" for i in order],
            hoverinfo="text",
            marker={"color": xs, "colorscale": _COLORSCALE, "size": 9, "symbol": "line-ns-open",
                    "line": {"width": 2}},
        )
    )  # fmt: skip
    if proj.default is not None:
        fig.add_vline(x=proj.default, line_dash="dash", annotation_text="default")
    fig.update_layout(
        title=f"Role projections on the axis, layer {proj.layer} (higher = more Assistant-like)",
        xaxis_title="projection h · a/|a|",
        yaxis={"visible": False, "range": [-1, 1]},
        height=320,
    )
    return with_caption(
        fig,
        "Roles ordered by their projection on the axis: assistant-like roles (and the default) at "
        "the high end, fantastical or adversarial characters at the low end.",
    )


def trait_cosine_bars(tc: TraitCosines, *, top: int | None = 20) -> go.Figure:
    """Cosine of each trait vector with the axis (horizontal bars, sorted).

    ``top`` keeps the ``top`` most negative and ``top`` most positive traits (None: all).
    """
    values = as_floats(tc.cosines)
    order = sorted(range(len(values)), key=lambda i: values[i])
    if top is not None and len(order) > 2 * top:
        order = order[:top] + order[-top:]
    fig = go.Figure(
        go.Bar(
            x=[values[i] for i in order],
            y=[tc.names[i] for i in order],
            orientation="h",
            marker={"color": [values[i] for i in order], "colorscale": _COLORSCALE, "cmin": -1,
                    "cmax": 1},
        )
    )  # fmt: skip
    fig.update_layout(
        title=f"Trait vectors vs the Assistant Axis, layer {tc.layer}",
        xaxis_title="cos(trait, axis)",
        xaxis_range=[-1, 1],
        height=max(300, 18 * len(order) + 120),
    )
    return with_caption(
        fig,
        "Traits with a positive cosine point toward the Assistant end of the axis, negative ones "
        "away from it.",
    )


def cross_model_scatter(cmp: CrossModelLoadings) -> go.Figure:
    """Paired loadings of the common roles in two models, with the least-squares line."""
    a, b = as_floats(cmp.a), as_floats(cmp.b)
    fig = go.Figure(
        go.Scatter(x=a, y=b, mode="markers", name="roles", text=list(cmp.names),
                   hovertemplate="%{text}<br>%{x:.3g}, %{y:.3g}<extra></extra>")
    )  # fmt: skip
    ta, tb = cmp.a.double(), cmp.b.double()
    ca = ta - ta.mean()
    slope = float((ca @ (tb - tb.mean())) / (ca @ ca)) if bool((ca @ ca) > 0) else 0.0
    lo, hi = min(a), max(a)
    mid_a, mid_b = float(ta.mean()), float(tb.mean())
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[mid_b + slope * (lo - mid_a), mid_b + slope * (hi - mid_a)],
                   mode="lines", name="least squares", line={"dash": "dash"})
    )  # fmt: skip
    flip = " (b flipped)" if cmp.flipped else ""
    pc = f"PC{cmp.component + 1}"
    fig.update_layout(
        title=f"{pc} loadings across models: r = {cmp.r:.3f} over {len(a)} roles{flip}",
        xaxis_title=f"{pc} loading, {cmp.model_a} (layer {cmp.layer_a})",
        yaxis_title=f"{pc} loading, {cmp.model_b} (layer {cmp.layer_b})",
    )
    return with_caption(
        fig,
        "Each dot is a role; points near the diagonal mean the two models order their personas "
        "the same way along this component.",
    )
