"""Teacher-forced collection of per-layer span means into an :class:`ActivationStore`.

For each conversation, one forward pass; inside the hooks, the activations of the requested hook
points are reduced at once to a weighted mean over the span (``[batch, d_model]`` per layer), so
memory grows with the batch, never with the dataset, and no full cache is kept. The forward
stops right after the last requested layer (no unembedding, no unused top layers).

Span policies (typed, see :class:`ResponseSpan`, :class:`AllTurnsSpan`, :class:`PrefillSpan`):

- ``"response"``: mean over the tokens of the *last* assistant message's content;
- ``"all_turns"``: mean over each assistant message's content, then over assistant turns;
- ``"prefill"``: no response needed: the activation at the last token of the prompt formatted
  with the generation prompt (the position from which the assistant starts speaking).

Padding never changes a result: batches are right-padded, so causal attention keeps every real
token blind to the pads; batched equals unbatched to float rounding.

Example:
    Needs a real model (not run by the doctest suite).

    >>> summary = collect(model, store.query(kind=["role", "default"], collected=False), store)  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from axislens.collection.launch import Launch, current_launch
from axislens.model.chat import (
    ContextError,
    FormattedConversation,
    fit_to_context,
)
from axislens.model.layers import hook_name, resolve_layers
from axislens.model.loading import model_provenance
from axislens.model.protocol import Model
from axislens.store import (
    ActivationStore,
    ItemRecord,
    SharedWriter,
    StoreError,
    Writer,
    canonical_hooks,
)

__all__ = [
    "AllTurnsSpan",
    "CollectSummary",
    "PrefillSpan",
    "ResponseSpan",
    "SpanPolicy",
    "collect",
    "span_policy",
]

# --------------------------------------------------------------------------------------------
# Span policies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseSpan:
    """Mean over the content tokens of the last assistant message."""

    name: str = "response"
    generation_prompt: bool = False

    def weights(self, conv: FormattedConversation) -> torch.Tensor | None:
        spans = [s for s in conv.spans_of("assistant") if len(s)]
        if not spans:
            return None
        w = torch.zeros(len(conv))
        w[spans[-1].slice] = 1.0 / len(spans[-1])
        return w

    def prompt_messages(self, messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
        return list(messages)


@dataclass(frozen=True, slots=True)
class AllTurnsSpan:
    """Mean over each assistant message's content tokens, then over assistant turns."""

    name: str = "all_turns"
    generation_prompt: bool = False

    def weights(self, conv: FormattedConversation) -> torch.Tensor | None:
        spans = [s for s in conv.spans_of("assistant") if len(s)]
        if not spans:
            return None
        w = torch.zeros(len(conv))
        for s in spans:
            w[s.slice] += 1.0 / (len(s) * len(spans))
        return w

    def prompt_messages(self, messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
        return list(messages)


@dataclass(frozen=True, slots=True)
class PrefillSpan:
    """The activation at the generation-prompt position (no response needed)."""

    name: str = "prefill"
    generation_prompt: bool = True

    def weights(self, conv: FormattedConversation) -> torch.Tensor | None:
        w = torch.zeros(len(conv))
        w[-1] = 1.0
        return w

    def prompt_messages(self, messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
        msgs = list(messages)
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        return msgs


SpanPolicy = ResponseSpan | AllTurnsSpan | PrefillSpan
_SPANS: dict[str, SpanPolicy] = {
    "response": ResponseSpan(),
    "all_turns": AllTurnsSpan(),
    "prefill": PrefillSpan(),
}


def span_policy(span: str | SpanPolicy) -> SpanPolicy:
    """``"response" | "all_turns" | "prefill"`` or a policy object."""
    if isinstance(span, (ResponseSpan, AllTurnsSpan, PrefillSpan)):
        return span
    try:
        return _SPANS[span]
    except KeyError:
        raise ValueError(
            f"unknown span policy {span!r}; expected one of {', '.join(_SPANS)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Preparing items
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    record: ItemRecord
    ids: torch.Tensor | None
    weights: torch.Tensor | None


def prepare_item(
    model: Model, record: ItemRecord, policy: SpanPolicy, max_tokens: int
) -> _Prepared:
    """Format one item for collection; drop leading exchanges (keeping the system prompt) when
    it is longer than the context, with a warning
    (:func:`~axislens.model.chat.fit_to_context`); skip it with a reason when even the last
    exchange is too long or the span is empty."""
    messages = policy.prompt_messages(record.messages)
    if not messages:
        return _Prepared(replace(record, skipped="no messages"), None, None)
    try:
        conv, dropped, _ = fit_to_context(
            model, messages, max_tokens, generation_prompt=policy.generation_prompt
        )
    except ContextError as err:
        reason = (
            f"longer than the context ({err.tokens} tokens > {max_tokens}) even without history"
        )
        return _Prepared(replace(record, skipped=reason, n_tokens=err.tokens), None, None)
    if dropped:
        warnings.warn(
            f"item {record.id!r}: longer than the context ({max_tokens} tokens); dropped the "
            f"first {dropped} messages of history",
            stacklevel=3,
        )
    weights = policy.weights(conv)
    if weights is None:
        return _Prepared(replace(record, skipped="empty response", n_tokens=len(conv)), None, None)
    extra = {**record.extra, "truncated_messages": dropped} if dropped else record.extra
    return _Prepared(
        replace(record, n_tokens=len(conv), skipped=None, extra=extra), conv.input_ids, weights
    )


# --------------------------------------------------------------------------------------------
# The forward pass
# --------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the last needed hook to end the forward pass early."""


@torch.no_grad()
def span_means(
    model: Model,
    ids: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    *,
    hooks: Sequence[str],
    layers: Sequence[int],
) -> dict[str, torch.Tensor]:
    """Weighted span means for one right-padded batch: ``{hook: [batch, len(layers), d_model]}``
    in float32. The forward stops after the last hook it needs."""
    device = model.cfg.device
    width = max(len(t) for t in ids)
    pad = int(model.tokenizer.pad_token_id)
    batch = torch.full((len(ids), width), pad, dtype=torch.long)
    w = torch.zeros((len(ids), width), dtype=torch.float32)
    for i, (t, wt) in enumerate(zip(ids, weights, strict=True)):
        batch[i, : len(t)] = t
        w[i, : len(t)] = wt
    batch, w = batch.to(device), w.to(device)
    out = {
        h: torch.empty((len(ids), len(layers), model.cfg.d_model), dtype=torch.float32)
        for h in hooks
    }
    last = max(layers)
    fired: set[str] = set()
    needed = {hook_name(h, last) for h in hooks}

    def recorder(name: str, h: str, j: int) -> Any:
        def record(act: torch.Tensor, hook: Any) -> None:
            wd = w if w.device == act.device else w.to(act.device)  # layers split over GPUs
            out[h][:, j] = torch.einsum("bp,bpd->bd", wd, act.float()).cpu()
            fired.add(name)
            if needed <= fired:
                raise _Stop

        return record

    names = [hook_name(h, layer) for h in hooks for layer in layers]
    fwd = [
        (hook_name(h, layer), recorder(hook_name(h, layer), h, j))
        for h in hooks
        for j, layer in enumerate(layers)
    ]
    try:
        with model.hooks(fwd_hooks=fwd):
            model(batch, return_type=None)
    except _Stop:
        pass
    missing = set(names) - fired
    if missing:
        raise RuntimeError(f"hooks never fired: {sorted(missing)[:3]}")
    return out


@dataclass(frozen=True, slots=True)
class CollectSummary:
    """What a collection run did."""

    items: int
    collected: int
    skipped: int
    reused: int
    tokens: int
    seconds: float
    skipped_reasons: Mapping[str, int]
    rank: int = 0
    """This process's rank in a multi-process job (its share of the chunks: ``collected`` and
    ``reused`` count only that share)."""
    world: int = 1

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        share = f"rank {self.rank}/{self.world}: " if self.world > 1 else ""
        return share + (
            f"{self.items} items: {self.collected} collected, {self.reused} already in store, "
            f"{self.skipped} skipped; {self.tokens} tokens in {self.seconds:.1f} s "
            f"({self.tokens_per_second:.0f} tokens/s)"
        )


def _chunks(items: Sequence[_Prepared], batch_size: int) -> Iterator[list[_Prepared]]:
    """Deterministic chunks of the full item list, sorted by length (little padding)."""
    order = sorted(items, key=lambda p: (p.record.n_tokens, p.record.id))
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


def collection_manifest(
    model: Model,
    hooks: Sequence[str],
    layers: Sequence[int],
    policy: SpanPolicy,
    extra: Mapping[str, Any] | None,
    store_dtype: str | None = None,
) -> dict[str, Any]:
    """Manifest of a collection run. ``store_dtype`` (storage dtype, manifest field ``dtype``):
    ``None`` keeps an existing store's (a new store gets float32)."""
    from axislens.version import __version__

    return {
        "model": model_provenance(model).to_dict(),
        "hooks": list(canonical_hooks(hooks)),
        "layers": list(layers),
        "span": policy.name,
        "d_model": int(model.cfg.d_model),
        **({"dtype": store_dtype} if store_dtype is not None else {}),
        "axislens_version": __version__,
        **(dict(extra) if extra else {}),
    }


def collect(
    model: Model,
    conversations: Sequence[ItemRecord | Sequence[Mapping[str, str]]],
    store: ActivationStore | str | Path,
    *,
    hooks: Sequence[str] = ("resid_post",),
    layers: Sequence[int] | slice | range | None = None,
    span: str | SpanPolicy = "response",
    batch_size: int = 8,
    max_tokens: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    store_dtype: str | None = None,
    writer: Writer | None = None,
    launch: Launch | None = None,
    force: bool = False,
) -> CollectSummary:
    """Collect span means of ``hooks`` at ``layers`` for every conversation into ``store``.

    Args:
        model: the loaded model the activations are read from.
        conversations: :class:`ItemRecord` items (from :func:`axislens.generate_responses` or
            ``store.query(...)``) or plain message lists (ids ``conv/00000``...).
        store: an :class:`ActivationStore` or a directory (created if new).
        hooks: short hook names (``resid_post`` = decoder-layer output, ``resid_pre``,
            ``resid_mid``, ``attn_out``, ``mlp_out``).
        layers: layers to keep (default all; negative indices allowed).
        span: ``"response"`` | ``"all_turns"`` | ``"prefill"`` or a policy object.
        batch_size: conversations per forward pass (an int >= 1; items are batched by length).
        max_tokens: context limit (default the model's ``n_ctx``); longer conversations lose
            their oldest exchanges with a warning.
        provenance: extra manifest fields (persona/question hashes, generation settings); part
            of the store's identity, checked on resume (see ``force``).
        progress: show a progress bar.
        store_dtype: storage dtype of a new store (``"float32"`` default, ``"bfloat16"`` halves
            the disk use); ``None`` keeps an existing store's.
        writer: :class:`~axislens.store.ExclusiveWriter` (default for a one-process run; another
            run writing to the store fails fast) or :class:`~axislens.store.SharedWriter`
            (default under a launcher: every rank of the job is one).
        launch: this process's place in a multi-process job (default
            :func:`~axislens.collection.launch.current_launch`: accelerate's ``PartialState``
            under ``accelerate launch`` / ``torchrun``, else one process). The chunks of the
            full item list are dealt out, chunk k to rank ``k % world``; the ranks together
            write the same store, vector for vector, as one process.
        force: resume even though the persona catalogue, generation settings or model weights
            differ from the store's (the manifest records the override).

    Resumable: items already collected are reused, with any number of processes; a run killed
    at any point and restarted produces the same store contents. An item whose record changed
    (e.g. an edited prompt) is recomputed, never kept. Corrupt shards are moved aside and
    recomputed. Everything is validated (hooks, layers, batch size, the store's identity and
    writability) before the store is created or touched.
    """
    t0 = time.perf_counter()
    n_layers = int(model.cfg.n_layers)
    hooks = canonical_hooks(hooks)
    if not hooks:
        raise ValueError("hooks: expected at least one hook")
    for h in hooks:
        if hook_name(h, 0) not in model.hook_dict:
            raise ValueError(f"the model has no hook point {hook_name(h, 0)!r}")
    layer_list = resolve_layers(layers, n_layers)
    policy = span_policy(span)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    launch = current_launch() if launch is None else launch
    limit = int(max_tokens or model.cfg.n_ctx)
    records = [
        c
        if isinstance(c, ItemRecord)
        else ItemRecord(f"conv/{i:05d}", "conversation", "", 0, "", tuple(c))
        for i, c in enumerate(conversations)
    ]
    if len({r.id for r in records}) != len(records):
        raise ValueError("conversations contain duplicate item ids")
    want = collection_manifest(model, hooks, layer_list, policy, provenance, store_dtype)
    # Padding makes a row depend on its batch (up to ~1e-4): the batch size is part of what a
    # resume must repeat to end bit-identical to an uninterrupted run.
    want["collection"] = {"batch_size": batch_size}
    root = store.root if isinstance(store, ActivationStore) else Path(store)
    if writer is None:
        if launch.distributed:
            writer = SharedWriter(job=launch.job)
        elif isinstance(store, ActivationStore):
            writer = store.writer
    store = ActivationStore.create(root, want, writer=writer, force=force)
    store.repair()
    done = store.collected_ids()
    known = store.records()
    prepared = [prepare_item(model, r, policy, limit) for r in records]
    skipped = [p.record for p in prepared if p.ids is None]
    usable = [p for p in prepared if p.ids is not None]
    # Stored activations count only under the record they were computed from: a changed record
    # (edited prompt, new response) is recomputed. Its new record is written only after its new
    # activations, so a run killed in between still sees the old record and recomputes.
    valid = {
        p.record.id for p in usable if p.record.id in done and known.get(p.record.id) == p.record
    }
    every = list(_chunks(usable, batch_size))  # the same list in every rank and on every resume
    mine = [c for k, c in enumerate(every) if launch.owns(k)]
    chunks = [c for c in mine if any(p.record.id not in valid for p in c)]
    mine_ids = {p.record.id for c in mine for p in c}
    stale = {
        p.record.id for c in chunks for p in c if p.record.id in done and p.record.id not in valid
    }
    store.append_records(
        [
            p.record
            for p in prepared
            if known.get(p.record.id) != p.record
            and p.record.id not in stale
            and (p.record.id in mine_ids or (p.ids is None and launch.rank == 0))
        ]
    )
    reused = sum(1 for c in mine for p in c) - sum(len(c) for c in chunks)
    tokens = 0
    bar = tqdm(total=sum(len(c) for c in chunks), desc="collect", unit="item", disable=not progress)
    try:
        for chunk in chunks:
            means = span_means(
                model,
                [p.ids for p in chunk if p.ids is not None],
                [p.weights for p in chunk if p.weights is not None],
                hooks=hooks,
                layers=layer_list,
            )
            store.append_activations(
                [p.record.id for p in chunk],
                means,
                records=[p.record for p in chunk],
                tokens=[p.ids for p in chunk if p.ids is not None],
            )
            store.append_records([p.record for p in chunk if p.record.id in stale])
            tokens += sum(p.record.n_tokens for p in chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    reasons: dict[str, int] = {}
    for r in skipped:
        key = (r.skipped or "").split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return CollectSummary(
        items=len(records),
        collected=sum(len(c) for c in chunks),
        skipped=len(skipped),
        reused=reused,
        tokens=tokens,
        seconds=time.perf_counter() - t0,
        skipped_reasons=reasons,
        rank=launch.rank,
        world=launch.world,
    )


def check_store_model(store: ActivationStore, model: Model) -> None:
    """Raise if ``store`` was collected from a different model than ``model``."""
    prov = model_provenance(model).to_dict()
    if store.manifest.get("model", {}).get("model_id") != prov["model_id"]:
        raise StoreError(
            f"store {store.root} was collected from {store.model_id!r}, not {prov['model_id']!r}"
        )
