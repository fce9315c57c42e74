"""Figures of persona drift, built from :class:`axislens.monitoring.projection.DriftTrajectory` objects.

- :func:`drift_trajectory`: mean projection per assistant turn against the turn number, several
  runs overlaid (e.g. unsteered vs capped), the threshold drawn as a line over a shaded band.
- :func:`token_projection`: per-token projection of one turn as a circuitsvis
  ``colored_tokens`` view.

Figures are returned, never shown; tests read their data. No model is needed.

Example:
    The trajectories come from a real model (not run by the doctest suite).

    >>> fig = drift_trajectory(plain, capped, labels=["unsteered", "capped"], layer=15,
    ...                        threshold=11.5)  # doctest: +SKIP
    >>> fig.data[0].y  # the per-turn means of ``plain`` at layer 15  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from axislens.plots.captions import with_caption

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from axislens.monitoring.projection import DriftTrajectory

__all__ = ["drift_trajectory", "token_projection"]


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def drift_trajectory(
    *trajectories: DriftTrajectory,
    labels: Sequence[str] | None = None,
    layer: int | None = None,
    threshold: float | tuple[float, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Projection on the axis against turn, one line per trajectory.

    Args:
        trajectories: one or more :class:`DriftTrajectory` (all must have measured ``layer``).
        labels: one name per trajectory (default ``run 0``, ``run 1``...).
        layer: the layer to draw (default the first layer of the first trajectory).
        threshold: a cap/drift threshold ``tau``: a dashed line with the region below it shaded
            (where the cap acts); or ``(lo, hi)``: a shaded band.
        title: the figure title (default ``Projection on the axis per turn (layer N)``).

    Trace ``k`` has ``x`` = the turn numbers and ``y`` = the per-turn means of trajectory ``k``
    (empty turns as gaps); turns in which a cap acted are drawn as diamonds.
    """
    import plotly.graph_objects as go

    if not trajectories:
        raise ValueError("drift_trajectory needs at least one trajectory")
    names = list(labels) if labels is not None else [f"run {k}" for k in range(len(trajectories))]
    if len(names) != len(trajectories):
        raise ValueError(f"got {len(names)} labels for {len(trajectories)} trajectories")
    layer = trajectories[0].layers[0] if layer is None else layer
    fig = go.Figure()
    ys: list[float] = []
    for name, traj in zip(names, trajectories, strict=True):
        y = traj.means(layer)
        ys += [v for v in y if not math.isnan(v)]
        fig.add_trace(
            go.Scatter(
                x=list(traj.turns),
                y=_finite_or_none(y),
                mode="lines+markers",
                name=name,
                marker={"symbol": ["diamond" if t.capped else "circle" for t in traj.assistant]},
                customdata=[len(t.tokens) for t in traj.assistant],
                hovertemplate="turn %{x}<br>projection %{y:.3f}<br>%{customdata} tokens",
            )
        )
    if threshold is not None:
        if isinstance(threshold, tuple):
            lo, hi = (float(x) for x in threshold)
            if lo > hi:
                raise ValueError(f"threshold band needs lo <= hi, got {threshold}")
        else:
            hi = float(threshold)
            span = (max(ys) - min(ys)) if ys else 1.0
            lo = min([*ys, hi]) - 0.1 * (span or 1.0)
            fig.add_hline(
                y=hi,
                line={"dash": "dash", "color": "firebrick"},
                annotation_text=f"threshold {hi:.3g}",
            )
        fig.add_hrect(y0=lo, y1=hi, fillcolor="firebrick", opacity=0.12, line_width=0)
    fig.update_layout(
        title=title or f"Projection on the axis per turn (layer {layer})",
        xaxis_title="turn",
        yaxis_title=f"mean projection, layer {layer}",
        template="plotly_white",
    )
    return with_caption(
        fig,
        "Each assistant turn's mean projection on the axis: a falling line is drift away from the "
        "Assistant persona"
        + ("; a capped run is held above the dashed threshold." if threshold is not None else "."),
    )


def token_projection(
    trajectory: DriftTrajectory,
    turn: int,
    layer: int | None = None,
    *,
    role: str = "assistant",
    center: float | None = None,
) -> Any:
    """Per-token projection of one message as a circuitsvis ``colored_tokens`` view.

    Args:
        trajectory: the :class:`DriftTrajectory` holding the message.
        turn: the turn number (as in ``trajectory.turns``).
        layer: the layer (default the trajectory's first).
        role: ``"assistant"`` or ``"user"``.
        center: subtract this value before colouring (e.g. the cap threshold: tokens below it
            show in the negative colour); default: raw projections.

    Returns circuitsvis's ``RenderedHTML`` (displays in Jupyter; ``str()`` gives the HTML).
    """
    from circuitsvis.tokens import colored_tokens

    if role not in ("assistant", "user"):
        raise ValueError(f"unknown role {role!r}; expected 'assistant' or 'user'")
    layer = trajectory.layers[0] if layer is None else layer
    item = trajectory.turn(turn, role)
    values = item.projections[trajectory.layer_index(layer)].tolist()
    if center is not None:
        values = [v - center for v in values]
    return colored_tokens(list(item.tokens), values)
