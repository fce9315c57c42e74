"""The pieces the job configs are made of: which persona items, and what the store records.

A job config (:class:`~axislens.jobs.collect.CollectConfig`, ...) is a frozen dataclass composed
of these and of :class:`~axislens.model.decoding.SamplingConfig`; each piece is checked once,
when it is made, so a bad value fails before any model loads.

Example:
    >>> data = PersonaData(roles=48, n_prompts=2, n_questions=3, default_questions=36)
    >>> data.default_questions
    36
    >>> StoreLayout(hooks=("resid_post", "mlp_out")).hooks
    ('resid_post', 'mlp_out')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from axislens.directions import check_hook

if TYPE_CHECKING:
    from axislens.personas.designs import DesignName, QuestionDesign

__all__ = ["PersonaData", "StoreLayout", "SummaryMapping"]


def _positive(value: Any, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class PersonaData:
    """Which (system prompt, question) items a persona run asks for
    (:func:`~axislens.collection.responses.persona_items`).

    Attributes:
        personas: a catalogue folder (axislens or the paper's layout), a loaded
            :class:`~axislens.personas.Personas`, or ``None`` for the shipped catalogue.
        roles: ``N`` = the first N roles of the catalogue's spread order (categories
            interleaved), role names, or ``None`` for every role.
        n_prompts: system-prompt variants per role (the shipped roles have 5).
        n_questions: questions per role prompt.
        default_prompts: default (no-role) system prompts; unset (``None``): as many as the
            role prompts. The default set is one set every role is compared against.
        default_questions: questions per default prompt; unset (``None``): as many as per
            role prompt. More default items steady the axis most cheaply.
        design: which questions each side answers (:mod:`axislens.personas.designs`); ``None``
            picks shared or rotated from the counts.
        include_default: also ask the default prompts (the Assistant end of the axis).
    """

    personas: Any = None
    roles: int | tuple[str, ...] | None = None
    n_prompts: int = 5
    n_questions: int = 240
    default_prompts: int | None = None
    default_questions: int | None = None
    design: QuestionDesign | DesignName | None = None
    include_default: bool = True

    def __post_init__(self) -> None:
        roles: Any = self.roles
        if isinstance(roles, int):
            _positive(roles, "roles")
        elif isinstance(roles, str):
            raise ValueError(f"roles: expected a number or a list of names, got {roles!r}")
        elif roles is not None:
            object.__setattr__(self, "roles", tuple(roles))
        _positive(self.n_prompts, "n_prompts")
        _positive(self.n_questions, "n_questions")
        _positive(self.default_prompts, "default_prompts", optional=True)
        _positive(self.default_questions, "default_questions", optional=True)


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """What an activation store holds, fixed when it is created.

    Attributes:
        hooks: hook points per layer (short names: ``resid_post``, ``mlp_out``, ...).
        layers: layer indices, a slice, or ``None`` for every layer.
        store_dtype: storage dtype of a new store (``"float32"`` default, ``"bfloat16"``).
        force: resume a store whose catalogue, sampling or model weights changed (the
            manifest records each override).
    """

    hooks: tuple[str, ...] = ("resid_post",)
    layers: Sequence[int] | slice | None = None
    store_dtype: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        hooks = (self.hooks,) if isinstance(self.hooks, str) else tuple(self.hooks)
        if not hooks:
            raise ValueError("hooks: expected at least one hook")
        object.__setattr__(self, "hooks", tuple(check_hook(h, "hooks") for h in hooks))


class SummaryMapping(Mapping[str, Any]):
    """A job result that reads as its ``summary.json`` mapping (``result["pca"]``), so code
    written for the 0.2 dicts keeps working; the result's typed fields sit beside it."""

    __slots__ = ()
    summary: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)
