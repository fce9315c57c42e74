"""Plotly and circuitsvis views of result objects: persona space, sweeps and attribution, drift.
Figures are built from results and returned, never shown; tests inspect their data. Model-free.
"""

from __future__ import annotations

from axislens.plots.drift import (
    drift_trajectory,
    token_projection,
)
from axislens.plots.persona import (
    axis_layer_lines,
    cross_model_scatter,
    persona_space_scatter,
    role_projection_strip,
    trait_cosine_bars,
    variance_bars,
)
from axislens.plots.steering import (
    ablation_bars,
    attribution_bars,
    head_heatmap,
    logit_lens_bars,
    sweep_heatmap,
    token_view,
)
from axislens.plots.thresholds import (
    cap_distributions,
)

__all__ = [
    "ablation_bars",
    "attribution_bars",
    "axis_layer_lines",
    "cap_distributions",
    "cross_model_scatter",
    "drift_trajectory",
    "head_heatmap",
    "logit_lens_bars",
    "persona_space_scatter",
    "role_projection_strip",
    "sweep_heatmap",
    "token_projection",
    "token_view",
    "trait_cosine_bars",
    "variance_bars",
]
