"""Where a cap threshold falls: the per-response and per-token projection distributions on one
figure, with each ``tau`` drawn as a vertical line. Model-free; the figure is returned, not shown.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> fig = cap_distributions(resp.at(22), tok.stacked(layers=[22])[:, 0],
    ...                         {"p25 response": 1.5, "p25 token": -0.3}, layer=22)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["cap_distributions"]


def cap_distributions(
    response: Any, token: Any, thresholds: Mapping[str, float], *, layer: int
) -> go.Figure:
    """Overlaid density histograms of per-response and per-token projections at ``layer`` and a
    vertical line per named threshold (trace 0 = responses, trace 1 = tokens)."""
    import numpy as np
    import plotly.graph_objects as go

    r = np.asarray(response, dtype=np.float64).ravel()
    t = np.asarray(token, dtype=np.float64).ravel()
    if r.size == 0 or t.size == 0:
        raise ValueError("cap_distributions needs at least one response and one token value")
    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=r, name=f"per response ({r.size})", histnorm="probability density", opacity=0.6
        )
    )
    fig.add_trace(
        go.Histogram(x=t, name=f"per token ({t.size})", histnorm="probability density", opacity=0.6)
    )
    for name, tau in thresholds.items():
        fig.add_vline(x=float(tau), line_dash="dash", annotation_text=f"{name}: {tau:+.2f}")
    fig.update_layout(
        barmode="overlay",
        title=f"Projections on the axis at layer {layer}: per response vs per token",
        xaxis_title="projection h · v̂ (higher = more Assistant-like)",
        yaxis_title="density",
    )
    return fig
