"""Readers for persona catalogues on disk: the axislens layout and the paper's public layout.

:func:`load_personas` documents both layouts.
Every error is a ``PersonaError`` prefixed with the file, the line or role, and the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from axislens.personas.catalogue import (
    N_PROMPTS,
    DefaultPrompts,
    PersonaError,
    Personas,
    Question,
    Role,
    Trait,
    TraitPair,
    _name,
    _template,
    _text,
    _texts,
    default_rubric,
)

__all__ = ["Layout", "load_personas"]

Layout = Literal["auto", "axislens", "paper"]
"""How :func:`load_personas` reads a folder: detect the layout, or require one."""

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_DATA = "data/personas"

# -- shared helpers -----------------------------------------------------------------------------


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PersonaError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None


def _jsonl(text: str, fname: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        obj = _json(line, f"{fname} line {lineno}")
        if not isinstance(obj, dict):
            raise PersonaError(
                f"{fname} line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        rows.append((lineno, obj))
    return rows


def _keys(obj: dict[str, Any], required: Collection[str], optional: Collection[str] = ()) -> None:
    allowed = set(required) | set(optional)
    if missing := sorted(set(required) - obj.keys()):
        raise PersonaError(f"missing field '{missing[0]}'")
    if unknown := sorted(obj.keys() - allowed):
        raise PersonaError(f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix any PersonaError raised inside with the location ``where``."""
    try:
        yield
    except PersonaError as e:
        raise PersonaError(f"{where}: {e}") from None


def _label(obj: dict[str, Any], what: str, key: str = "name") -> str:
    value = obj.get(key)
    return f"{what} {value!r}" if isinstance(value, str) else f"{what} ?"


# -- axislens layout -----------------------------------------------------------------------------


def _load_axislens(folder: Traversable, label: str, source: str) -> Personas:
    def read(fname: str, required: bool = True) -> str | None:
        f = folder.joinpath(fname)
        if not f.is_file():
            if required:
                raise PersonaError(
                    f"{label}/{fname}: file not found (axislens layout needs {fname})"
                )
            return None
        return f.read_text(encoding="utf-8")

    def role(obj: dict[str, Any]) -> Role:
        _keys(obj, {"name", "category", "description", "system_prompts"}, {"rubric", "questions"})
        name, description = _name(obj["name"]), _text(obj["description"], "description")
        rubric = obj["rubric"] if "rubric" in obj else default_rubric(name, description)
        category, prompts = obj["category"], obj["system_prompts"]
        return Role(name, description, category, prompts, rubric, obj.get("questions", ()))

    def question(obj: dict[str, Any]) -> Question:
        _keys(obj, {"id", "topic", "text"})
        return Question(obj["id"], obj["topic"], obj["text"])

    def trait(obj: dict[str, Any]) -> Trait:
        _keys(obj, {"name", "description", "pairs"}, {"questions", "rubric"})
        raw = obj["pairs"]
        if not isinstance(raw, list):
            raise PersonaError(f"field 'pairs' must be a list, got {type(raw).__name__}")
        pairs = []
        for i, p in enumerate(raw):
            with _at(f"field 'pairs[{i}]'"):
                if not isinstance(p, dict):
                    raise PersonaError(f"must be an object, got {type(p).__name__}")
                _keys(p, {"pos", "neg"})
                pairs.append(TraitPair(p["pos"], p["neg"]))
        rest = obj.get("questions", ()), obj.get("rubric", "")
        return Trait(obj["name"], obj["description"], tuple(pairs), *rest)

    def rows(fname: str, make: Callable[[dict[str, Any]], Any], what: str, key: str) -> list[Any]:
        text = read(fname, required=fname != "traits.jsonl")
        if text is None:
            return []
        out: list[Any] = []
        first: dict[str, int] = {}
        for lineno, obj in _jsonl(text, f"{label}/{fname}"):
            with _at(f"{label}/{fname} line {lineno} ({_label(obj, what, key)})"):
                item = make(obj)
                if (ident := getattr(item, key)) in first:
                    raise PersonaError(
                        f"duplicate {what} {key}, first defined on line {first[ident]}"
                    )
                first[ident] = lineno
                out.append(item)
        return out

    with _at(f"{label}/default.json"):
        obj = _json(read("default.json") or "", "invalid file")
        if not isinstance(obj, dict):
            raise PersonaError(f"expected a JSON object, got {type(obj).__name__}")
        _keys(obj, {"system_prompts"})
        default = DefaultPrompts(obj["system_prompts"])
    return Personas(
        roles=tuple(rows("roles.jsonl", role, "role", "name")),
        default=default,
        questions=tuple(rows("questions.jsonl", question, "question", "id")),
        traits=tuple(rows("traits.jsonl", trait, "trait", "name")),
        source=source,
    )


# -- the paper's layout --------------------------------------------------------------------------

_BOLD_DESCRIPTION = re.compile(r"\*\*[^*\n]+\*\*\.?[ \t]*([^\n]+)")


def _paper_description(obj: dict[str, Any], name: str, kind: str) -> str:
    """``description`` if present, else the sentence after the bold name in ``eval_prompt``."""
    if "description" in obj:
        return _text(obj["description"], "description")
    m = _BOLD_DESCRIPTION.search(obj.get("eval_prompt") or "")
    return m.group(1).strip() if m else f"The {name.replace('_', ' ')} {kind}."


def _paper_instructions(obj: dict[str, Any], with_neg: bool) -> list[dict[str, Any]]:
    raw = obj.get("instruction")
    if not isinstance(raw, list):
        raise PersonaError(f"field 'instruction' must be a list, got {type(raw).__name__}")
    if len(raw) != N_PROMPTS:
        raise PersonaError(f"field 'instruction' must have {N_PROMPTS} items, got {len(raw)}")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PersonaError(
                f"field 'instruction[{i}]' must be an object, got {type(item).__name__}"
            )
        for key in ("pos", "neg") if with_neg else ("pos",):
            if key not in item:
                raise PersonaError(f"field 'instruction[{i}]' lacks '{key}'")
    return raw


def _paper_role(obj: dict[str, Any], name: str) -> Role:
    prompts = [i["pos"] for i in _paper_instructions(obj, with_neg=False)]
    _texts(prompts, "instruction.pos")
    description = _paper_description(obj, name, "role")
    rubric = obj.get("eval_prompt")
    rubric = default_rubric(name, description) if not rubric else _template(rubric, "eval_prompt")
    questions = _texts(obj.get("questions", []), "questions")
    return Role(name, description, "unspecified", tuple(prompts), rubric, questions)


def _paper_trait(obj: dict[str, Any], name: str) -> Trait:
    pairs = []
    for i, item in enumerate(_paper_instructions(obj, with_neg=True)):
        with _at(f"field 'instruction[{i}]'"):
            pairs.append(TraitPair(item["pos"], item["neg"]))
    rubric = obj.get("eval_prompt") or ""
    if rubric:
        _template(rubric, "eval_prompt")
    questions = _texts(obj.get("questions", []), "questions")
    return Trait(name, _paper_description(obj, name, "trait"), tuple(pairs), questions, rubric)


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir() and any(c.glob("*.json"))), None)


def _find_paper_root(path: Path) -> Path | None:
    subdirs = sorted(c for c in path.iterdir() if c.is_dir())
    for root in (path, path / "data", *subdirs):
        if _first_dir(root / "roles" / "instructions", root / "roles"):
            return root
    return None


def _paper_questions(root: Path, path: Path) -> tuple[Question, ...]:
    named = ("extraction_questions.jsonl", "questions.jsonl")
    found = [d / n for d in (root, path) for n in named if (d / n).is_file()]
    if not found:
        found = sorted(root.glob("*question*.jsonl"))
    if not found:
        raise PersonaError(
            f"{root}: no questions file (looked for {', '.join(named)} and *question*.jsonl)"
        )
    fname = str(found[0])
    out: list[Question] = []
    first: dict[str, int] = {}
    for lineno, obj in _jsonl(found[0].read_text(encoding="utf-8"), fname):
        with _at(f"{fname} line {lineno}"):
            raw_id = obj.get("id", lineno - 1)
            if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
                raise PersonaError(
                    f"field 'id' must be an int or a string, got {type(raw_id).__name__}"
                )
            topic = obj.get("topic") or obj.get("category") or "unspecified"
            q = Question(str(raw_id), topic, _text(obj.get("question"), "question"))
            if q.id in first:
                raise PersonaError(
                    f"duplicate question id {q.id!r}, first defined on line {first[q.id]}"
                )
            first[q.id] = lineno
            out.append(q)
    return tuple(out)


def _paper_files(folder: Path | None) -> list[tuple[Path, str, dict[str, Any]]]:
    if folder is None:
        return []
    out = []
    for f in sorted(folder.glob("*.json")):
        obj = _json(f.read_text(encoding="utf-8"), str(f))
        if not isinstance(obj, dict):
            raise PersonaError(f"{f}: expected a JSON object, got {type(obj).__name__}")
        out.append((f, f.stem, obj))
    return out


def _load_paper(path: Path, root: Path) -> Personas:
    roles_dir = _first_dir(root / "roles" / "instructions", root / "roles")
    traits_dir = _first_dir(root / "traits" / "instructions", root / "traits")
    roles, default = [], None
    for f, stem, obj in _paper_files(roles_dir):
        if stem == "default":
            with _at(str(f)):
                prompts = [i["pos"] for i in _paper_instructions(obj, with_neg=False)]
                with _at("field 'instruction'"):
                    default = DefaultPrompts(tuple(prompts))
            continue
        with _at(f"{f} (role '{stem}')"):
            roles.append(_paper_role(obj, _name(stem, "file name")))
    if default is None:
        raise PersonaError(f"{roles_dir}: no default.json with the neutral prompts (paper layout)")
    traits = []
    for f, stem, obj in _paper_files(traits_dir):
        with _at(f"{f} (trait '{stem}')"):
            traits.append(_paper_trait(obj, _name(stem, "file name")))
    return Personas(
        tuple(roles), default, _paper_questions(root, path), tuple(traits), f"{path} (paper layout)"
    )


def load_personas(
    path: str | os.PathLike[str] | None = None, *, layout: Layout = "auto"
) -> Personas:
    """Load a persona catalogue; ``None`` loads the one shipped with axislens.

    ``layout="paper"`` is the *paper preset*: the folder must hold the public assistant-axis
    data (``load_personas(path, layout="paper")``; CLI ``--personas PATH``, detected
    automatically), whose role prompts, default prompts, extraction questions and judge rubrics
    are used verbatim. ``{model_name}`` in the default prompts renders to the public short name
    (``Qwen``, ``Llama``, ``Gemma``: :func:`axislens.presets.model_short_name`), for every
    catalogue. ``layout="axislens"`` requires the axislens layout; ``"auto"`` detects it.

    A directory is read in one of two layouts, detected automatically:

    - axislens layout (``roles.jsonl`` present): ``roles.jsonl``, ``default.json``,
      ``questions.jsonl`` and optionally ``traits.jsonl``; unknown fields are errors. A role
      line without ``rubric`` gets ``default_rubric(name, description)``.
    - paper layout (github.com/safety-research/assistant-axis), searched for in ``path``,
      ``path/data`` and each direct subfolder: ``roles/instructions/*.json`` (or ``roles/*.json``),
      each ``{"instruction": [{"pos": ...} x5], "eval_prompt": ..., "questions": [...]}``, with
      ``default.json`` among them holding the 5 neutral prompts; optionally
      ``traits/instructions/*.json`` (or ``traits/*.json``) with ``{"pos", "neg"}`` pairs; and
      ``extraction_questions.jsonl`` (or ``questions.jsonl``, or the one ``*question*.jsonl``)
      with ``question`` and ``id`` per line. Only those keys (plus an optional ``description``)
      are read; others, such as fork metadata, are ignored. ``eval_prompt`` keeps its
      ``{question}``/``{answer}`` slots; a role without one gets ``default_rubric``. Imported
      roles have category ``"unspecified"``, imported questions topic ``"unspecified"``.

    Raises ``PersonaError`` naming the file, the line or role, and the field at fault.
    """
    if layout not in get_args(Layout):
        raise PersonaError(f"unknown layout {layout!r}; expected one of {list(get_args(Layout))}")
    if path is None:
        if layout == "paper":
            raise PersonaError(
                "layout='paper' needs the path of the public assistant-axis data (not shipped)"
            )
        folder = resources.files("axislens").joinpath(_DATA)
        return _load_axislens(folder, "axislens/" + _DATA, "axislens:" + _DATA)
    p = Path(path)
    if not p.is_dir():
        raise PersonaError(f"{p}: not a directory of persona files")
    if (p / "roles.jsonl").is_file() and layout != "paper":
        return _load_axislens(p, str(p), f"{p} (axislens layout)")
    if layout == "axislens":
        raise PersonaError(f"{p}: no roles.jsonl (layout='axislens' needs the axislens layout)")
    root = _find_paper_root(p)
    if root is None:
        raise PersonaError(
            f"{p}: no persona catalogue found (expected roles.jsonl, or roles/instructions/*.json "
            "as in the paper's repository)"
        )
    return _load_paper(p, root)
