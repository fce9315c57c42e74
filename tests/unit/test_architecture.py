"""The layout holds: stages in one order (the one docs/architecture.md gives), no import cycles,
no private name imported across subpackages, no module shadowed by a function, and the
model-free stages never import TransformerLens."""

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
    "axislens.tensor_math",
    "axislens.pt_files",
    "axislens.interop",
    "axislens.display",
    "axislens.extras",
    "axislens.analysis",
    "axislens.plots",
    "axislens.personas",
    "axislens.presets",
    "axislens.paper_artifacts",
    "axislens.version",
)
# Each stage may import only the stages listed (plus itself and the values).
# axislens.interop: the values' exporters (Direction.to_gguf, CapConfig.to_torch, ...).
VALUES = {
    "axislens.display",
    "axislens.extras",
    "axislens._types",
    "axislens.store",
    "axislens.directions",
    "axislens.tensor_math",
    "axislens.interop",
    "axislens.presets",
    "axislens.paper_artifacts",
    "axislens.pt_files",
    "axislens.version",
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


# The stages, in the order docs/architecture.md lists them: each imports only earlier ones.
ORDER = (
    "values",
    "axislens.model",
    "axislens.personas",
    "axislens.analysis",
    "axislens.plots",
    "axislens.collection",
    "axislens.interventions",
    "axislens.monitoring",
    "axislens.evals",
    "axislens.serving",
    "axislens.jobs",
    "axislens.cli",
)
SAME_STAGE = {"axislens.hf": "axislens.interventions"}  # re-exports axislens.interventions.hf


def _stage_of(mod: str) -> str:
    if mod in VALUES:
        return "values"
    return SAME_STAGE.get(mod, _stage(mod))


def _order_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {stage: i for i, stage in enumerate(ORDER)}
    model_free = {"axislens.analysis", "axislens.plots", "axislens.personas"}
    bad = []
    for mod, deps in graph.items():
        if mod == "axislens._legacy":
            continue
        src = _stage_of(mod)
        for dep in deps:
            dst = _stage_of(dep)
            if dst == src:
                continue
            if rank[dst] > rank[src]:
                bad.append(f"{mod} imports {dep} (a later stage)")
            elif src in model_free and dst == "axislens.model":
                bad.append(f"{mod} imports {dep} (a model-free stage importing the model)")
    return sorted(bad)


def test_stages_depend_one_way() -> None:
    """cli -> jobs -> serving -> ... -> model -> values, in :data:`ORDER`; the model-free stages
    import no model stage."""
    assert set(ORDER[1:]) == {_stage_of(m) for m in _graph()} - {"values", "axislens._legacy"}
    bad = _order_violations(_graph())
    assert not bad, "\n".join(bad)


def test_the_order_check_fails_on_a_later_stage() -> None:
    """The check itself: an analysis module importing a collection module is refused."""
    graph = {"axislens.analysis.vectors": {"axislens.collection.tokens"}}
    assert _order_violations(graph) == [
        "axislens.analysis.vectors imports axislens.collection.tokens (a later stage)"
    ]


def test_docs_list_the_stages_in_the_checked_order() -> None:
    """docs/architecture.md's stage table has the packages in :data:`ORDER`."""
    text = (PKG.parent / "docs" / "architecture.md").read_text()
    start = text.index("| stage | package | owns |")
    block = text[start : text.index("\n\n", start)]
    table = [line for line in block.splitlines() if line.startswith("| ") and "`" in line]
    listed = [line.split("|")[2].strip().split("`")[1].rstrip("/") for line in table]
    expected = [s.removeprefix("axislens.") for s in ORDER[1:]]
    assert [p for p in listed if p in expected] == expected, listed


def _home(mod: str) -> str:
    """The stage a module belongs to for privacy: its subpackage, or itself when it is a
    top-level module (``axislens.directions``)."""
    parts = mod.split(".")
    if len(parts) >= 2 and (PKG / parts[1]).is_dir():
        return ".".join(parts[:2])
    return mod


def _private_imports(name: str, path: Path) -> list[str]:
    """``from axislens.x import _y`` where ``axislens.x`` lives in another stage than ``name``:
    a private name used across a boundary."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            base = ".".join([*pkg.split(".")[: len(pkg.split(".")) - node.level + 1], base])
        if not base.startswith("axislens") or _home(base) == _home(name):
            continue
        found += [
            f"{name}: from {base} import {a.name}"
            for a in node.names
            if a.name.startswith("_") and not a.name.startswith("__")
        ]
    return found


def test_no_private_name_is_imported_across_stages() -> None:
    found = [f for n, p in _modules().items() for f in _private_imports(n, p)]
    assert not found, "\n".join(found)


def test_the_private_import_check_fails_on_one(tmp_path) -> None:
    src = tmp_path / "tokens.py"
    src.write_text("from axislens.analysis.vectors import _open\nfrom .activations import _x\n")
    assert _private_imports("axislens.collection.tokens", src) == [
        "axislens.collection.tokens: from axislens.analysis.vectors import _open"
    ]


def test_no_module_imports_the_package_root() -> None:
    """The root only re-exports: a module importing it (e.g. for ``__version__``, which lives in
    :mod:`axislens.version`) hides a dependency the stage check cannot see."""
    found = []
    for name, path in _modules().items():
        if name == "axislens":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "axislens" for a in node.names):
                found.append(f"{name}: import axislens")
            elif isinstance(node, ast.ImportFrom) and node.module == "axislens":
                subs = {m.split(".")[1] for m in _modules() if m.count(".") >= 1}
                found += [
                    f"{name}: from axislens import {a.name}"
                    for a in node.names
                    if a.name not in subs
                ]
    assert not found, "\n".join(found)


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
    """cli/ holds argument parsing: it defines no dataclass and calls jobs or library
    functions; every job it runs is importable from axislens.jobs."""
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
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    import axislens.pipelines\n"
        "except DeprecationWarning as w:\n"
        "    print('warned', w)\n"
        "warnings.simplefilter('ignore')\n"
        "from axislens.pipelines import run_demo, RunSummary, load_script, default_cap_layers\n"
        "from axislens.kernels import cap_floor\n"
        "from axislens.public import CeilingSequence\n"
        "from axislens.model.hooks import hook_name\n"
        "from axislens.jobs import run_demo as new, CollectResult\n"
        "assert run_demo is new and RunSummary is CollectResult\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "warned axislens.steer_ops moved to axislens.interventions.operations" in out.stdout
    assert "warned axislens.pipelines moved to axislens.jobs.demo" in out.stdout
    assert "in axislens 0.3; the old path goes in 0.4" in out.stdout
    assert out.stdout.strip().endswith("ok")


def test_one_place_builds_a_kv_cache() -> None:
    users = sorted(
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if "DynamicCache(" in p.read_text() or "DynamicCache()" in p.read_text()
    )
    assert users == ["model/decoding.py"], users
