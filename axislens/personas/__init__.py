"""Persona data: the shipped catalogue of roles, default prompts, extraction questions and traits,
and readers for catalogues on disk (the axislens layout and the paper's public layout). Model-free.
"""

from __future__ import annotations

from axislens.personas.catalogue import (
    CATEGORIES,
    N_PROMPTS,
    N_TRAIT_PAIRS,
    ROLE_RUBRIC_TEMPLATE,
    DefaultPrompts,
    PersonaError,
    Personas,
    Question,
    Role,
    RoleCategory,
    Trait,
    TraitPair,
    default_rubric,
)
from axislens.personas.designs import (
    Nested,
    QuestionDesign,
    Rotated,
    Shared,
    UnbalancedDesignError,
    design_for,
    parse_design,
)
from axislens.personas.layouts import (
    load_personas,
)

__all__ = [
    "CATEGORIES",
    "N_PROMPTS",
    "N_TRAIT_PAIRS",
    "ROLE_RUBRIC_TEMPLATE",
    "DefaultPrompts",
    "Nested",
    "PersonaError",
    "Personas",
    "Question",
    "QuestionDesign",
    "Role",
    "RoleCategory",
    "Rotated",
    "Shared",
    "Trait",
    "TraitPair",
    "UnbalancedDesignError",
    "default_rubric",
    "design_for",
    "load_personas",
    "parse_design",
]
