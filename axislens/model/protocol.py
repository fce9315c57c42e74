"""The model boundary: what axislens needs from a model, as one typed Protocol.

:class:`Model` is satisfied by TransformerLens's ``TransformerBridge`` (what
:func:`axislens.load_model` returns) and by the older ``HookedTransformer``: hook points named
``blocks.{l}.hook_resid_post`` etc. (``hook_dict``), a ``hooks()`` context manager, a ``cfg`` with
``n_layers`` / ``d_model`` / ``device``, a tokenizer with a chat template, and a forward call.
Everything else in axislens is typed against this Protocol, never against ``Any``.

Example:
    >>> def n_layers(model: Model) -> int:
    ...     return int(model.cfg.n_layers)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["Model"]


@runtime_checkable
class Model(Protocol):
    """A TransformerLens model with hook points (``TransformerBridge`` or ``HookedTransformer``)."""

    cfg: Any
    tokenizer: Any
    blocks: Any
    ln_final: Any

    @property
    def W_U(self) -> Any: ...

    @property
    def hook_dict(self) -> dict[str, Any]: ...

    def hooks(
        self,
        fwd_hooks: list[Any] = ...,  # [(hook name or filter, hook fn), ...]
        bwd_hooks: list[Any] = ...,
        reset_hooks_end: bool = ...,
        clear_contexts: bool = ...,
    ) -> AbstractContextManager[Any]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_str_tokens(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = ...) -> Iterator[Any]: ...
