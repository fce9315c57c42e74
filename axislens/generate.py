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
from typing import Any, Protocol

import torch

from axislens.chat import FormattedConversation

__all__ = [
    "Backend",
    "BridgeBackend",
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


class Backend(Protocol):
    """A generation engine: the bridge by default; a vLLM engine can implement the same call."""

    def generate(
        self,
        conversations: Sequence[FormattedConversation],
        sampling: SamplingConfig,
        keys: Sequence[str],
    ) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class BridgeBackend:
    """Generate with the TransformerLens bridge (hooks and interventions apply)."""

    model: Any
    batch_size: int = 8

    def generate(
        self,
        conversations: Sequence[FormattedConversation],
        sampling: SamplingConfig,
        keys: Sequence[str],
    ) -> list[str]:
        return generate_text(
            self.model, conversations, sampling, keys=keys, batch_size=self.batch_size
        )


# --------------------------------------------------------------------------------------------
# Role-response generation into a store
# --------------------------------------------------------------------------------------------


def persona_items(
    personas: Any,
    *,
    roles: Sequence[str] | None = None,
    n_prompts: int = 5,
    n_questions: int = 240,
    include_default: bool = True,
    model_name: str = "the assistant",
) -> list[Any]:
    """The (system prompt, question) items of a persona run, without responses.

    Ids are stable: ``role/<name>/p<k>/<question id>`` and ``default/p<k>/<question id>``.
    Roles default to the whole catalogue; questions are the first ``n_questions`` of the
    catalogue's spread order (topics interleaved).
    """
    from axislens.store import ItemRecord

    if n_prompts < 1 or n_questions < 1:
        raise ValueError(f"n_prompts and n_questions must be >= 1, got {n_prompts}, {n_questions}")
    questions = personas.spread_questions()[:n_questions]
    chosen = [personas.role(r) for r in roles] if roles is not None else list(personas.roles)
    items = []

    def add(kind: str, role: str, k: int, system: str, prefix: str) -> None:
        for q in questions:
            msgs: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": q.text})
            items.append(ItemRecord(f"{prefix}/p{k}/{q.id}", kind, role, k, q.id, tuple(msgs)))  # type: ignore[arg-type]

    for role in chosen:
        for k, prompt in enumerate(role.system_prompts[:n_prompts]):
            add("role", role.name, k, prompt, f"role/{role.name}")
    if include_default:
        for k, prompt in enumerate(personas.default.render(model_name)[:n_prompts]):
            add("default", "default", k, prompt, "default")
    return items


def generate_responses(
    model: Any,
    personas: Any,
    store: Any,
    *,
    roles: Sequence[str] | None = None,
    n_prompts: int = 5,
    n_questions: int = 240,
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    include_default: bool = True,
    backend: Backend | None = None,
    progress: bool = True,
) -> list[Any]:
    """Generate role (and default) responses into ``store``; returns the completed records.

    Resumable: items whose response is already in the store are skipped; each chunk of
    ``batch_size`` items is written atomically as soon as it is generated. Sampling is seeded
    per item (``seed`` + item id), so a resumed run produces the same responses.

    Example:
        >>> personas = axislens.load_personas()  # doctest: +SKIP
        >>> store = axislens.ActivationStore.create("runs/x", {...})  # doctest: +SKIP
        >>> recs = generate_responses(model, personas, store, roles=["ghost"], n_prompts=2,
        ...                           n_questions=4, max_new_tokens=64)  # doctest: +SKIP
    """
    from dataclasses import replace as dc_replace

    from tqdm.auto import tqdm

    from axislens.chat import format_conversation
    from axislens.models import model_provenance

    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    model_name = model_provenance(model).model_id.split("/")[-1]
    items = persona_items(
        personas,
        roles=roles,
        n_prompts=n_prompts,
        n_questions=n_questions,
        include_default=include_default,
        model_name=model_name,
    )
    have = store.records()
    done = {
        i.id: have[i.id]
        for i in items
        if i.id in have and have[i.id].messages[-1]["role"] == "assistant"
    }
    todo = [i for i in items if i.id not in done]
    engine = backend or BridgeBackend(model, batch_size=batch_size)
    bar = tqdm(total=len(todo), desc="generate", unit="resp", disable=not progress)
    try:
        for k in range(0, len(todo), batch_size):
            chunk = todo[k : k + batch_size]
            convs = [
                format_conversation(model, list(i.messages), add_generation_prompt=True)
                for i in chunk
            ]
            texts = engine.generate(convs, sampling, [i.id for i in chunk])
            finished = [
                dc_replace(
                    i,
                    messages=(*i.messages, {"role": "assistant", "content": t}),
                    skipped=None if t.strip() else "empty response",
                )
                for i, t in zip(chunk, texts, strict=True)
            ]
            store.append_records(finished)
            done.update({r.id: r for r in finished})
            bar.update(len(chunk))
    finally:
        bar.close()
    return [done[i.id] for i in items]


def generation_provenance(personas: Any, sampling: SamplingConfig, **extra: Any) -> dict[str, Any]:
    """Manifest fields describing a persona generation run."""
    return {
        "personas": {
            "source": personas.source,
            "sha256": personas.content_hash(),
            "roles_sha256": personas.roles_hash(),
            "questions_sha256": personas.questions_hash(),
        },
        "generation": {
            "max_new_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "thinking": False,
            **extra,
        },
    }
