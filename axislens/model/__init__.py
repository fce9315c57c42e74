"""The model stage: loading (hub ids, local folders, embedded GGUF models, tiny random models),
exact chat spans, hook names and layer selections, the typed :class:`Model` boundary, and the one
decode-step iterator (:func:`decode_steps`) on which every generating feature is built.

Importing this package does not import TransformerLens; loading a model does.
"""

from __future__ import annotations

from axislens.model.chat import (
    ChatError,
    FormattedConversation,
    Message,
    MessageSpan,
    format_conversation,
    validate_messages,
)
from axislens.model.decoding import (
    Decoder,
    DecodeStep,
    PrefixCache,
    SamplingConfig,
    decode_steps,
    generate_text,
    generate_tokens,
    sample,
    stop_token_ids,
)
from axislens.model.layers import (
    HOOKS,
    HookShort,
    LayerSpec,
    hook_name,
    layer_device,
    parse_layers,
    resolve_layers,
)
from axislens.model.loading import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    EmbeddedModel,
    ModelError,
    ModelProvenance,
    cache_dir,
    load_model,
    model_provenance,
    prepare_model,
    tiny_model,
)
from axislens.model.protocol import (
    Model,
)

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "HOOKS",
    "ChatError",
    "DecodeStep",
    "Decoder",
    "EmbeddedModel",
    "FormattedConversation",
    "HookShort",
    "LayerSpec",
    "Message",
    "MessageSpan",
    "Model",
    "ModelError",
    "ModelProvenance",
    "PrefixCache",
    "SamplingConfig",
    "cache_dir",
    "decode_steps",
    "format_conversation",
    "generate_text",
    "generate_tokens",
    "hook_name",
    "layer_device",
    "load_model",
    "model_provenance",
    "parse_layers",
    "prepare_model",
    "resolve_layers",
    "sample",
    "stop_token_ids",
    "tiny_model",
    "validate_messages",
]
