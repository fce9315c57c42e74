"""axislens: find, steer and cap the Assistant Axis of chat models with TransformerLens.

Importing axislens is cheap and has no side effects: heavy modules (transformer_lens, the
models) load only when a function that needs them is called.

Example:
    Needs a real model (not run by the doctest suite).

    >>> import axislens
    >>> model = axislens.load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> conv = axislens.format_conversation(model, [{"role": "user", "content": "Who are you?"}],
    ...                                     add_generation_prompt=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from axislens import _legacy
from axislens.version import __version__

# The public names load on first use (PEP 562): `import axislens` and `axislens --help` stay cheap
# (no torch). The imports below are for type checkers only; __getattr__ finds each name at run
# time in the first of _SOURCES whose __all__ lists it.
if TYPE_CHECKING:
    from axislens.analysis import (
        PCA1,
        Bootstrap,
        CrossModelLoadings,
        DirectionMethod,
        LayerProfile,
        MeanDiff,
        PersonaPCA,
        Pool,
        Probe,
        ProbeResult,
        QuestionOffset,
        RoleProjections,
        RoleVectors,
        SplitHalf,
        StoreProjections,
        TraitCosines,
        TraitVectors,
        assistant_axis,
        bootstrap,
        calibrate_cap,
        cap_pools,
        compare_loadings,
        cross_model,
        layer_profile,
        persona_pca,
        project_store,
        question_offset,
        role_projections,
        role_vectors,
        split_half,
        trait_cosines,
        trait_vectors,
    )
    from axislens.collection import (
        BridgeBackend,
        CollectSummary,
        EngineError,
        Judge,
        JudgeError,
        JudgeRequest,
        JudgeResult,
        JudgeSummary,
        KeepAll,
        ModelJudge,
        OpenAIBackend,
        OpenAIJudge,
        collect,
        generate_responses,
        judge_store,
        parse_score,
        persona_items,
    )
    from axislens.directions import CapConfig, CeilingCap, Direction
    from axislens.evals import (
        AttackPrompt,
        Attribution,
        Decomposition,
        EvalResult,
        EvalSet,
        EvalSetError,
        IdentityProbe,
        LogitLens,
        QAItem,
        Setting,
        SettingResult,
        SweepResult,
        ablation_sweep,
        attribute,
        decompose,
        evaluate,
        layer_sweep,
        load_eval_set,
        logit_lens,
    )
    from axislens.interventions import (
        Ablate,
        Add,
        All,
        CapCeiling,
        CapFloor,
        ClampBand,
        Intervention,
        Last,
        MeanAblate,
        Prompt,
        Response,
        Spans,
        ablate,
        cap,
        cap_intervention,
        intervene,
        residual_norms,
        steer,
        to_vllm,
    )
    from axislens.jobs import (
        AxisConfig,
        AxisResult,
        CollectConfig,
        CollectResult,
        DemoConfig,
        DemoResult,
        PersonaData,
        StoreLayout,
        run_axis,
        run_collect,
        run_demo,
    )
    from axislens.model import (
        EMBEDDED_MODELS,
        ChatError,
        Decoder,
        DecodeStep,
        FormattedConversation,
        MessageSpan,
        Model,
        ModelError,
        ModelProvenance,
        PrefixCache,
        SamplingConfig,
        decode_steps,
        format_conversation,
        generate_text,
        generate_tokens,
        load_model,
        model_provenance,
        prepare_model,
        stop_token_ids,
        tiny_model,
    )
    from axislens.monitoring import (
        ChatSession,
        DriftTrajectory,
        Transcript,
        TranscriptError,
        TurnProjection,
        TurnReport,
        chat_session,
        load_transcript,
        project_conversation,
    )
    from axislens.personas import (
        CATEGORIES,
        DefaultPrompts,
        Nested,
        PersonaError,
        Personas,
        Question,
        Role,
        Rotated,
        Shared,
        Trait,
        TraitPair,
        default_rubric,
        load_personas,
    )
    from axislens.store import ActivationStore, ItemRecord, StoreError

__all__ = [
    "CATEGORIES",
    "EMBEDDED_MODELS",
    "PCA1",
    "Ablate",
    "ActivationStore",
    "Add",
    "All",
    "AttackPrompt",
    "Attribution",
    "AxisConfig",
    "AxisResult",
    "Bootstrap",
    "BridgeBackend",
    "CapCeiling",
    "CapConfig",
    "CapFloor",
    "CeilingCap",
    "ChatError",
    "ChatSession",
    "ClampBand",
    "CollectConfig",
    "CollectResult",
    "CollectSummary",
    "CrossModelLoadings",
    "DecodeStep",
    "Decoder",
    "Decomposition",
    "DefaultPrompts",
    "DemoConfig",
    "DemoResult",
    "Direction",
    "DirectionMethod",
    "DriftTrajectory",
    "EngineError",
    "EvalResult",
    "EvalSet",
    "EvalSetError",
    "FormattedConversation",
    "IdentityProbe",
    "Intervention",
    "ItemRecord",
    "Judge",
    "JudgeError",
    "JudgeRequest",
    "JudgeResult",
    "JudgeSummary",
    "KeepAll",
    "Last",
    "LayerProfile",
    "LogitLens",
    "MeanAblate",
    "MeanDiff",
    "MessageSpan",
    "Model",
    "ModelError",
    "ModelJudge",
    "ModelProvenance",
    "Nested",
    "OpenAIBackend",
    "OpenAIJudge",
    "PersonaData",
    "PersonaError",
    "PersonaPCA",
    "Personas",
    "Pool",
    "PrefixCache",
    "Probe",
    "ProbeResult",
    "Prompt",
    "QAItem",
    "Question",
    "QuestionOffset",
    "Response",
    "Role",
    "RoleProjections",
    "RoleVectors",
    "Rotated",
    "SamplingConfig",
    "Setting",
    "SettingResult",
    "Shared",
    "Spans",
    "SplitHalf",
    "StoreError",
    "StoreLayout",
    "StoreProjections",
    "SweepResult",
    "Trait",
    "TraitCosines",
    "TraitPair",
    "TraitVectors",
    "Transcript",
    "TranscriptError",
    "TurnProjection",
    "TurnReport",
    "__version__",
    "ablate",
    "ablation_sweep",
    "assistant_axis",
    "attribute",
    "bootstrap",
    "calibrate_cap",
    "cap",
    "cap_intervention",
    "cap_pools",
    "chat_session",
    "collect",
    "compare_loadings",
    "cross_model",
    "decode_steps",
    "decompose",
    "default_rubric",
    "evaluate",
    "format_conversation",
    "generate_responses",
    "generate_text",
    "generate_tokens",
    "intervene",
    "judge_store",
    "layer_profile",
    "layer_sweep",
    "load_eval_set",
    "load_model",
    "load_personas",
    "load_transcript",
    "logit_lens",
    "model_provenance",
    "parse_score",
    "persona_items",
    "persona_pca",
    "prepare_model",
    "project_conversation",
    "project_store",
    "question_offset",
    "residual_norms",
    "role_projections",
    "role_vectors",
    "run_axis",
    "run_collect",
    "run_demo",
    "split_half",
    "steer",
    "stop_token_ids",
    "tiny_model",
    "to_vllm",
    "trait_cosines",
    "trait_vectors",
]

_SOURCES = (
    "axislens.analysis",
    "axislens.collection",
    "axislens.directions",
    "axislens.evals",
    "axislens.interventions",
    "axislens.model",
    "axislens.monitoring",
    "axislens.personas",
    "axislens.store",
    "axislens.jobs",  # last: it imports every stage
)


_SUBPACKAGES = (
    "analysis",
    "collection",
    "evals",
    "interventions",
    "jobs",
    "model",
    "monitoring",
    "personas",
    "plots",
    "serving",
)
"""Subpackages reachable as attributes after ``import axislens`` (``axislens.plots.variance_bars``),
each imported on first use."""


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"axislens.{name}")
        globals()[name] = module
        return module
    if name in __all__:
        for source in _SOURCES:
            module = importlib.import_module(source)
            if name in module.__all__:
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'axislens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_legacy.install()  # 0.1 module paths keep importing, with a DeprecationWarning
