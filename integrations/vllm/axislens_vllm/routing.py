"""Which request uses which intervention: a vLLM V1 logits processor that only watches.

vLLM calls :meth:`AxislensRouter.update_state` before every forward with the requests that joined,
left or moved within the persistent batch, each at its batch index. The router keeps, per batch
index, the request's intervention slot and prompt length in :data:`ROUTES`, which the model reads
in the same worker process (:mod:`axislens_vllm.model`). It never changes logits.

A request chooses an intervention with ``vllm_xargs={"axislens": NAME}`` (the OpenAI client's
``extra_body``); an unknown name is refused when the request arrives (HTTP 400), listing the
loaded names.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from axislens_vllm.spec import REQUEST_KEY, default_name, slot_names, static_name

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig


@lru_cache(maxsize=1)
def _names() -> tuple[tuple[str, ...], str | None, str | None]:
    """Loaded names (slot order), the default, and the static name (read once per process)."""
    return tuple(slot_names()), default_name(), static_name()


def requested(params: SamplingParams) -> str | None:
    """The intervention a request names, or ``None``; raises on a malformed value."""
    extra: dict[str, Any] = params.extra_args or {}
    name = extra.get(REQUEST_KEY)
    if name is None:
        return None
    if not isinstance(name, str):
        raise ValueError(f"vllm_xargs[{REQUEST_KEY!r}] must be a string, got {name!r}")
    return name


def slot_of(params: SamplingParams) -> int:
    """The request's slot: 0 for none, ``i + 1`` for the ``i``-th loaded name."""
    names, default, static = _names()
    name = requested(params) or default
    if static is not None and name != static:
        raise ValueError(
            f"this server applies axislens intervention {static!r} to every request; it cannot "
            f"serve {name!r} (start it with several names, or without AXISLENS_VLLM_DEFAULT, to "
            "choose per request)"
        )
    if name is None or name == "none":
        return 0
    if name not in names:
        raise ValueError(
            f"unknown axislens intervention {name!r}; this server loaded {list(names) or 'none'}"
            f" (and 'none' for no intervention)"
        )
    return names.index(name) + 1


class Routes:
    """Per batch index: intervention slot and prompt length (a worker process has one)."""

    def __init__(self) -> None:
        self.slot: list[int] = []
        self.prompt_len: list[int] = []

    def _grow(self, n: int) -> None:
        if len(self.slot) < n:
            extra = n - len(self.slot)
            self.slot += [0] * extra
            self.prompt_len += [0] * extra

    def update(self, batch: BatchUpdate) -> None:
        for i in batch.removed:
            self._grow(i + 1)
            self.slot[i], self.prompt_len[i] = 0, 0
        for i, params, prompt, _out in batch.added:
            self._grow(i + 1)
            self.slot[i] = slot_of(params)
            self.prompt_len[i] = len(prompt) if prompt is not None else 0
        for i, j, how in batch.moved:
            self._grow(max(i, j) + 1)
            if how == MoveDirectionality.SWAP:
                self.slot[i], self.slot[j] = self.slot[j], self.slot[i]
                self.prompt_len[i], self.prompt_len[j] = self.prompt_len[j], self.prompt_len[i]
            else:
                self.slot[j], self.prompt_len[j] = self.slot[i], self.prompt_len[i]
                self.slot[i], self.prompt_len[i] = 0, 0

    def tensors(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots and prompt lengths of batch indices ``0..n-1``."""
        self._grow(n)
        slot = torch.tensor(self.slot[:n], dtype=torch.long)
        plen = torch.tensor(self.prompt_len[:n], dtype=torch.long)
        return slot.to(device, non_blocking=True), plen.to(device, non_blocking=True)


ROUTES = Routes()


class AxislensRouter(LogitsProcessor):
    """Records each request's intervention; never changes logits."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        name = requested(sampling_params)
        if name is not None:
            slot_of(sampling_params)

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        ROUTES.__init__()

    def is_argmax_invariant(self) -> bool:
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            ROUTES.update(batch_update)
