"""The analysis stage, on cached activations only (never imports TransformerLens): role vectors
and the Assistant Axis, persona-space PCA and layer profiles, linear probes, trait vectors,
stability (split-half, bootstrap) and cap thresholds.
"""

from __future__ import annotations

from axislens.analysis.balance import (
    QuestionOffset,
    question_offset,
)
from axislens.analysis.effects import (
    question_adjusted_means,
)
from axislens.analysis.probing import (
    Probe,
    ProbeResult,
)
from axislens.analysis.space import (
    PCA1,
    CrossModelLoadings,
    LayerProfile,
    PersonaPCA,
    Scale,
    compare_loadings,
    cross_model,
    layer_profile,
    persona_pca,
)
from axislens.analysis.stability import (
    Bootstrap,
    SplitBy,
    SplitHalf,
    bootstrap,
    split_half,
    stability_at,
    stability_table,
)
from axislens.analysis.thresholds import (
    POOLS,
    CapUnit,
    Pool,
    StoreProjections,
    TokenProjections,
    calibrate_cap,
    cap_pools,
    project_store,
)
from axislens.analysis.traits import (
    TraitCosines,
    TraitFilter,
    TraitVectors,
    trait_cosines,
    trait_vectors,
)
from axislens.analysis.vectors import (
    Adjust,
    DirectionMethod,
    MeanDiff,
    RoleProjections,
    RoleVectors,
    StoreSource,
    assistant_axis,
    role_projections,
    role_vectors,
)

__all__ = [
    "PCA1",
    "POOLS",
    "Adjust",
    "Bootstrap",
    "CapUnit",
    "CrossModelLoadings",
    "DirectionMethod",
    "LayerProfile",
    "MeanDiff",
    "PersonaPCA",
    "Pool",
    "Probe",
    "ProbeResult",
    "QuestionOffset",
    "RoleProjections",
    "RoleVectors",
    "Scale",
    "SplitBy",
    "SplitHalf",
    "StoreProjections",
    "StoreSource",
    "TokenProjections",
    "TraitCosines",
    "TraitFilter",
    "TraitVectors",
    "assistant_axis",
    "bootstrap",
    "calibrate_cap",
    "cap_pools",
    "compare_loadings",
    "cross_model",
    "layer_profile",
    "persona_pca",
    "project_store",
    "question_adjusted_means",
    "question_offset",
    "role_projections",
    "role_vectors",
    "split_half",
    "stability_at",
    "stability_table",
    "trait_cosines",
    "trait_vectors",
]
