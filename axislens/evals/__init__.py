"""Evaluation: the eval harness and its metrics, the shipped eval sets, layer sweeps of steering
and ablation, and attribution of the axis projection to model components.
"""

from __future__ import annotations

from axislens.evals.attribution import (
    Attribution,
    Decomposition,
    LogitLens,
    attribute,
    decompose,
    logit_lens,
)
from axislens.evals.harness import (
    EvalResult,
    Setting,
    SettingResult,
    evaluate,
)
from axislens.evals.metrics import (
    ATTACK_RUBRIC,
    IDENTITY_RUBRIC,
    QA_INSTRUCTION,
    IdentityLabel,
    classify_identity,
    contains_answer,
    exact_match,
    is_refusal,
    metrics_fingerprint,
    next_token_kl,
    normalize_answer,
    perplexity,
)
from axislens.evals.sets import (
    AttackPrompt,
    EvalSet,
    EvalSetError,
    IdentityProbe,
    QAItem,
    eval_set_summary,
    load_eval_set,
)
from axislens.evals.sweeps import (
    SweepResult,
    SweepText,
    ablation_sweep,
    as_prompt_ids,
    last_token_resid,
    layer_sweep,
    prompt_contrast_axis,
)

__all__ = [
    "ATTACK_RUBRIC",
    "IDENTITY_RUBRIC",
    "QA_INSTRUCTION",
    "AttackPrompt",
    "Attribution",
    "Decomposition",
    "EvalResult",
    "EvalSet",
    "EvalSetError",
    "IdentityLabel",
    "IdentityProbe",
    "LogitLens",
    "QAItem",
    "Setting",
    "SettingResult",
    "SweepResult",
    "SweepText",
    "ablation_sweep",
    "as_prompt_ids",
    "attribute",
    "classify_identity",
    "contains_answer",
    "decompose",
    "eval_set_summary",
    "evaluate",
    "exact_match",
    "is_refusal",
    "last_token_resid",
    "layer_sweep",
    "load_eval_set",
    "logit_lens",
    "metrics_fingerprint",
    "next_token_kl",
    "normalize_answer",
    "perplexity",
    "prompt_contrast_axis",
]
