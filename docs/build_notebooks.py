"""Execute the docs notebooks and save them with their outputs, so their figures show where the
repository is browsed. Run from the repository root after changing a notebook:

    python docs/build_notebooks.py

``tests/integration/test_notebooks.py`` executes each notebook again from a copy with its
outputs cleared, and checks that the committed one carries outputs (a plotly figure included).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbclient
import nbformat

NB_DIR = Path(__file__).resolve().parent / "notebooks"


def main(names: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if not names:  # the saved outputs show the shared store being built, not reused
        shutil.rmtree(NB_DIR / "_store", ignore_errors=True)
    for path in sorted(NB_DIR.glob("*.ipynb")):
        if names and path.name not in names:
            continue
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}
        ).execute(env=env)
        nbformat.write(nb, path)
        print(f"executed {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
