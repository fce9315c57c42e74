"""Batched, seeded text generation through the bridge (hooks fire at every step).

The loop is axislens's own rather than ``TransformerBridge.generate`` for one reason:
reproducibility that does not depend on batching. Every sequence samples from its own
``torch.Generator`` seeded from ``(seed, item key)``, so a response is the same whether it was
generated alone, in a batch of 64, or after a resumed run (up to float rounding differences
between padded and unpadded forwards, which can flip a near-tie sample).

Batches are left-padded, sorted by length to waste little compute on padding, and decoded with a
KV cache (``transformers.DynamicCache``) passed through the bridge's forward, so any hooks
attached with :func:`axislens.intervene` act at prefill and at every decode step.

Example:
    >>> conv = format_conversation(model, [{"role": "user", "content": "Hi"}],
    ...                            add_generation_prompt=True)  # doctest: +SKIP
    >>> generate_text(model, [conv], SamplingConfig(max_new_tokens=20, temperature=0.0))  # doctest: +SKIP
    ['Hello! How can I help you today?']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from axislens.model.chat import FormattedConversation

__all__ = [
    "SamplingConfig",
    "generate_text",
    "generate_tokens",
    "stop_token_ids",
]

_STOP_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """How to sample. ``temperature == 0`` means greedy (then ``top_p`` is ignored).

    Paper defaults: temperature 0.7, top-p 0.9, up to 512 new tokens.
    """

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the end-of-turn tokens of common chat templates present in this vocabulary."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[t]) for t in _STOP_TOKENS if t in vocab)
    return sorted(ids)


def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed derived from the run seed and an item's stable key."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


def _sample(
    logits: torch.Tensor, sampling: SamplingConfig, gens: list[torch.Generator]
) -> torch.Tensor:
    """Next token per row: greedy, or temperature + nucleus (top-p) with one generator per row."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
    drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.empty(logits.shape[0], dtype=torch.long)
    for i, gen in enumerate(gens):
        pick = torch.multinomial(sorted_p[i].cpu(), 1, generator=gen)
        out[i] = order[i, pick.to(order.device)].item()
    return out.to(logits.device)


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


@torch.no_grad()
def _generate_batch(
    model: Any,
    prompts: list[torch.Tensor],
    sampling: SamplingConfig,
    seeds: list[int],
    stops: list[int],
) -> list[torch.Tensor]:
    from transformers import DynamicCache

    device = model.cfg.device
    pad = int(model.tokenizer.pad_token_id)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    cache = DynamicCache(config=model.original_model.config)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    step_input = ids
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    stop_set = set(stops)
    for _ in range(sampling.max_new_tokens):
        logits = model(
            step_input,
            return_type="logits",
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
        )
        nxt = _sample(logits[:, -1, :], sampling, gens).cpu()
        for i in range(len(prompts)):
            if not done[i]:
                tok = int(nxt[i])
                if tok in stop_set:
                    done[i] = True
                else:
                    out[i].append(tok)
        if bool(done.all()):
            break
        step_input = nxt.to(device)[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position[:, -1:] + 1
    return [torch.tensor(o, dtype=torch.long) for o in out]


def generate_tokens(
    model: Any,
    prompts: Sequence[torch.Tensor],
    sampling: SamplingConfig,
    *,
    keys: Sequence[str] | None = None,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Generate a continuation for each prompt (1-D token tensors); returns new tokens only,
    without the stop token. ``keys`` (default: the prompt index) seed each item's sampler."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [str(i) for i in range(len(prompts))] if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"got {len(keys)} keys for {len(prompts)} prompts")
    stops = stop_token_ids(model.tokenizer)
    results: list[torch.Tensor | None] = [None] * len(prompts)
    for batch in _batches([len(p) for p in prompts], batch_size):
        outs = _generate_batch(
            model,
            [prompts[i] for i in batch],
            sampling,
            [item_seed(sampling.seed, keys[i]) for i in batch],
            stops,
        )
        for i, o in zip(batch, outs, strict=True):
            results[i] = o
    return [r for r in results if r is not None]


def generate_text(
    model: Any,
    conversations: Sequence[FormattedConversation],
    sampling: SamplingConfig,
    *,
    keys: Sequence[str] | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Generate replies to conversations formatted with ``add_generation_prompt=True``."""
    for i, conv in enumerate(conversations):
        if not conv.generation_prompt:
            raise ValueError(f"conversations[{i}] was formatted without add_generation_prompt=True")
    toks = generate_tokens(
        model, [c.input_ids for c in conversations], sampling, keys=keys, batch_size=batch_size
    )
    return [model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]
