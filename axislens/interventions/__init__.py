"""Interventions along a direction: typed ops and position rules (``operations``, built on the
float64-checked tensor kernels of :mod:`axislens.tensor_math`), and attaching them to a model's hook
points inside context managers that remove every hook on exit (``attach``: :func:`intervene`,
:func:`steer`, :func:`ablate`, :func:`cap`, :func:`residual_norms`), and exporting them for the
axislens vLLM plugin (``vllm_files``: :func:`to_vllm`).
"""

from __future__ import annotations

from axislens.interventions.attach import (
    Intervention,
    LayerSpec,
    ablate,
    cap,
    cap_intervention,
    ceiling_sequence_interventions,
    intervene,
    residual_norms,
    steer,
)
from axislens.interventions.operations import (
    Ablate,
    Add,
    All,
    CapCeiling,
    CapFloor,
    ClampBand,
    Last,
    MeanAblate,
    Op,
    Positions,
    Prompt,
    Response,
    Spans,
    parse_positions,
)
from axislens.interventions.vllm_files import VLLM_FORMAT, to_vllm

__all__ = [
    "VLLM_FORMAT",
    "Ablate",
    "Add",
    "All",
    "CapCeiling",
    "CapFloor",
    "ClampBand",
    "Intervention",
    "Last",
    "LayerSpec",
    "MeanAblate",
    "Op",
    "Positions",
    "Prompt",
    "Response",
    "Spans",
    "ablate",
    "cap",
    "cap_intervention",
    "ceiling_sequence_interventions",
    "intervene",
    "parse_positions",
    "residual_norms",
    "steer",
    "to_vllm",
]
