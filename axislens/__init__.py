"""axislens: find, steer and cap the Assistant Axis of chat models with TransformerLens.

Importing axislens is cheap and has no side effects: heavy modules (transformer_lens, the
models) load only when a function that needs them is called.

Example:
    >>> import axislens
    >>> model = axislens.load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> conv = axislens.format_conversation(model, [{"role": "user", "content": "Who are you?"}],
    ...                                     add_generation_prompt=True)  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from axislens.analysis import (
    DirectionMethod,
    MeanDiff,
    RoleProjections,
    RoleVectors,
    assistant_axis,
    role_projections,
    role_vectors,
)
from axislens.attribution import (
    Attribution,
    Decomposition,
    LogitLens,
    attribute,
    decompose,
    logit_lens,
)
from axislens.chat import ChatError, FormattedConversation, MessageSpan, format_conversation
from axislens.collect import CollectSummary, collect
from axislens.directions import CapConfig, CeilingCap, Direction
from axislens.evalsets import (
    AttackPrompt,
    EvalSet,
    EvalSetError,
    IdentityProbe,
    QAItem,
    load_eval_set,
)
from axislens.evaluation import EvalResult, Setting, SettingResult, evaluate
from axislens.generate import (
    BridgeBackend,
    SamplingConfig,
    generate_responses,
    generate_text,
    generate_tokens,
    persona_items,
    stop_token_ids,
)
from axislens.judge import (
    Judge,
    JudgeError,
    JudgeRequest,
    JudgeResult,
    JudgeSummary,
    KeepAll,
    ModelJudge,
    OpenAIJudge,
    judge_store,
    parse_score,
)
from axislens.models import (
    EMBEDDED_MODELS,
    ModelError,
    ModelProvenance,
    load_model,
    model_provenance,
    prepare_model,
    tiny_model,
)
from axislens.monitor import (
    DriftTrajectory,
    Transcript,
    TranscriptError,
    TurnProjection,
    load_transcript,
    project_conversation,
)
from axislens.persona_space import (
    PCA1,
    CrossModelLoadings,
    LayerProfile,
    PersonaPCA,
    compare_loadings,
    cross_model,
    layer_profile,
    persona_pca,
)
from axislens.personas import (
    CATEGORIES,
    DefaultPrompts,
    PersonaError,
    Personas,
    Question,
    Role,
    Trait,
    TraitPair,
    default_rubric,
    load_personas,
)
from axislens.probe import Probe, ProbeResult
from axislens.session import ChatSession, TurnReport, chat_session
from axislens.stability import Bootstrap, SplitHalf, bootstrap, split_half
from axislens.steer import (
    Intervention,
    ablate,
    cap,
    cap_intervention,
    intervene,
    residual_norms,
    steer,
)
from axislens.steer_ops import (
    Ablate,
    Add,
    All,
    CapCeiling,
    CapFloor,
    ClampBand,
    Last,
    MeanAblate,
    Prompt,
    Response,
    Spans,
)
from axislens.store import ActivationStore, ItemRecord, StoreError
from axislens.sweep import SweepResult, ablation_sweep, layer_sweep
from axislens.thresholds import StoreProjections, calibrate_cap, project_store
from axislens.traits import TraitCosines, TraitVectors, trait_cosines, trait_vectors

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
    "Bootstrap",
    "BridgeBackend",
    "CapCeiling",
    "CapConfig",
    "CapFloor",
    "CeilingCap",
    "ChatError",
    "ChatSession",
    "ClampBand",
    "CollectSummary",
    "CrossModelLoadings",
    "Decomposition",
    "DefaultPrompts",
    "Direction",
    "DirectionMethod",
    "DriftTrajectory",
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
    "ModelError",
    "ModelJudge",
    "ModelProvenance",
    "OpenAIJudge",
    "PersonaError",
    "PersonaPCA",
    "Personas",
    "Probe",
    "ProbeResult",
    "Prompt",
    "QAItem",
    "Question",
    "Response",
    "Role",
    "RoleProjections",
    "RoleVectors",
    "SamplingConfig",
    "Setting",
    "SettingResult",
    "Spans",
    "SplitHalf",
    "StoreError",
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
    "chat_session",
    "collect",
    "compare_loadings",
    "cross_model",
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
    "residual_norms",
    "role_projections",
    "role_vectors",
    "split_half",
    "steer",
    "stop_token_ids",
    "tiny_model",
    "trait_cosines",
    "trait_vectors",
]
