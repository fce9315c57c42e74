"""Every ``Example:`` block in the package runs (``doctest``), module by module.

An example that needs a real model, a collected store of one, files of the paper's release or a
server is marked ``# doctest: +SKIP`` and says so; everything else runs here, with ``model``
bound to the tiny random llama (the examples that take any model run on it) and ``axis`` to a
random 24-layer direction of its width (the exporters' examples).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import axislens

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(axislens.__path__, "axislens.")
    if not info.name.startswith("axislens.cli")  # argument parsing; examples are shell lines
)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    return [t for t in tests if t.examples and t.name.startswith(name)]


@pytest.fixture(scope="module")
def namespace(tiny_llama) -> dict[str, object]:
    import torch

    from axislens.directions import Direction

    g = torch.Generator().manual_seed(0)
    axis = Direction(torch.randn(24, 64, generator=g), method="mean_diff")
    return {"model": tiny_llama, "axis": axis}


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str, namespace, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        test.globs = {**test.globs, **namespace}
        runner.run(test, clear_globs=False)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name}"


def test_the_runner_sees_examples() -> None:
    """The walk finds the package's examples (a broken walk would pass every module)."""
    counted = sum(len(t.examples) for name in MODULES for t in _examples(name))
    assert counted > 100, counted
