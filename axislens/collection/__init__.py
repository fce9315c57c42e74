"""The collection stage: generating role and default responses into an activation store (through
the bridge or an engine backend), teacher-forced span-mean collection of per-layer activations,
and judges that score role adherence.
"""

from __future__ import annotations

from axislens.collection.activations import (
    AllTurnsSpan,
    CollectSummary,
    PrefillSpan,
    ResponseSpan,
    SpanPolicy,
    collect,
    hook_name,
    resolve_layers,
    span_policy,
)
from axislens.collection.engines import (
    Completion,
    EngineError,
    EngineInfo,
    OpenAIBackend,
    StreamingBackend,
)
from axislens.collection.judges import (
    Judge,
    JudgeError,
    JudgeRequest,
    JudgeResult,
    JudgeSummary,
    KeepAll,
    ModelJudge,
    OpenAIJudge,
    judge_requests,
    judge_store,
    parse_score,
)
from axislens.collection.responses import (
    Backend,
    BridgeBackend,
    generate_responses,
    generation_provenance,
    persona_items,
)

__all__ = [
    "AllTurnsSpan",
    "Backend",
    "BridgeBackend",
    "CollectSummary",
    "Completion",
    "EngineError",
    "EngineInfo",
    "Judge",
    "JudgeError",
    "JudgeRequest",
    "JudgeResult",
    "JudgeSummary",
    "KeepAll",
    "ModelJudge",
    "OpenAIBackend",
    "OpenAIJudge",
    "PrefillSpan",
    "ResponseSpan",
    "SpanPolicy",
    "StreamingBackend",
    "collect",
    "generate_responses",
    "generation_provenance",
    "hook_name",
    "judge_requests",
    "judge_store",
    "parse_score",
    "persona_items",
    "resolve_layers",
    "span_policy",
]
