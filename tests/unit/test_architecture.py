"""The 0.2 layout holds: one-way dependencies, no import cycles, no module shadowed by a function,
and the model-free stages never import TransformerLens."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import axislens

PKG = Path(axislens.__file__).resolve().parent
MODEL_FREE = (
    "axislens.store",
    "axislens.directions",
    "axislens.kernels",
    "axislens.interop",
    "axislens.display",
    "axislens.extras",
    "axislens.analysis",
    "axislens.plots",
    "axislens.personas",
    "axislens.presets",
    "axislens.public",
)
# Each stage may import only the stages listed (plus itself and the values).
# axislens.interop: the values' exporters (Direction.to_gguf, CapConfig.to_torch, ...).
VALUES = {
    "axislens.display",
    "axislens.extras",
    "axislens._types",
    "axislens.store",
    "axislens.directions",
    "axislens.kernels",
    "axislens.interop",
    "axislens.presets",
    "axislens.public",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """axislens modules imported by ``name``, at any depth of the file (function-level imports
    count: a cycle hidden inside a function is still a cycle). Imports under
    ``if TYPE_CHECKING:`` are annotations only and are not dependencies."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    modules = _modules()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("axislens"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*pkg.split(".")[: len(pkg.split(".")) - node.level + 1], base])
            if not base.startswith("axislens"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # The package root only re-exports and installs the 0.1 aliases; it is not a stage.
    return {n: _imports(n, p) - {"axislens"} for n, p in mods.items() if n != "axislens"}


def _stage(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else mod


def test_no_import_cycles_between_modules() -> None:
    graph = _graph()
    # Edges into a package's __init__ stand for edges into what it re-exports; a cycle through an
    # __init__ that only re-exports its own children is not a dependency cycle.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m.startswith(n + "."):  # a package importing its own children
                continue
            if state.get(m) == 1:
                cycle = [*stack[stack.index(m) :], m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_stages_depend_one_way() -> None:
    """cli -> pipelines -> stages -> values; the model-free stages import no model stage."""
    graph = _graph()
    order = {
        "values": 0,
        "axislens.model": 1,
        "axislens.personas": 1,
        "axislens.interventions": 2,
        "axislens.hf": 2,  # re-exports axislens.interventions.hf
        "axislens.analysis": 2,
        "axislens.plots": 3,
        "axislens.collection": 3,
        "axislens.monitoring": 3,
        "axislens.evals": 4,
        "axislens.serving": 5,
        "axislens.pipelines": 6,
        "axislens.cli": 7,
    }
    model_free = {"axislens.analysis", "axislens.plots", "axislens.personas"}
    bad = []
    for mod, deps in graph.items():
        if mod == "axislens._legacy":
            continue
        src = "values" if mod in VALUES else _stage(mod)
        for dep in deps:
            dst = "values" if dep in VALUES else _stage(dep)
            if dst == src:
                continue
            if order[dst] > order[src] or (src in model_free and dst == "axislens.model"):
                bad.append(f"{mod} imports {dep}")
            if src == "values" and dst != "values":
                bad.append(f"{mod} (a value module) imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_no_module_is_named_like_a_function_its_package_reexports() -> None:
    clashes = []
    for info in pkgutil.walk_packages(axislens.__path__, "axislens."):
        if not info.ispkg:
            continue
        pkg = importlib.import_module(info.name)
        for sub in pkgutil.iter_modules(pkg.__path__):
            obj = getattr(pkg, sub.name, None) if sub.name in getattr(pkg, "__all__", ()) else None
            if callable(obj) and not isinstance(obj, type(sys)):
                clashes.append(f"{info.name}.{sub.name}")
    top = [s.name for s in pkgutil.iter_modules(axislens.__path__)]
    public = set(axislens.__all__)
    clashes += [
        f"axislens.{n}"
        for n in top
        if n in public
        and callable(getattr(axislens, n))
        and not isinstance(getattr(axislens, n), type(sys))
    ]
    assert not clashes, f"modules shadowed by a function of the same name: {clashes}"


def test_model_free_stages_do_not_import_transformer_lens() -> None:
    code = (
        "import sys; import " + ", ".join(MODEL_FREE) + "; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'transformer_lens'); "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_cli_modules_only_parse_arguments() -> None:
    """cli/ holds argument parsing: it defines no dataclass and calls pipelines or library
    functions; every job it runs is importable from axislens.pipelines."""
    for path in (PKG / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                pytest.fail(f"{path.name} defines class {node.name}: library code goes elsewhere")


def test_old_module_paths_warn_and_resolve() -> None:
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import axislens\n"
        "try:\n"
        "    import axislens.steer_ops\n"
        "except DeprecationWarning as w:\n"
        "    print('warned', w)\n"
        "warnings.simplefilter('ignore')\n"
        "from axislens.steer import cap, residual_norms\n"
        "from axislens.models import load_model\n"
        "from axislens.generate import generate_responses, SamplingConfig\n"
        "assert cap is axislens.cap and load_model is axislens.load_model\n"
        "assert callable(axislens.steer) and callable(axislens.collect)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "warned axislens.steer_ops moved to axislens.interventions.operations" in out.stdout
    assert out.stdout.strip().endswith("ok")


def test_one_place_builds_a_kv_cache() -> None:
    users = sorted(
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if "DynamicCache(" in p.read_text() or "DynamicCache()" in p.read_text()
    )
    assert users == ["model/decoding.py"], users
