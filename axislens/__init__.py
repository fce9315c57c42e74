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
from axislens.generate import (
    BridgeBackend,
    SamplingConfig,
    generate_text,
    generate_tokens,
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

__all__ = [
    "EMBEDDED_MODELS",
    "BridgeBackend",
    "ChatError",
    "FormattedConversation",
    "MessageSpan",
    "ModelError",
    "ModelProvenance",
    "SamplingConfig",
    "__version__",
    "format_conversation",
    "generate_text",
    "generate_tokens",
    "load_model",
    "model_provenance",
    "prepare_model",
    "stop_token_ids",
    "tiny_model",
]
