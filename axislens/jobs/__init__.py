"""Jobs: the method's stages run end to end from one frozen config each.

- :mod:`axislens.jobs.collect`: persona responses, their activations and their scores into a
  store (``axislens collect``);
- :mod:`axislens.jobs.axis`: the axis, persona space, cap thresholds and their stability from
  a store (``axislens axis``);
- :mod:`axislens.jobs.demo`: the main job, composing the two and adding steering and a drift
  replay (``axislens demo`` / ``make demo``).

Each module has a config dataclass, a typed result (``_repr_html_``, ``to_pandas()`` where
tabular, ``save``/``load``) and ``run(cfg)``; ``run_collect`` / ``run_axis`` / ``run_demo``
take the same settings as keywords.

Example:
    >>> from axislens.jobs import DemoConfig
    >>> DemoConfig().axis_config().min_count
    3
"""

from __future__ import annotations

from axislens.jobs.axis import AxisConfig, AxisResult, run_axis
from axislens.jobs.collect import (
    CollectConfig,
    CollectMode,
    CollectResult,
    run_collect,
)
from axislens.jobs.demo import DemoConfig, DemoResult, run_demo
from axislens.jobs.specs import PersonaData, StoreLayout

__all__ = [
    "AxisConfig",
    "AxisResult",
    "CollectConfig",
    "CollectMode",
    "CollectResult",
    "DemoConfig",
    "DemoResult",
    "PersonaData",
    "StoreLayout",
    "run_axis",
    "run_collect",
    "run_demo",
]
