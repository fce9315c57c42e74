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

from axislens.chat import ChatError, FormattedConversation, MessageSpan, format_conversation
from axislens.collect import CollectSummary, collect
from axislens.generate import (
    BridgeBackend,
    SamplingConfig,
    generate_responses,
    generate_text,
    generate_tokens,
    persona_items,
    stop_token_ids,
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
from axislens.store import ActivationStore, ItemRecord, StoreError

__all__ = [
    "CATEGORIES",
    "EMBEDDED_MODELS",
    "ActivationStore",
    "BridgeBackend",
    "ChatError",
    "CollectSummary",
    "DefaultPrompts",
    "FormattedConversation",
    "ItemRecord",
    "MessageSpan",
    "ModelError",
    "ModelProvenance",
    "PersonaError",
    "Personas",
    "Question",
    "Role",
    "SamplingConfig",
    "StoreError",
    "Trait",
    "TraitPair",
    "__version__",
    "collect",
    "default_rubric",
    "format_conversation",
    "generate_responses",
    "generate_text",
    "generate_tokens",
    "load_model",
    "load_personas",
    "model_provenance",
    "persona_items",
    "prepare_model",
    "stop_token_ids",
    "tiny_model",
]
