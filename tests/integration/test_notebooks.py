"""Execute the docs notebooks top to bottom (slow: about a minute each on two idle cores).

Each notebook runs in a fresh ``python3`` kernel of this interpreter, with the notebooks folder
as working directory and this process's environment (so ``AXISLENS_CACHE`` and
``HF_HUB_OFFLINE``, set by conftest.py when absent, reach the kernel). The notebooks share the
activation store ``docs/notebooks/_store`` (git-ignored): the first builds it, the others reuse
it. The committed notebooks carry their outputs (``docs/build_notebooks.py`` writes them), so
their figures show where the repository is browsed; here each runs again from a copy with its
outputs cleared, and nothing is written back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "docs" / "notebooks"
NOTEBOOKS = (
    "01_persona_space.ipynb",
    "02_steering_and_capping.ipynb",
    "03_drift_monitoring.ipynb",
)
CELL_TIMEOUT_S = 600  # a hung cell fails the test instead of the CI job
PLOTLY = "application/vnd.plotly.v1+json"


def _outputs(nb: object) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NB_DIR / name, as_version=4)
    committed = _outputs(nb)
    assert any(PLOTLY in o.get("data", {}) for o in committed), (
        f"{name}: commit it with its outputs (python docs/build_notebooks.py)"
    )
    assert not [o for o in committed if o.get("output_type") == "error"], f"{name}: saved error"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NB_DIR)}},  # the kernel's working directory
    )
    t0 = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError with the failing cell's traceback
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.0f} s")
    outputs = _outputs(nb)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    figures = [o for o in outputs if PLOTLY in o.get("data", {})]
    assert figures, f"{name}: no plotly figure was displayed"
    assert (NB_DIR / "_store" / "manifest.json").is_file()
