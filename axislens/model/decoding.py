"""Batched, seeded text generation through the bridge (hooks fire at every step).

Everything in axislens that generates (``generate_tokens``, the monitored chat session, the
sweeps, the server) is built on one decode loop, :func:`decode_steps`: an iterator of
:class:`DecodeStep` values, one per sampled token, that the caller may stop early or shrink
(:meth:`Decoder.drop`, e.g. when a request is cancelled). It is the only place in the package
that builds a KV cache (``transformers.DynamicCache``).

The loop is axislens's own rather than ``TransformerBridge.generate`` for one reason:
reproducibility that does not depend on batching. Every sequence samples from its own
``torch.Generator`` seeded from ``(seed, item key)``, so a response is the same whether it was
generated alone, in a batch of 64, or after a resumed run (up to float rounding differences
between padded and unpadded forwards, which can flip a near-tie sample).

Batches are left-padded (attention mask and position ids skip the padding), sorted by length to
waste little compute on padding, and decoded with a KV cache passed through the bridge's forward,
so any hooks attached with :func:`axislens.intervene` act at prefill and at every decode step. A
:class:`PrefixCache` holds the keys/values of a token prefix shared by many prompts (e.g. a chat
template's default system prompt), computed once and reused.

Example:
    Needs a real model (not run by the doctest suite).

    >>> conv = format_conversation(model, [{"role": "user", "content": "Hi"}],
    ...                            add_generation_prompt=True)  # doctest: +SKIP
    >>> generate_text(model, [conv], SamplingConfig(max_new_tokens=20, temperature=0.0))  # doctest: +SKIP
    ['Hello! How can I help you today?']
    >>> decoder = decode_steps(model, [conv.input_ids], SamplingConfig(temperature=0.0))  # doctest: +SKIP
    >>> for step in decoder:  # doctest: +SKIP
    ...     print(step.index, step.tokens.tolist(), step.finished.tolist())
    0 [19556] [False]
    ...
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from axislens._types import Bool, Float, Int, Tensor
from axislens.model.chat import FormattedConversation, format_conversation
from axislens.model.protocol import Model

__all__ = [
    "DecodeStep",
    "Decoder",
    "PrefixCache",
    "SamplingConfig",
    "decode_steps",
    "generate_text",
    "generate_tokens",
    "sample",
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


def sample(
    logits: Float[Tensor, "batch vocab"],
    sampling: SamplingConfig,
    gens: Sequence[torch.Generator],
) -> Int[Tensor, " batch"]:
    """Next token per row: greedy (argmax), or temperature + nucleus (top-p) sampling with one
    generator per row (on the CPU, so a row's draw does not depend on its batch or device).

    Nucleus: the smallest prefix of the sorted distribution whose mass reaches ``top_p`` is kept
    (the top token always stays), then renormalised by ``torch.multinomial``.

    Example:
        >>> logits = torch.tensor([[0.0, 5.0, 1.0]])
        >>> sample(logits, SamplingConfig(temperature=0.0), [torch.Generator()]).tolist()
        [1]
        >>> cfg = SamplingConfig(temperature=1.0, top_p=0.01)  # only the top token survives
        >>> sample(logits, cfg, [torch.Generator().manual_seed(0)]).tolist()
        [1]
    """
    if len(gens) != logits.shape[0]:
        raise ValueError(f"sample got {len(gens)} generators for {logits.shape[0]} rows")
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


# --------------------------------------------------------------------------- KV caches


def _new_cache(model: Model) -> Any:
    """An empty KV cache for ``model`` (the only place axislens builds one)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.original_model.config)  # type: ignore[attr-defined]


class PrefixCache:
    """Keys and values of a token prefix shared by several prompts, computed once.

    :meth:`build` runs ``tokens`` through the model (batch of one, positions ``0..P-1``, under
    whatever hooks are attached at that moment); :meth:`expand` then gives a fresh KV cache that
    holds that prefix for ``rows`` rows, ready to be extended by a forward over the rest of each
    sequence (with the full attention mask, prefix columns included, and position ids starting
    at ``P``). The stored keys/values are never mutated, so one ``PrefixCache`` serves any number
    of forwards and decodes, e.g. every batch of a sweep setting.

    The cache is only valid under the hooks it was built with: build it inside the same
    ``with intervene(...)`` block that the forwards using it run in. The prefix forward is the
    first forward over an empty cache, so an intervention at :class:`Prompt`/:class:`Response`
    positions needs an explicit ``prompt_len`` there.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with intervene(model, iv):  # doctest: +SKIP
        ...     prefix = PrefixCache.build(model, system_prompt_ids)
        ...     for step in decode_steps(model, prompts, sampling, prefix_cache=prefix):
        ...         ...
    """

    __slots__ = ("_cache", "tokens")

    def __init__(self, tokens: Int[Tensor, " prefix"], cache: Any) -> None:
        self.tokens = tokens
        self._cache = cache

    @classmethod
    def build(cls, model: Model, tokens: Int[Tensor, " prefix"]) -> PrefixCache:
        """Run ``tokens`` (1-d, at least one) through ``model`` once and keep their keys/values."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 1 or tokens.numel() == 0 or tokens.is_floating_point():
            raise ValueError(
                f"PrefixCache.build needs 1-d token ids, got shape {tuple(tokens.shape)}"
            )
        tokens = tokens.detach().to("cpu", torch.long).clone()
        cache = _new_cache(model)
        with torch.no_grad():
            model(
                tokens[None].to(model.cfg.device),
                past_key_values=cache,
                use_cache=True,
                return_type=None,
            )
        return cls(tokens, cache)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"PrefixCache({len(self)} tokens)"

    def expand(self, rows: int) -> Any:
        """A new KV cache holding the prefix once per row (``rows >= 1``); this object's own
        keys/values are left untouched."""
        if rows < 1:
            raise ValueError(f"PrefixCache.expand needs rows >= 1, got {rows}")
        cache = copy.deepcopy(self._cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    def matches(self, prompt: Int[Tensor, " pos"]) -> bool:
        """Whether ``prompt`` starts with this prefix and has at least one token after it."""
        n = len(self)
        return len(prompt) > n and bool((prompt[:n].cpu() == self.tokens).all())


# --------------------------------------------------------------------------- the decode loop


@dataclass(frozen=True, slots=True)
class DecodeStep:
    """One decode step of a :class:`Decoder`: the token sampled for each live sequence.

    Fields:
        index: 0 for the token sampled right after prefill, then 1, 2, ...
        rows: indices (into the prompts given to :func:`decode_steps`) of the sequences that are
            still generating at this step, in batch order.
        logits: next-token logits of those rows (on the model's device).
        tokens: the tokens sampled for those rows (CPU).
        finished: ``True`` where the row stopped at this step: it sampled a stop token (reported
            in ``tokens`` but not part of the output), or it reached ``max_new_tokens``.
    """

    index: int
    rows: tuple[int, ...]
    logits: Float[Tensor, "row vocab"]
    tokens: Int[Tensor, " row"]
    finished: Bool[Tensor, " row"]


class Decoder:
    """An iterator of :class:`DecodeStep` over a batch of prompts; see :func:`decode_steps`.

    Nothing runs until iteration starts: the prefill is the first forward of the first
    ``next()``, so hooks attached around the ``for`` loop see every forward. A decoder can be
    iterated once.
    """

    def __init__(
        self,
        model: Model,
        prompts: Sequence[Int[Tensor, " pos"]],
        sampling: SamplingConfig,
        seeds: Sequence[int],
        stops: Collection[int],
        prefix_cache: PrefixCache | None,
    ) -> None:
        self._model = model
        self._prompts = [p.detach().to("cpu", torch.long) for p in prompts]
        self._sampling = sampling
        self._seeds = [int(s) for s in seeds]
        self._stops = frozenset(int(s) for s in stops)
        self._prefix = prefix_cache
        self._out: list[list[int]] = [[] for _ in prompts]
        self._done = [False] * len(prompts)
        self._pending: set[int] = set()
        self._started = False

    @property
    def outputs(self) -> list[list[int]]:
        """Tokens generated so far per prompt (stop tokens excluded); a copy."""
        return [list(o) for o in self._out]

    def drop(self, rows: Iterable[int]) -> None:
        """Remove sequences from the batch before the next step (e.g. cancelled requests):
        their cache rows are dropped so they cost no more compute, and they appear in no later
        step. Their outputs so far are kept. Dropping an unknown or already-finished row is a
        no-op."""
        for r in rows:
            r = int(r)
            if 0 <= r < len(self._done) and not self._done[r]:
                self._done[r] = True
                self._pending.add(r)

    def __iter__(self) -> Iterator[DecodeStep]:
        if self._started:
            raise RuntimeError("a Decoder can be iterated only once; call decode_steps again")
        self._started = True
        return self._run()

    def _inputs(self, batch: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Any]:
        """Left-padded ids, attention mask, position ids and KV cache for the prefill of the
        prompts ``batch`` (with a prefix cache: the prefix, then padding, then the rest)."""
        model, prefix = self._model, self._prefix
        p = 0 if prefix is None else len(prefix)
        tails = [self._prompts[i][p:] for i in batch]
        pad = model.tokenizer.pad_token_id
        width = max(len(t) for t in tails)
        ids = torch.full((len(tails), width), int(pad if pad is not None else 0), dtype=torch.long)
        mask = torch.zeros((len(tails), p + width), dtype=torch.long)
        mask[:, :p] = 1
        for i, t in enumerate(tails):
            ids[i, width - len(t) :] = t
            mask[i, p + width - len(t) :] = 1
        position = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
        cache = _new_cache(model) if prefix is None else prefix.expand(len(tails))
        device = model.cfg.device
        return ids.to(device), mask.to(device), position.to(device), cache

    def _run(self) -> Iterator[DecodeStep]:
        model, sampling, done = self._model, self._sampling, self._done
        batch = [r for r in range(len(self._prompts)) if not done[r]]  # position -> prompt
        self._pending.clear()
        if not batch:
            return
        step_input, mask, position, cache = self._inputs(batch)
        gens = [torch.Generator().manual_seed(self._seeds[r]) for r in batch]
        for index in range(sampling.max_new_tokens):
            if self._pending:
                keep = [k for k, r in enumerate(batch) if r not in self._pending]
                self._pending.clear()
                sel = torch.tensor(keep, device=step_input.device)
                cache.batch_select_indices(sel)
                step_input, mask, position = step_input[sel], mask[sel], position[sel]
                gens = [gens[k] for k in keep]
                batch = [batch[k] for k in keep]
            with torch.no_grad():
                logits = model(
                    step_input,
                    return_type="logits",
                    attention_mask=mask,
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                )
                last = logits[:, -1, :]
                nxt = sample(last, sampling, gens).cpu()
                del logits
            live = [k for k, r in enumerate(batch) if not done[r]]
            rows = tuple(batch[k] for k in live)
            toks = nxt[live]
            finished = torch.zeros(len(live), dtype=torch.bool)
            for j, r in enumerate(rows):
                tok = int(toks[j])
                if tok in self._stops:
                    finished[j] = True
                else:
                    self._out[r].append(tok)
                    finished[j] = index == sampling.max_new_tokens - 1
                done[r] = bool(finished[j])
            logits_live = last.index_select(0, torch.tensor(live, device=last.device))
            yield DecodeStep(index, rows, logits_live, toks, finished)
            if all(done[r] for r in batch):  # every row stopped or was dropped
                return
            step_input = nxt.to(step_input.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position[:, -1:] + 1


def decode_steps(
    model: Model,
    prompts: Sequence[Int[Tensor, " pos"]],
    sampling: SamplingConfig,
    *,
    seeds: Sequence[int] | None = None,
    stops: Collection[int] | None = None,
    prefix_cache: PrefixCache | None = None,
) -> Decoder:
    """Decode ``prompts`` (1-d token tensors) as one left-padded, KV-cached batch, one
    :class:`DecodeStep` per sampled token.

    Row ``i`` samples from its own ``torch.Generator`` seeded with ``seeds[i]`` (default ``i``).
    A row stops at a token in ``stops`` (default :func:`stop_token_ids` of the model's
    tokenizer; pass ``()`` for none) or after ``sampling.max_new_tokens`` tokens. Rows that
    stopped stay in the model's batch (so the others' numbers do not depend on when they stop)
    but are no longer reported; :meth:`Decoder.drop` removes rows from the batch. Iteration ends
    when every row stopped or was dropped. With ``prefix_cache`` every prompt must start with its
    tokens (and go on after them); only the rest is prefilled.

    Hooks attached by the caller (:func:`axislens.intervene`, measuring hooks) fire at prefill
    and at every step. Runs under ``torch.no_grad()``; the caller's model and tensors are not
    modified.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> dec = decode_steps(model, [ids_a, ids_b], SamplingConfig(temperature=0.0))  # doctest: +SKIP
        >>> for step in dec:  # doctest: +SKIP
        ...     if step.index == 3:
        ...         dec.drop([1])  # cancel the second prompt
        >>> dec.outputs  # doctest: +SKIP
        [[40, 1001, ...], [13, 422, 2003, 88]]
    """
    if len(prompts) == 0:
        raise ValueError("decode_steps needs at least one prompt")
    for i, p in enumerate(prompts):
        if not torch.is_tensor(p) or p.ndim != 1 or p.numel() == 0 or p.is_floating_point():
            raise ValueError(f"prompts[{i}] must be non-empty 1-d token ids")
        if prefix_cache is not None and not prefix_cache.matches(p):
            raise ValueError(
                f"prompts[{i}] does not start with the {len(prefix_cache)}-token prefix cache "
                f"(or has no token after it)"
            )
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    stops = stop_token_ids(model.tokenizer) if stops is None else stops
    return Decoder(model, prompts, sampling, seeds, stops, prefix_cache)


# --------------------------------------------------------------------------- generation


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


def generate_tokens(
    model: Model,
    prompts: Sequence[Int[Tensor, " pos"]],
    sampling: SamplingConfig,
    *,
    keys: Sequence[str] | None = None,
    batch_size: int = 8,
) -> list[Int[Tensor, " new"]]:
    """Generate a continuation for each prompt (1-D token tensors); returns new tokens only,
    without the stop token. ``keys`` (default: the prompt index) seed each item's sampler.
    Prompts are batched by length (longest first), ``batch_size`` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [str(i) for i in range(len(prompts))] if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"got {len(keys)} keys for {len(prompts)} prompts")
    stops = stop_token_ids(model.tokenizer)
    results: list[Tensor | None] = [None] * len(prompts)
    for batch in _batches([len(p) for p in prompts], batch_size):
        decoder = decode_steps(
            model,
            [prompts[i] for i in batch],
            sampling,
            seeds=[item_seed(sampling.seed, keys[i]) for i in batch],
            stops=stops,
        )
        for _ in decoder:
            pass
        for i, o in zip(batch, decoder.outputs, strict=True):
            results[i] = torch.tensor(o, dtype=torch.long)
    return [r for r in results if r is not None]


def generate_text(
    model: Model,
    conversations: Sequence[FormattedConversation | str | Sequence[Mapping[str, Any]]],
    sampling: SamplingConfig | None = None,
    *,
    keys: Sequence[str] | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Generate replies to ``conversations``: each a user message (a string), a list of chat
    messages, or a conversation formatted with ``add_generation_prompt=True``.

    ``sampling`` defaults to greedy decoding of up to 128 tokens.

    Example:
        >>> reply = generate_text(model, ["Who are you?"], SamplingConfig(max_new_tokens=4))
        >>> isinstance(reply[0], str)
        True
    """
    sampling = SamplingConfig(max_new_tokens=128, temperature=0.0) if sampling is None else sampling
    convs: list[FormattedConversation] = [
        c
        if isinstance(c, FormattedConversation)
        else format_conversation(
            model,
            [{"role": "user", "content": c}] if isinstance(c, str) else list(c),
            add_generation_prompt=True,
        )
        for c in conversations
    ]
    for i, conv in enumerate(convs):
        if not conv.generation_prompt:
            raise ValueError(f"conversations[{i}] was formatted without add_generation_prompt=True")
    toks = generate_tokens(
        model, [c.input_ids for c in convs], sampling, keys=keys, batch_size=batch_size
    )
    return [model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]
