"""Import aliases for moved module paths, each kept for one release: the 0.1 paths (removed in
0.3) and ``axislens.pipelines`` (moved to :mod:`axislens.jobs` in 0.3, removed in 0.4).

axislens 0.2 moved its flat modules into stage subpackages. ``import axislens.steer_ops`` and
``from axislens.models import load_model`` still work: a finder on ``sys.meta_path`` answers the
old names with a module that holds the names of their new homes, and warns once with a
``DeprecationWarning`` naming the new path. New code imports from the subpackages or from
``axislens`` itself. The finder only ever answers the names listed in :data:`MOVED`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MOVED", "MOVED_IN", "install"]

MOVED: dict[str, tuple[str, ...]] = {
    "axislens.models": ("axislens.model.loading", "axislens.model.layers"),
    "axislens.chat": ("axislens.model.chat",),
    "axislens.generate": ("axislens.model.decoding", "axislens.collection.responses"),
    "axislens.collect": ("axislens.collection.activations", "axislens.model.layers"),
    "axislens.judge": ("axislens.collection.judges",),
    "axislens.persona_space": ("axislens.analysis.space",),
    "axislens.probe": ("axislens.analysis.probing",),
    "axislens.stability": ("axislens.analysis.stability",),
    "axislens.thresholds": ("axislens.analysis.thresholds",),
    "axislens.traits": ("axislens.analysis.traits",),
    "axislens.ops": ("axislens.tensor_math",),
    "axislens.steer_ops": ("axislens.interventions.operations", "axislens.model.layers"),
    "axislens.steer": ("axislens.interventions.attach",),
    "axislens.sweep": ("axislens.evals.sweeps",),
    "axislens.attribution": ("axislens.evals.attribution",),
    "axislens.evaluation": ("axislens.evals.harness",),
    "axislens.eval_metrics": ("axislens.evals.metrics",),
    "axislens.evalsets": ("axislens.evals.sets",),
    "axislens.monitor": ("axislens.monitoring.projection",),
    "axislens.session": ("axislens.monitoring.session",),
    "axislens.serve": ("axislens.serving.engine",),
    "axislens.serve_api": ("axislens.serving.api",),
    "axislens.plots_monitor": ("axislens.plots.drift",),
    "axislens.plots_steer": ("axislens.plots.steering",),
    "axislens.demo": ("axislens.jobs.demo", "axislens.monitoring.scripts"),
    "axislens.cli_axis": ("axislens.jobs.axis", "axislens.cli.axis"),
    "axislens.cli_collect": ("axislens.jobs.collect", "axislens.cli.collect"),
    # 0.3: names that explain themselves.
    "axislens.kernels": ("axislens.tensor_math",),
    "axislens.public": ("axislens.paper_artifacts",),
    "axislens.model.hooks": ("axislens.model.layers",),
    # 0.3: the jobs left pipelines.py for axislens.jobs; its helpers went to their stages.
    "axislens.pipelines": (
        "axislens.jobs.demo",
        "axislens.jobs.axis",
        "axislens.jobs.collect",
        "axislens.presets",
        "axislens.model.layers",
        "axislens.monitoring.scripts",
        "axislens.collection.judges",
    ),
    "axislens.cli_monitor": ("axislens.cli.monitor",),
    "axislens.cli_serve": ("axislens.cli.serve",),
    "axislens.cli_steer": ("axislens.cli.steer",),
}
"""Old module path -> the modules its names now live in (searched in order)."""

MOVED_IN: dict[str, str] = {
    "axislens.kernels": "0.3",
    "axislens.public": "0.3",
    "axislens.model.hooks": "0.3",
    "axislens.pipelines": "0.3",
}
"""The release an old path moved in, where it is not 0.2 (it goes in the release after)."""


class _Alias(types.ModuleType):
    """A 0.1 module path. Callable when the package has a function of the same name
    (``axislens.steer``, ``axislens.collect``): importing the old module path makes Python bind it
    on the package, so the alias must keep working as that function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.__dict__.get("_axislens_function")
        if fn is None:
            raise TypeError(f"module {self.__name__!r} is not callable")
        return fn(*args, **kwargs)


class _Loader(importlib.abc.Loader):
    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Alias(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        new = " and ".join(self.targets)
        since = MOVED_IN.get(module.__name__, "0.2")
        until = f"0.{int(since.split('.')[1]) + 1}"
        warnings.warn(
            f"{module.__name__} moved to {new} in axislens {since}; the old path goes in {until}",
            DeprecationWarning,
            stacklevel=2,
        )
        for target in reversed(self.targets):  # the first target wins on a shared name
            mod = importlib.import_module(target)
            module.__dict__.update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
        parent = sys.modules["axislens"]
        attr = module.__name__.rsplit(".", 1)[1]
        current = getattr(parent, attr, None)
        if callable(current) and not isinstance(current, types.ModuleType):
            module.__dict__["_axislens_function"] = current
            module.__doc__ = current.__doc__


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        targets = MOVED.get(fullname)
        if targets is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(targets))


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (idempotent). It answers only the names
    in :data:`MOVED`, so going first costs other imports nothing, and an old path resolves to
    its new home even where an editable install's finder still maps the package's old files."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
