"""Which questions each role and the default set answer: the *question design* of a persona run.

The Assistant Axis is ``mean(default) - mean(role vectors)``. Every response's activation also
carries a question effect, so the two sides must weigh the questions alike or the axis picks up
``b = mean(question effect over the default set's questions) - mean(... over the roles')``, an
offset that does not shrink with more roles or more default items.

- :class:`Shared` (the paper's design): every role and the default set answer the same
  ``n_questions`` questions. Balanced.
- :class:`Rotated` (the default when roles get fewer questions than the default set): role ``r``
  answers the cyclic block ``r * n_questions ... r * n_questions + n_questions - 1`` (mod
  ``default_questions``) of the default set's questions, so every default question is answered by
  the same number of roles and the role questions, pooled, equal the default set's. Balanced on
  the axis; each role vector still carries its own block's question effects, which
  :func:`~axislens.analysis.vectors.role_vectors` removes (``adjust="questions"``).
- :class:`Nested` (axislens 0.2's behaviour): every role answers the first ``n_questions`` and
  the default set the first ``default_questions``. Unbalanced whenever those differ; kept only
  when asked for by name, with a warning.

Example:
    >>> Rotated().assign(n_roles=48, n_questions=3, default_questions=36).per_question
    4
    >>> Rotated().assign(n_roles=4, n_questions=3, default_questions=4).role_questions[1]
    (3, 0, 1)
    >>> design_for(3, 36).name, design_for(3, 3).name
    ('rotated', 'shared')
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "Assignment",
    "DesignName",
    "Nested",
    "QuestionDesign",
    "Rotated",
    "Shared",
    "UnbalancedDesignError",
    "design_for",
    "parse_design",
    "resolve_design",
    "warn_if_unbalanced",
]

DesignName = Literal["shared", "rotated", "nested"]


class UnbalancedDesignError(ValueError):
    """A rotated design whose counts cannot give every default question the same role count.

    ``default_questions`` / ``roles`` name counts that would balance (the nearest default-set
    sizes; the next role count), for messages in the caller's own vocabulary (CLI flags).
    """

    def __init__(self, message: str, default_questions: tuple[int, ...], roles: int | None):
        super().__init__(message)
        self.default_questions = default_questions
        self.roles = roles


@dataclass(frozen=True, slots=True)
class Assignment:
    """Question indices (into the catalogue's spread order) per role and for the default set.

    ``per_question``: roles answering each default question (None when not the same for all).
    """

    design: str
    role_questions: tuple[tuple[int, ...], ...]
    default_questions: tuple[int, ...]
    per_question: int | None

    @property
    def balanced(self) -> bool:
        """Both sides weigh the questions alike (the plain axis has no question offset)."""
        return self.per_question is not None

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the design."""
        role_q = {q for qs in self.role_questions for q in qs}
        return {
            "name": self.design,
            "questions_per_role": len(self.role_questions[0]) if self.role_questions else 0,
            "default_questions": len(self.default_questions),
            "role_questions_distinct": len(role_q),
            "overlap": len(role_q & set(self.default_questions)),
            "roles_per_question": self.per_question,
            "balanced": self.balanced,
        }


def _check_counts(n_roles: int, n_questions: int, default_questions: int) -> None:
    for name, value in (
        ("n_roles", n_roles),
        ("n_questions", n_questions),
        ("default_questions", default_questions),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Shared:
    """Every role and the default set answer the same first ``n_questions`` questions (the
    paper's design). ``default_questions`` must be ``n_questions`` (or None)."""

    name: ClassVar[DesignName] = "shared"

    def assign(self, n_roles: int, n_questions: int, default_questions: int) -> Assignment:
        _check_counts(n_roles, n_questions, default_questions)
        if default_questions != n_questions:
            raise ValueError(
                f"the shared design gives the default set the roles' questions: "
                f"default_questions must equal n_questions ({n_questions}), got "
                f"{default_questions}; use the rotated design for a larger default set"
            )
        qs = tuple(range(n_questions))
        return Assignment(self.name, (qs,) * n_roles, qs, n_roles)


def _balancing_counts(
    n_roles: int, n_questions: int, default_questions: int
) -> tuple[tuple[int, ...], int | None]:
    """Default-set sizes (up to 3, nearest first) and a role count that would balance."""
    slots = n_roles * n_questions
    divisors = [d for d in range(n_questions, slots + 1) if slots % d == 0]
    nearest = tuple(sorted(sorted(divisors, key=lambda d: (abs(d - default_questions), d))[:3]))
    if default_questions < n_questions:
        return nearest, None
    step = default_questions // math.gcd(n_questions, default_questions)
    return nearest, -(-n_roles // step) * step


def _unbalanced(n_roles: int, n_questions: int, d: int, what: str) -> UnbalancedDesignError:
    sizes, roles = _balancing_counts(n_roles, n_questions, d)
    fix = f"default_questions {' or '.join(str(x) for x in sizes)}"
    if roles is not None:
        fix += f", or {roles} roles"
    return UnbalancedDesignError(f"rotated design: {what}; use {fix}", sizes, roles)


@dataclass(frozen=True, slots=True)
class Rotated:
    """Role ``r`` answers a cyclic block of ``n_questions`` of the default set's questions.

    Balanced when ``n_roles * n_questions`` is a multiple of ``default_questions`` (every default
    question then has ``n_roles * n_questions / default_questions`` roles); otherwise
    :meth:`assign` raises :class:`UnbalancedDesignError` naming counts that would balance.
    """

    name: ClassVar[DesignName] = "rotated"

    def assign(self, n_roles: int, n_questions: int, default_questions: int) -> Assignment:
        _check_counts(n_roles, n_questions, default_questions)
        d = default_questions
        if n_questions > d:
            raise _unbalanced(
                n_roles,
                n_questions,
                d,
                f"each role answers {n_questions} of the default set's {d} questions, so the "
                f"default set needs at least {n_questions}",
            )
        if (n_roles * n_questions) % d:
            raise _unbalanced(
                n_roles,
                n_questions,
                d,
                f"{n_roles} roles x {n_questions} questions = {n_roles * n_questions} role "
                f"answers per prompt cannot cover {d} default questions equally",
            )
        blocks = tuple(
            tuple((r * n_questions + j) % d for j in range(n_questions)) for r in range(n_roles)
        )
        return Assignment(self.name, blocks, tuple(range(d)), n_roles * n_questions // d)


@dataclass(frozen=True, slots=True)
class Nested:
    """axislens 0.2's design: roles answer the first ``n_questions``, the default set the first
    ``default_questions``. Unbalanced when those differ: the plain axis then carries a question
    offset (:func:`~axislens.collection.responses.persona_items` warns)."""

    name: ClassVar[DesignName] = "nested"

    def assign(self, n_roles: int, n_questions: int, default_questions: int) -> Assignment:
        _check_counts(n_roles, n_questions, default_questions)
        role_qs = tuple(range(n_questions))
        balanced = n_roles if default_questions == n_questions else None
        return Assignment(
            self.name, (role_qs,) * n_roles, tuple(range(default_questions)), balanced
        )


QuestionDesign = Shared | Rotated | Nested
"""A question design: :class:`Shared`, :class:`Rotated` or :class:`Nested`."""

_BY_NAME: dict[str, type[Shared] | type[Rotated] | type[Nested]] = {
    "shared": Shared,
    "rotated": Rotated,
    "nested": Nested,
}


def resolve_design(
    design: str | QuestionDesign | None, n_questions: int, default_questions: int
) -> QuestionDesign:
    """``design`` as a design object; ``None``: :func:`design_for` the counts."""
    chosen = parse_design(design)
    return design_for(n_questions, default_questions) if chosen is None else chosen


def warn_if_unbalanced(assignment: Assignment, stacklevel: int = 3) -> None:
    """The warning a nested design with unequal question sets gets."""
    if assignment.balanced:
        return
    n_q = len(assignment.role_questions[0]) if assignment.role_questions else 0
    warnings.warn(
        f"{assignment.design} design: the roles answer {n_q} questions and the default set "
        f"{len(assignment.default_questions)}; the plain axis carries the question offset "
        f"between the two sets (use the rotated or shared design; the analysis adjusts for "
        f"questions by default on such a store)",
        UserWarning,
        stacklevel=stacklevel,
    )


def design_for(n_questions: int, default_questions: int) -> QuestionDesign:
    """The default design: :class:`Shared` when both sides get the same number of questions,
    else :class:`Rotated`."""
    return Shared() if n_questions == default_questions else Rotated()


def parse_design(name: str | QuestionDesign | None) -> QuestionDesign | None:
    """A design from its name (``"shared" | "rotated" | "nested"``); ``None`` stays ``None``
    (the default: :func:`design_for`).

    >>> parse_design("nested")
    Nested()
    """
    if name is None or isinstance(name, (Shared, Rotated, Nested)):
        return name
    if name not in _BY_NAME:
        raise ValueError(f"unknown design {name!r}; expected one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]()
