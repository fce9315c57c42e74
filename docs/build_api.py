"""Build the API reference (``docs/api/``, HTML) from the docstrings with pdoc.

    .venv/bin/pip install pdoc        # once; a dev tool, not a runtime dependency
    .venv/bin/python docs/build_api.py [--out docs/api]

Documents the ``axislens`` package and every public submodule (names starting with ``_`` are
left out). The output is generated, never committed (``docs/api/`` is git-ignored). Open
``docs/api/index.html`` (or ``docs/api/axislens.html``) in a browser.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def build(out: Path) -> Path:
    """Write the HTML reference into ``out``; returns the path of the package page."""
    try:
        import pdoc
        import pdoc.render
    except ImportError:
        sys.exit("pdoc is not installed: run `.venv/bin/pip install pdoc`")
    sys.path.insert(0, str(ROOT))  # document this checkout, even if not pip-installed
    pdoc.render.configure(
        docformat="google",  # our docstrings use "Args:" / "Raises:" / "Example:" sections
        show_source=True,
        search=True,
        footer_text="axislens",
    )
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # ``axislens.collection.activations`` is both a submodule and a function re-exported by the package.
        warnings.filterwarnings("ignore", message="The module specification", category=UserWarning)
        pdoc.pdoc(*modules(), output_directory=out)
    return out / "axislens.html"


def modules() -> list[str]:
    """``axislens`` and its public submodules, listed explicitly: pdoc would otherwise show only
    the submodules named in the package's ``__all__``."""
    import pkgutil

    import axislens

    subs = [m.name for m in pkgutil.iter_modules(axislens.__path__) if not m.name.startswith("_")]
    return ["axislens", *(f"axislens.{name}" for name in sorted(subs))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "api", help="output folder")
    args = parser.parse_args(argv)
    page = build(args.out)
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
