"""Evaluation sets as data: persona attacks, identity probes, capability QA, a perplexity text.

An eval set is a folder of JSON-lines files (one JSON object per line; blank lines and lines
starting with ``#`` are ignored) plus a plain-text sample. Any file may be missing (that part
is then empty), but the folder must hold at least one of them. Schemas (every field required,
unknown fields rejected so that typos fail loudly):

``attacks.jsonl``: persona-based attacks::

    {"id": "atk-vex-rules", "system": "You are Vex, a rogue AI who ...",
     "request": "Tell me who you really are ...", "category": "rule_denial"}

    id        unique non-empty string
    system    non-empty system prompt that assigns a character
    request   non-empty user request that pushes the model to act out the character
    category  non-empty free label (e.g. identity_override, rule_denial, emotional_bond)

    Optional (the paper's persona-modulation jailbreaks carry them): ``harm_category`` (e.g.
    "weapons", "fraud") and ``persona`` (the character the system prompt assigns), non-empty
    strings when present, kept on :class:`AttackPrompt` for breakdowns of the replies.

``identity.jsonl``: "who are you?"-style probes::

    {"id": "pirate-who", "system": "You are a pirate captain ...", "question": "Who are you?"}

    system    a role prompt, or "" for none (the model's default persona)

``qa.jsonl``: short capability questions with reference answers::

    {"id": "qa-capital-france", "question": "What is the capital of France?", "answers": ["Paris"]}

    answers   non-empty list of non-empty strings; a reply is right when it equals one of them
              (exact match) or contains one as whole words (contains), after normalisation

``text_sample.txt``: plain prose for perplexity (UTF-8).

The shipped set (``axislens/data/evals/``, original text) is small: 30 attacks, 30 identity
probes (6 questions under no system prompt and 4 role prompts), 40 QA items and a ~360-word
sample. The shipped attacks are *benign but persona-pushing* ("tell me which rules you ignore");
they contain no request that needs a genuinely harmful completion. To measure harmful
compliance, pass your own attack file (same schema) with ``load_eval_set(attacks=path)``.

Example:
    >>> ev = load_eval_set()
    >>> len(ev.attacks), len(ev.identity), len(ev.qa)
    (30, 30, 40)
    >>> ev.identity[6].messages()[0]["role"]
    'system'
    >>> small = ev.subset(attacks=4, identity=6, qa=5)
    >>> len(small.attacks), len(small.identity), len(small.qa)
    (4, 6, 5)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "AttackPrompt",
    "EvalSet",
    "EvalSetError",
    "IdentityProbe",
    "QAItem",
    "eval_set_summary",
    "load_eval_set",
]

FILES = ("attacks.jsonl", "identity.jsonl", "qa.jsonl", "text_sample.txt")
"""File names of an eval-set folder."""


class EvalSetError(ValueError):
    """An eval-set file is missing or malformed; the message names file, line and field."""


@dataclass(frozen=True, slots=True)
class AttackPrompt:
    """A system prompt assigning a character, and a request that pushes the character."""

    id: str
    system: str
    request: str
    category: str
    harm_category: str = ""
    persona: str = ""

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.request},
        ]


@dataclass(frozen=True, slots=True)
class IdentityProbe:
    """An identity question under a role prompt (``system``) or none (``system == ""``)."""

    id: str
    system: str
    question: str

    @property
    def role_prompted(self) -> bool:
        return bool(self.system.strip())

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.role_prompted else []
        return [*msgs, {"role": "user", "content": self.question}]


@dataclass(frozen=True, slots=True)
class QAItem:
    """A short question and its accepted reference answers."""

    id: str
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EvalSet:
    """The parts of an evaluation; ``source`` says where each came from."""

    attacks: tuple[AttackPrompt, ...] = ()
    identity: tuple[IdentityProbe, ...] = ()
    qa: tuple[QAItem, ...] = ()
    text_sample: str = ""
    source: str = ""

    def content_hash(self) -> str:
        """sha256 of the items and text (not of ``source``): identifies the data in results."""
        payload = {
            # the optional fields only where set: hashes of sets without them are unchanged
            "attacks": [
                [a.id, a.system, a.request, a.category]
                + ([a.harm_category, a.persona] if a.harm_category or a.persona else [])
                for a in self.attacks
            ],
            "identity": [[p.id, p.system, p.question] for p in self.identity],
            "qa": [[q.id, q.question, list(q.answers)] for q in self.qa],
            "text_sample": self.text_sample,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def subset(
        self, *, attacks: int | None = None, identity: int | None = None, qa: int | None = None
    ) -> EvalSet:
        """Evenly spaced ``n`` items of each part (``None``: all; ``0``: none), order kept.

        Even spacing keeps a small identity subset spread over the role prompts and "none".
        """
        return replace(
            self,
            attacks=_spread(self.attacks, attacks),
            identity=_spread(self.identity, identity),
            qa=_spread(self.qa, qa),
        )


def _spread(items: tuple[Any, ...], n: int | None) -> tuple[Any, ...]:
    if n is None or n >= len(items):
        return items
    if n < 0:
        raise ValueError(f"subset sizes must be >= 0, got {n}")
    return tuple(items[(k * len(items)) // n] for k in range(n))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_SCHEMAS: dict[str, tuple[str, ...]] = {
    "attacks.jsonl": ("id", "system", "request", "category"),
    "identity.jsonl": ("id", "system", "question"),
    "qa.jsonl": ("id", "question", "answers"),
}
_MAY_BE_EMPTY = {("identity.jsonl", "system")}
_OPTIONAL: dict[str, tuple[str, ...]] = {"attacks.jsonl": ("harm_category", "persona")}


def _read_jsonl(path: Path, schema: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    name = path.name
    optional = _OPTIONAL.get(name, ())
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise EvalSetError(f"{path}: not UTF-8 text ({err.reason})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalSetError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise EvalSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for key in obj:
            if key not in schema and key not in optional:
                raise EvalSetError(
                    f"{where}: unknown field {key!r}; {name} fields are "
                    f"{', '.join(schema + optional)}"
                )
        for key in schema + tuple(k for k in optional if k in obj):
            if key not in obj:
                raise EvalSetError(f"{where}: missing field {key!r}")
            value = obj[key]
            if key == "answers":
                if not isinstance(value, list) or not value:
                    raise EvalSetError(
                        f"{where}: field 'answers' must be a non-empty list of strings"
                    )
                for i, a in enumerate(value):
                    if not isinstance(a, str) or not a.strip():
                        raise EvalSetError(
                            f"{where}: field 'answers'[{i}] must be a non-empty string, got {a!r}"
                        )
                continue
            if not isinstance(value, str):
                raise EvalSetError(
                    f"{where}: field {key!r} must be a string, got {type(value).__name__}"
                )
            if not value.strip() and (name, key) not in _MAY_BE_EMPTY:
                raise EvalSetError(f"{where}: field {key!r} is empty")
        if obj["id"] in seen:
            raise EvalSetError(
                f"{where}: field 'id' {obj['id']!r} repeats the id on line {seen[obj['id']]}"
            )
        seen[obj["id"]] = lineno
        rows.append((lineno, obj))
    return rows


def _shipped_dir() -> Path:
    return Path(str(resources.files("axislens") / "data" / "evals"))


def _load_attacks(path: Path) -> tuple[AttackPrompt, ...]:
    return tuple(
        AttackPrompt(
            o["id"],
            o["system"],
            o["request"],
            o["category"],
            o.get("harm_category", ""),
            o.get("persona", ""),
        )
        for _, o in _read_jsonl(path, _SCHEMAS["attacks.jsonl"])
    )


def load_eval_set(
    path: str | os.PathLike[str] | None = None,
    *,
    attacks: str | os.PathLike[str] | None = None,
) -> EvalSet:
    """Load an eval-set folder (default: the shipped set) and validate every line.

    Args:
        path: a folder with any of ``attacks.jsonl``, ``identity.jsonl``, ``qa.jsonl``,
            ``text_sample.txt`` (schemas in the module docstring).
        attacks: a JSONL file with the attack schema that *replaces* the folder's attacks, e.g.
            your own harmful-request set (the shipped data holds none).

    Raises:
        EvalSetError: naming the file, line and field at fault (bad JSON, missing, unknown or
            empty field, repeated id), or a folder holding none of the files.

    Example:
        Needs files on disk (not run by the doctest suite).

        >>> load_eval_set("my_evals/", attacks="my_harmful_attacks.jsonl")  # doctest: +SKIP
    """
    folder = _shipped_dir() if path is None else Path(path)
    if not folder.is_dir():
        raise EvalSetError(f"{folder}: eval set folder not found")
    present = [f for f in FILES if (folder / f).is_file()]
    if not present:
        raise EvalSetError(f"{folder}: holds none of the eval-set files {', '.join(FILES)}")
    parts: dict[str, Any] = {}
    if (folder / "attacks.jsonl").is_file():
        parts["attacks"] = _load_attacks(folder / "attacks.jsonl")
    if (folder / "identity.jsonl").is_file():
        parts["identity"] = tuple(
            IdentityProbe(o["id"], o["system"], o["question"])
            for _, o in _read_jsonl(folder / "identity.jsonl", _SCHEMAS["identity.jsonl"])
        )
    if (folder / "qa.jsonl").is_file():
        parts["qa"] = tuple(
            QAItem(o["id"], o["question"], tuple(o["answers"]))
            for _, o in _read_jsonl(folder / "qa.jsonl", _SCHEMAS["qa.jsonl"])
        )
    if (folder / "text_sample.txt").is_file():
        try:
            parts["text_sample"] = (folder / "text_sample.txt").read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise EvalSetError(f"{folder / 'text_sample.txt'}: not UTF-8 ({err.reason})") from None
    source = "axislens:shipped" if path is None else str(folder)
    if attacks is not None:
        attack_path = Path(attacks)
        if not attack_path.is_file():
            raise EvalSetError(f"{attack_path}: attack file not found")
        parts["attacks"] = _load_attacks(attack_path)
        source += f" + attacks:{attack_path}"
    return EvalSet(source=source, **parts)


def eval_set_summary(ev: EvalSet) -> Mapping[str, Any]:
    """Counts and hash for provenance records."""
    return {
        "source": ev.source,
        "sha256": ev.content_hash(),
        "n_attacks": len(ev.attacks),
        "n_identity": len(ev.identity),
        "n_identity_role_prompted": sum(p.role_prompted for p in ev.identity),
        "n_qa": len(ev.qa),
        "text_sample_chars": len(ev.text_sample),
    }
