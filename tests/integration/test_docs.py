"""The docs cannot rot: docstrings of the public API, Python snippets, links, notebook cells.

Convention (see docs/index.md): every ```python block in README.md and docs/**/*.md must
compile; a block right after a ``<!-- test: run -->`` line, and the README quickstart (the
first ```python block under "## Quickstart"), are executed on the embedded model (slow).
Pseudo-code goes in ```text blocks.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUN_MARK = "<!-- test: run -->"
_FENCE = re.compile(r"^```(\w*)\s*$")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    run: bool
    heading: str  # the last "## " heading above it

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path) -> list[Snippet]:
    """Fenced code blocks of a Markdown file, with their language and run mark."""
    out: list[Snippet] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    heading, i = "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line[3:].strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path}:{i + 1}: unclosed code fence")
        before = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        out.append(
            Snippet(
                path,
                i + 1,
                fence.group(1),
                "\n".join(lines[i + 1 : end]),
                before == RUN_MARK,
                heading,
            )
        )
        i = end + 1
    return out


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_snippets() -> list[Snippet]:
    return [s for p in markdown_files() for s in snippets(p) if s.lang == "python"]


def readme_quickstart() -> Snippet:
    found = [
        s for s in snippets(ROOT / "README.md") if s.lang == "python" and s.heading == "Quickstart"
    ]
    assert found, "README.md has no ```python block under '## Quickstart'"
    return found[0]


# --------------------------------------------------------------------------- (a) docstrings


def _data_docstrings(paths: list[Path] | None = None) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a top-level assignment) of every
    axislens module (or of ``paths``), by assigned name."""
    docs: dict[str, str] = {}
    for path in paths if paths is not None else sorted((ROOT / "axislens").rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for stmt, nxt in itertools.pairwise(body):
            targets = (
                stmt.targets
                if isinstance(stmt, ast.Assign)
                else [stmt.target]
                if isinstance(stmt, ast.AnnAssign)
                else []
            )
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                for t in targets:
                    if isinstance(t, ast.Name):
                        docs[t.id] = nxt.value.value
    return docs


def _own_docstring(name: str, obj: object) -> str:
    """The object's own docstring: not inherited, not a dataclass's generated signature."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        return "" if doc.startswith(f"{obj.__name__}(") else doc  # dataclass default
    return getattr(obj, "__doc__", None) or ""


def test_every_public_name_has_a_docstring() -> None:
    import axislens

    data_docs = _data_docstrings()
    missing = []
    for name in axislens.__all__:
        if name.startswith("__"):  # __version__ describes itself
            continue
        obj = getattr(axislens, name)
        if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
            doc = _own_docstring(name, obj)
        else:
            doc = data_docs.get(name, "")
        if len(doc.strip()) < 10:
            missing.append(name)
    assert not missing, f"axislens.__all__ names without a docstring: {missing}"


def test_docstring_check_can_fail(tmp_path: Path) -> None:
    """The check above rejects what it should: no docstring, a dataclass's generated one."""
    from dataclasses import dataclass as dc

    def bare() -> None:
        pass

    @dc
    class Plain:
        x: int

    assert _own_docstring("bare", bare) == ""
    assert _own_docstring("Plain", Plain) == ""
    module = tmp_path / "m.py"
    module.write_text('A = 1\n"""The A constant."""\nB: int = 2\nC = 3\n"""C."""\n')
    assert _data_docstrings([module]) == {"A": "The A constant.", "C": "C."}


# --------------------------------------------------------------------------- (b) snippets


def test_docs_exist_and_have_python_snippets() -> None:
    for page in (
        "index.md",
        "quickstart.md",
        "concepts.md",
        "howto/bring-your-own-model.md",
        "howto/import-paper-data.md",
        "howto/calibrate-a-cap.md",
        "howto/sweep-layers.md",
        "howto/monitor-a-chat.md",
        "howto/scale-to-multi-gpu.md",
    ):
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
    assert len(python_snippets()) >= 15
    assert any(s.run for s in python_snippets()), f"no block is marked {RUN_MARK!r}"


@pytest.mark.parametrize("snippet", python_snippets(), ids=lambda s: s.where)
def test_python_snippet_compiles(snippet: Snippet) -> None:
    try:
        compile(snippet.code, snippet.where, "exec")
    except SyntaxError as err:
        pytest.fail(f"{snippet.where}: snippet does not compile: {err}")


def test_snippet_parser_finds_marks_and_broken_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "## A\n\n<!-- test: run -->\n```python\nx = 1\n```\n\n```python\ndef f(:\n```\n\n"
        "```bash\nmake demo\n```\n"
    )
    found = snippets(page)
    assert [(s.lang, s.run, s.heading, s.line) for s in found] == [
        ("python", True, "A", 4),
        ("python", False, "A", 8),
        ("bash", False, "A", 12),
    ]
    with pytest.raises(SyntaxError):
        compile(found[1].code, "x", "exec")


def test_local_links_resolve() -> None:
    broken = []
    for path in markdown_files():
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            if not (path.parent / file_part).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_notebook_cells_compile() -> None:
    notebooks = sorted((DOCS / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 3
    for nb in notebooks:
        data = json.loads(nb.read_text(encoding="utf-8"))
        for k, cell in enumerate(data["cells"]):
            if cell["cell_type"] != "code":
                continue
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors, f"{nb.name} cell {k}: a saved error output"
            source = "".join(cell["source"])
            code = "\n".join(
                line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
            )
            compile(code, f"{nb.name} cell {k}", "exec")


# --------------------------------------------------------------------------- (c) run


def _run(snippet: Snippet) -> tuple[str, dict[str, Any]]:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.code, snippet.where, "exec"), namespace)
    return out.getvalue(), namespace


@pytest.mark.slow
def test_readme_quickstart_runs() -> None:
    import axislens

    printed, ns = _run(readme_quickstart())
    model, conv = ns["model"], ns["conv"]
    assert axislens.model_provenance(model).model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # It printed the model's greedy reply: recompute it independently.
    greedy = axislens.SamplingConfig(max_new_tokens=40, temperature=0)
    expected = axislens.generate_text(model, [conv], greedy)[0]
    assert expected.strip()
    assert printed.rstrip("\n") == expected


@pytest.mark.slow
def test_marked_doc_snippets_run() -> None:
    import axislens

    marked = [s for s in python_snippets() if s.run and s.path.name != "README.md"]
    assert marked
    for snippet in marked:
        printed, ns = _run(snippet)
        assert printed.strip(), f"{snippet.where}: printed nothing"
        if snippet.path.name == "quickstart.md" and "prompt" in ns:
            # The quickstart prints the unsteered reply, then the steered one: steering moved it.
            base = axislens.generate_text(ns["model"], [ns["prompt"]("")], ns["greedy"])[0]
            assert printed.startswith(base + "\n"), snippet.where
            steered = printed[len(base) + 1 :].rstrip("\n")
            assert steered and steered != base, f"{snippet.where}: steering changed nothing"
