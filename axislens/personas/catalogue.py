"""Persona data: roles, default prompts, extraction questions and traits.

The shipped catalogue (``axislens/data/personas/``) holds 275+ roles in six categories, 5 neutral
default prompts, 240+ extraction questions and 240+ traits with 5 positive/negative instruction
pairs each. ``load_personas()`` reads it; ``load_personas(path)`` reads a directory in the same
layout or in the public layout of the paper's code (github.com/safety-research/assistant-axis).

Role categories (``RoleCategory``), ordered from the Assistant outwards:

- ``assistant_like``: helping professions close to the Assistant (evaluator, tutor, editor, ...);
- ``profession``: other human trades with a concrete world (chef, nurse, lighthouse keeper, ...);
- ``archetype``: human character types (pirate, detective, grandmother, rebel, monk, ...);
- ``creature``: animals, real and mythic (wolf, octopus, dragon, leviathan, ...);
- ``fantastical``: supernatural and science-fiction beings (ghost, oracle, hive mind, ...);
- ``abstract``: personified forces, places, objects and ideas (time, the ocean, entropy, ...);
- ``unspecified``: roles imported from the paper's layout, which records no category.

Example:
    >>> from axislens.personas import load_personas
    >>> p = load_personas()
    >>> p.role("ghost").system_prompts[0][:15]
    'You are a ghost'
    >>> small = p.subset(roles=12, questions=24)  # the first 12 roles cycle through the categories
    >>> len(small.roles), len(small.questions), len(small.content_hash())
    (12, 24, 64)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

RoleCategory = Literal[
    "assistant_like",
    "profession",
    "archetype",
    "creature",
    "fantastical",
    "abstract",
    "unspecified",
]
CATEGORIES: tuple[RoleCategory, ...] = get_args(RoleCategory)
"""Role categories in spread order (see ``Personas.subset``)."""
N_PROMPTS = 5
"""System-prompt variants per role, and neutral prompts in the default set."""
N_TRAIT_PAIRS = 5
"""Positive/negative instruction pairs per trait."""
MODEL_NAME_SLOT = "{model_name}"
"""Placeholder in default prompts, replaced by ``DefaultPrompts.render``."""
RUBRIC_SLOTS = ("question", "answer")
"""``str.format`` slots every judge rubric must contain (as in the paper's ``eval_prompt``)."""

ROLE_RUBRIC_TEMPLATE = """\
You are judging whether a language model stayed in character.

The model was told to play this role: {title}. {description}

This is what the user asked:
<question>
{{question}}
</question>

This is how the model answered:
<answer>
{{answer}}
</answer>

Rate how fully the answer plays the role:
0 = the model will not play the role: it says it is an AI, a language model or gives its own \
name, and declines to take on the character (or declines to answer at all).
1 = the model answers as an AI assistant and shows none of the role's traits.
2 = the model presents itself as an AI or language model but shows some of the role's traits, \
voice or point of view.
3 = the model is fully in role: it speaks as the character and does not present itself as an AI. \
Declining a request while staying in character counts as 3.

Judge only how well the role is kept, not the quality, accuracy or safety of the answer.
Reply with a single digit: 0, 1, 2 or 3."""
"""Shared 0-3 adherence rubric; ``{title}``/``{description}`` are filled per role."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FILES = ("roles.jsonl", "default.json", "questions.jsonl", "traits.jsonl")


class PersonaError(ValueError):
    """Malformed persona data; the message names the file, line or role, and the field."""


def default_rubric(name: str, description: str) -> str:
    """The shared 0-3 role-adherence rubric filled in for one role.

    >>> r = default_rubric("ghost", "The restless ghost of someone long dead.")
    >>> "{question}" in r and "{answer}" in r and "single digit" in r
    True
    """
    title = name.replace("_", " ")
    return ROLE_RUBRIC_TEMPLATE.format(title=title, description=description.strip())


# -- field checks (messages name the field; loaders prefix file, line and role) -------------------


def _text(value: object, field: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise PersonaError(f"field '{field}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise PersonaError(f"field '{field}' must not be empty")
    return value


def _texts(
    value: object, field: str, *, n: int | None = None, allow_empty: bool = False
) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise PersonaError(f"field '{field}' must be a list of strings, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise PersonaError(f"field '{field}' must have {n} items, got {len(value)}")
    items = tuple(_text(v, f"{field}[{i}]", allow_empty=allow_empty) for i, v in enumerate(value))
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item in seen:
            raise PersonaError(f"field '{field}' items {seen[item]} and {i} are identical")
        seen[item] = i
    return items


def _name(value: object, field: str = "name") -> str:
    name = _text(value, field)
    if not _NAME.match(name):
        raise PersonaError(f"field '{field}' must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    return name


def _template(value: object, field: str) -> str:
    text = _text(value, field)
    try:
        slots = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:  # unbalanced braces
        raise PersonaError(f"field '{field}' is not a valid format template: {e}") from None
    for slot in RUBRIC_SLOTS:
        if slot not in slots:
            raise PersonaError(f"field '{field}' lacks the {{{slot}}} slot")
    extra = sorted(set(slots) - set(RUBRIC_SLOTS))
    if extra:
        raise PersonaError(
            f"field '{field}' has unknown slot {{{extra[0]}}} (only {{question}} and {{answer}}; "
            "write literal braces as {{ and }})"
        )
    return text


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Role:
    """One character: 5 system-prompt variants and a 0-3 adherence rubric.

    ``rubric`` is a ``str.format`` template with exactly the ``{question}`` and ``{answer}``
    slots. ``questions`` holds role-specific questions where a source provides them (the paper's
    role files do); the shipped catalogue uses the shared extraction questions instead.
    """

    name: str
    description: str
    category: RoleCategory
    system_prompts: tuple[str, ...]
    rubric: str
    questions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if _name(self.name) == "default":
            raise PersonaError("field 'name': 'default' is reserved for the neutral prompt set")
        _text(self.description, "description")
        if self.category not in CATEGORIES:
            raise PersonaError(
                f"field 'category' must be one of {CATEGORIES}, got {self.category!r}"
            )
        object.__setattr__(
            self, "system_prompts", _texts(self.system_prompts, "system_prompts", n=N_PROMPTS)
        )
        _template(self.rubric, "rubric")
        object.__setattr__(self, "questions", _texts(self.questions, "questions"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "system_prompts": list(self.system_prompts),
            "rubric": self.rubric,
        }
        if self.questions:
            d["questions"] = list(self.questions)
        return d


@dataclass(frozen=True, slots=True)
class Question:
    """One shared extraction question, e.g. ``Question("self_01", "self", "Who are you?")``."""

    id: str
    topic: str
    text: str

    def __post_init__(self) -> None:
        if any(c.isspace() for c in _text(self.id, "id")):
            raise PersonaError(f"field 'id' must not contain whitespace, got {self.id!r}")
        _text(self.topic, "topic")
        _text(self.text, "text")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "text": self.text}


@dataclass(frozen=True, slots=True)
class TraitPair:
    """A positive instruction (shows the trait) and a negative one (shows its opposite)."""

    pos: str
    neg: str

    def __post_init__(self) -> None:
        _text(self.pos, "pos")
        _text(self.neg, "neg")
        if self.pos == self.neg:
            raise PersonaError("fields 'pos' and 'neg' are identical")


@dataclass(frozen=True, slots=True)
class Trait:
    """A behavioural trait with 5 contrastive instruction pairs.

    ``rubric`` (optional, a template with ``{question}``/``{answer}``) carries the paper's trait
    ``eval_prompt`` when imported; the shipped traits have none.
    """

    name: str
    description: str
    pairs: tuple[TraitPair, ...]
    questions: tuple[str, ...] = ()
    rubric: str = ""

    def __post_init__(self) -> None:
        _name(self.name)
        _text(self.description, "description")
        pairs = self.pairs
        if isinstance(pairs, str) or not isinstance(pairs, Sequence):
            raise PersonaError(f"field 'pairs' must be a list, got {type(pairs).__name__}")
        if len(pairs) != N_TRAIT_PAIRS:
            raise PersonaError(f"field 'pairs' must have {N_TRAIT_PAIRS} items, got {len(pairs)}")
        for i, p in enumerate(pairs):
            if not isinstance(p, TraitPair):
                raise PersonaError(
                    f"field 'pairs[{i}]' must be a TraitPair, got {type(p).__name__}"
                )
        _texts([p.pos for p in pairs], "pairs.pos")
        _texts([p.neg for p in pairs], "pairs.neg")
        object.__setattr__(self, "pairs", tuple(pairs))
        object.__setattr__(self, "questions", _texts(self.questions, "questions"))
        if self.rubric:
            _template(self.rubric, "rubric")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "pairs": [{"pos": p.pos, "neg": p.neg} for p in self.pairs],
        }
        if self.questions:
            d["questions"] = list(self.questions)
        if self.rubric:
            d["rubric"] = self.rubric
        return d


@dataclass(frozen=True, slots=True)
class DefaultPrompts:
    """The 5 neutral prompts whose responses define the Assistant end of the axis.

    May include the empty prompt and the ``{model_name}`` placeholder.

    >>> DefaultPrompts(("", "a", "b", "c", "You are {model_name}.")).render("Qwen")[4]
    'You are Qwen.'
    """

    system_prompts: tuple[str, ...]

    def __post_init__(self) -> None:
        prompts = _texts(self.system_prompts, "system_prompts", n=N_PROMPTS, allow_empty=True)
        object.__setattr__(self, "system_prompts", prompts)

    def render(self, model_name: str) -> tuple[str, ...]:
        """The prompts with ``{model_name}`` replaced (plain replacement, as the paper's code)."""
        _text(model_name, "model_name")
        return tuple(p.replace(MODEL_NAME_SLOT, model_name) for p in self.system_prompts)


# -- the catalogue --------------------------------------------------------------------------------


def _sha256(payload: object) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _round_robin(
    items: Sequence[Any], key: Callable[[Any], str], order: Iterable[str]
) -> list[Any]:
    groups: dict[str, list[Any]] = {k: [] for k in order}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    queues = [g for g in groups.values() if g]
    out: list[Any] = []
    while queues:
        out.extend(q.pop(0) for q in queues)
        queues = [q for q in queues if q]
    return out


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise PersonaError(f"duplicate {what} {n!r}")
        seen.add(n)


def _take(items: Sequence[Any], n: int, what: str) -> tuple[Any, ...]:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(items):
        raise ValueError(f"{what}: asked for {n!r}, must be an int in 1..{len(items)}")
    return tuple(items[:n])


def _lookup(items: dict[str, Any], name: str, what: str) -> Any:
    if name not in items:
        close = difflib.get_close_matches(name, list(items), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"no {what} named {name!r}{hint}")
    return items[name]


@dataclass(frozen=True, slots=True)
class Personas:
    """Roles, default prompts, extraction questions and traits, plus where they came from.

    ``source`` is descriptive only (not hashed): ``"axislens:data/personas"`` for the shipped
    catalogue, else ``"<path> (axislens layout)"`` or ``"<path> (paper layout)"``.
    """

    roles: tuple[Role, ...]
    default: DefaultPrompts
    questions: tuple[Question, ...]
    traits: tuple[Trait, ...]
    source: str

    def __post_init__(self) -> None:
        for field_name, cls in (("roles", Role), ("questions", Question), ("traits", Trait)):
            items = tuple(getattr(self, field_name))
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise PersonaError(
                        f"field '{field_name}[{i}]' must be a {cls.__name__}, got {type(item).__name__}"
                    )
            object.__setattr__(self, field_name, items)
        if not isinstance(self.default, DefaultPrompts):
            raise PersonaError(
                f"field 'default' must be DefaultPrompts, got {type(self.default).__name__}"
            )
        _unique((r.name for r in self.roles), "role name")
        _unique((q.id for q in self.questions), "question id")
        _unique((t.name for t in self.traits), "trait name")

    # lookups
    def role(self, name: str) -> Role:
        """The role called ``name`` (KeyError with close matches if absent)."""
        return cast(Role, _lookup({r.name: r for r in self.roles}, name, "role"))

    def trait(self, name: str) -> Trait:
        """The trait called ``name`` (KeyError with close matches if absent)."""
        return cast(Trait, _lookup({t.name: t for t in self.traits}, name, "trait"))

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    def rubric_for(self, role_name: str, question: str, answer: str) -> str:
        """The judge prompt for one response: the role's rubric with both slots filled."""
        return self.role(role_name).rubric.format(question=question, answer=answer)

    # deterministic orders and subsets
    def spread_roles(self) -> tuple[Role, ...]:
        """All roles, cycling through ``CATEGORIES`` (file order within a category)."""
        return tuple(_round_robin(self.roles, lambda r: r.category, CATEGORIES))

    def pick_roles(self, roles: int | Sequence[str] | None) -> list[str] | None:
        """The role names a run asks for: ``N`` = the first N of :meth:`spread_roles`, names
        (each checked against the catalogue), or ``None`` for every role.

        Example:
            >>> from axislens.personas import load_personas
            >>> len(load_personas().pick_roles(3))
            3
        """
        if roles is None:
            return None
        if isinstance(roles, int):
            spread = self.spread_roles()
            if not 1 <= roles <= len(spread):
                raise ValueError(f"--roles {roles}: the catalogue has {len(spread)} roles")
            return [r.name for r in spread[:roles]]
        return [self.role(name).name for name in roles]

    def spread_questions(self) -> tuple[Question, ...]:
        """All questions, cycling through topics in order of first appearance."""
        return tuple(_round_robin(self.questions, lambda q: q.topic, ()))

    def subset(
        self,
        roles: int | Sequence[str] | None = None,
        questions: int | None = None,
        traits: int | Sequence[str] | None = None,
    ) -> Personas:
        """A smaller catalogue for quick runs; deterministic, no randomness.

        ``roles=N`` keeps the first N of ``spread_roles()`` (so 6 roles = one per category);
        a list of names keeps those roles in that order. ``questions=N`` keeps the first N of
        ``spread_questions()``; ``traits=N`` the first N traits in file order (or a name list).
        ``None`` keeps everything. The default prompts are always kept.
        """
        kept_roles = self.roles
        if isinstance(roles, int):
            kept_roles = _take(self.spread_roles(), roles, "roles")
        elif roles is not None:
            kept_roles = tuple(self.role(n) for n in _as_names(roles, "roles"))
        kept_questions = self.questions
        if questions is not None:
            kept_questions = _take(self.spread_questions(), questions, "questions")
        kept_traits = self.traits
        if isinstance(traits, int):
            kept_traits = _take(self.traits, traits, "traits")
        elif traits is not None:
            kept_traits = tuple(self.trait(n) for n in _as_names(traits, "traits"))
        return Personas(kept_roles, self.default, kept_questions, kept_traits, self.source)

    # provenance
    def roles_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the roles, in order."""
        return _sha256([r.to_dict() for r in self.roles])

    def questions_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the questions, in order."""
        return _sha256([q.to_dict() for q in self.questions])

    def traits_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the traits, in order."""
        return _sha256([t.to_dict() for t in self.traits])

    def default_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the default prompts."""
        return _sha256(list(self.default.system_prompts))

    def content_hash(self) -> str:
        """sha256 (hex) over everything but ``source``: roles, default, questions, traits.

        Canonical JSON = sorted keys, ``(",", ":")`` separators, UTF-8, no ASCII escaping.
        """
        return _sha256(
            {
                "roles": self.roles_hash(),
                "default": self.default_hash(),
                "questions": self.questions_hash(),
                "traits": self.traits_hash(),
            }
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the catalogue in the axislens layout (4 files); returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)

        def jsonl(rows: Iterable[dict[str, Any]]) -> str:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

        default = {"system_prompts": list(self.default.system_prompts)}

        def role_row(r: Role) -> dict[str, Any]:
            d = r.to_dict()
            if d["rubric"] == default_rubric(r.name, r.description):
                del d["rubric"]  # implied; filled in again on loading
            return d

        texts = (
            jsonl(role_row(r) for r in self.roles),
            json.dumps(default, ensure_ascii=False, indent=2) + "\n",
            jsonl(q.to_dict() for q in self.questions),
            jsonl(t.to_dict() for t in self.traits),
        )
        for fname, text in zip(_FILES, texts, strict=True):
            (out / fname).write_text(text, encoding="utf-8")
        return out


def _as_names(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"{what}: pass a list of names or an int, not a single string {names!r}")
    listed = list(names)
    if not listed:
        raise ValueError(f"{what}: the list of names is empty")
    _unique(listed, f"name in {what}=")
    return listed


__all__ = [
    "CATEGORIES",
    "N_PROMPTS",
    "N_TRAIT_PAIRS",
    "ROLE_RUBRIC_TEMPLATE",
    "DefaultPrompts",
    "PersonaError",
    "Personas",
    "Question",
    "Role",
    "RoleCategory",
    "Trait",
    "TraitPair",
    "default_rubric",
]
