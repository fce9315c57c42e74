"""Role-response generation into a store: persona items, engine backends, resumable chunks.

A *backend* turns formatted conversations into response texts. :class:`BridgeBackend` decodes
through the TransformerLens bridge (hooks and interventions apply); any object with the same
``generate`` method plugs in the same way. A :class:`~axislens.collection.engines.StreamingBackend`
such as :class:`~axislens.collection.engines.OpenAIBackend` (vLLM, SGLang, TGI...) is checked
before the run and streams: completions are written in chunks as they arrive, failed items are
left for resume.

Example:
    Needs a real model (not run by the doctest suite).

    >>> personas = axislens.load_personas()  # doctest: +SKIP
    >>> recs = generate_responses(model, personas, "runs/x", roles=["ghost"], n_prompts=2,
    ...                           n_questions=4, max_new_tokens=64)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from axislens.collection.engines import StreamingBackend
from axislens.model.chat import FormattedConversation
from axislens.model.decoding import SamplingConfig, generate_tokens
from axislens.model.protocol import Model
from axislens.personas.designs import QuestionDesign

__all__ = [
    "Backend",
    "BridgeBackend",
    "design_record",
    "generate_responses",
    "generate_run",
    "generation_provenance",
    "persona_items",
]


class Backend(Protocol):
    """A generation engine: the bridge by default; a vLLM engine can implement the same call."""

    def generate(
        self,
        conversations: Sequence[FormattedConversation],
        sampling: SamplingConfig,
        keys: Sequence[str],
    ) -> list[str]: ...


@dataclass(slots=True)
class BridgeBackend:
    """Generate with the TransformerLens bridge (hooks and interventions apply), counting the
    tokens it generates (stop tokens excluded) in ``tokens``: the collect job's generation
    rate."""

    model: Model
    batch_size: int = 8
    tokens: int = 0

    def generate(
        self,
        conversations: Sequence[FormattedConversation],
        sampling: SamplingConfig,
        keys: Sequence[str],
    ) -> list[str]:
        """The replies to ``conversations``, decoded without special tokens and stripped."""
        toks = generate_tokens(
            self.model,
            [c.input_ids for c in conversations],
            sampling,
            keys=keys,
            batch_size=self.batch_size,
        )
        self.tokens += sum(len(t) for t in toks)
        return [self.model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]


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
    default_prompts: int | None = None,
    default_questions: int | None = None,
    design: QuestionDesign | str | None = None,
) -> list[Any]:
    """The (system prompt, question) items of a persona run, without responses.

    Ids are stable: ``role/<name>/p<k>/<question id>`` and ``default/p<k>/<question id>``.
    Roles default to the whole catalogue; questions come from the catalogue's spread order
    (topics interleaved).

    The default set is *one* set that every role is compared against, so the axis's noise
    falls with its size: ``default_prompts`` x ``default_questions`` (default ``n_prompts`` x
    ``n_questions``, as for one role) sets it on its own. ``design``
    (:mod:`axislens.personas.designs`) says which questions each side answers:
    :class:`~axislens.personas.designs.Shared` (every role and the default set answer the first
    ``n_questions``), :class:`~axislens.personas.designs.Rotated` (role ``r`` answers the
    ``r``-th cyclic block of the default set's questions; refused, naming counts that would
    balance, when the counts cannot) or :class:`~axislens.personas.designs.Nested` (0.2's
    unbalanced design, with a warning). Default: shared when both sides get the same number of
    questions, else rotated. Role ``r`` is the role's position in ``roles`` (or the catalogue).

    Example:
        >>> from axislens.personas import load_personas
        >>> items = persona_items(load_personas(), roles=["ghost", "bard"], n_prompts=2,
        ...                       n_questions=3, default_prompts=5, default_questions=6)
        >>> sum(i.kind == "default" for i in items), sum(i.kind == "role" for i in items)
        (30, 12)
        >>> sorted({i.question_id for i in items if i.kind == "role"}) == sorted(
        ...     {i.question_id for i in items if i.kind == "default"})
        True
    """
    from axislens.personas.designs import Nested, resolve_design, warn_if_unbalanced
    from axislens.store import ItemRecord

    d_prompts = n_prompts if default_prompts is None else default_prompts
    d_questions = n_questions if default_questions is None else default_questions
    if min(n_prompts, n_questions, d_prompts, d_questions) < 1:
        raise ValueError(
            "n_prompts, n_questions, default_prompts and default_questions must be >= 1, got "
            f"{n_prompts}, {n_questions}, {d_prompts}, {d_questions}"
        )
    spread = personas.spread_questions()
    chosen = [personas.role(r) for r in roles] if roles is not None else list(personas.roles)
    plan = (
        resolve_design(design, n_questions, d_questions).assign(
            len(chosen), n_questions, d_questions
        )
        if chosen
        else Nested().assign(1, n_questions, d_questions)  # the default set alone
    )
    need = max(q for qs in (*plan.role_questions, plan.default_questions) for q in qs) + 1
    if need > len(spread):
        raise ValueError(
            f"the {plan.design} design needs {need} questions; the catalogue has {len(spread)}"
        )
    if chosen and include_default:
        warn_if_unbalanced(plan)
    items = []

    def add(kind: str, role: str, k: int, system: str, prefix: str, qs: Sequence[int]) -> None:
        for q in (spread[j] for j in qs):
            msgs: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": q.text})
            items.append(ItemRecord(f"{prefix}/p{k}/{q.id}", kind, role, k, q.id, tuple(msgs)))  # type: ignore[arg-type]

    for role, qs in zip(chosen, plan.role_questions, strict=False):
        for k, prompt in enumerate(role.system_prompts[:n_prompts]):
            add("role", role.name, k, prompt, f"role/{role.name}", qs)
    if include_default:
        for k, prompt in enumerate(personas.default.render(model_name)[:d_prompts]):
            add("default", "default", k, prompt, "default", plan.default_questions)
    return items


def design_record(
    n_roles: int,
    n_questions: int,
    default_questions: int | None = None,
    design: QuestionDesign | str | None = None,
) -> dict[str, Any]:
    """The manifest's ``generation.design`` entry for a persona run of these counts (what
    :func:`persona_items` builds): the design's name, questions per side, their overlap and
    roles per default question.

    Example:
        >>> design_record(48, 3, 36)["roles_per_question"]
        4
    """
    from axislens.personas.designs import resolve_design

    d_questions = n_questions if default_questions is None else default_questions
    return (
        resolve_design(design, n_questions, d_questions)
        .assign(max(1, n_roles), n_questions, d_questions)
        .describe()
    )


def generate_responses(
    model: Model,
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
    items: Sequence[Any] | None = None,
    default_prompts: int | None = None,
    default_questions: int | None = None,
    design: QuestionDesign | str | None = None,
) -> list[Any]:
    """Generate role (and default) responses into ``store``; returns the completed records.

    ``default_prompts`` / ``default_questions`` size the default set on its own and ``design``
    says which questions each side answers (:func:`persona_items`; default: as one role, and
    the shared or rotated design).

    ``store`` is an :class:`~axislens.store.ActivationStore` or a folder (created if new, with
    the model and generation settings in its manifest, as ``collect`` writes them).

    ``items`` replaces the persona items (``roles``, ``n_prompts``, ``n_questions`` and
    ``include_default`` are then unused), e.g. trait items from
    :func:`axislens.collection.traits.trait_items`. ``{model_name}`` in default prompts
    renders to the public short name (:func:`axislens.presets.model_short_name`).

    Resumable: items whose response is already in the store are skipped; each chunk of
    ``batch_size`` items is written atomically as soon as it is generated. Sampling is seeded
    per item (``seed`` + item id), so a resumed run produces the same responses.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> personas = axislens.load_personas()  # doctest: +SKIP
        >>> store = axislens.ActivationStore.create("runs/x", {...})  # doctest: +SKIP
        >>> recs = generate_responses(model, personas, store, roles=["ghost"], n_prompts=2,
        ...                           n_questions=4, max_new_tokens=64)  # doctest: +SKIP
    """
    from dataclasses import replace as dc_replace

    from tqdm.auto import tqdm

    from axislens.model.chat import format_conversation
    from axislens.model.loading import model_provenance

    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    from axislens.presets import model_short_name

    model_name = model_short_name(model_provenance(model).model_id)
    extra: dict[str, Any] = {}
    if items is None:
        n_roles = len(roles) if roles is not None else len(personas.roles)
        extra["design"] = design_record(n_roles, n_questions, default_questions, design)
        items = persona_items(
            personas,
            roles=roles,
            n_prompts=n_prompts,
            n_questions=n_questions,
            include_default=include_default,
            model_name=model_name,
            default_prompts=default_prompts,
            default_questions=default_questions,
            design=design,
        )
    if isinstance(store, (str, os.PathLike)):  # a folder, as collect() takes: created if new
        from axislens.store import ActivationStore

        store = ActivationStore.create(
            store,
            {
                "model": model_provenance(model).to_dict(),
                **generation_provenance(personas, sampling, **extra),
            },
        )
    store.repair(activations=False)  # truncated/corrupt record shards: moved aside, redone
    have = store.records()
    done = {
        i.id: have[i.id]
        for i in items
        if i.id in have and have[i.id].messages[-1]["role"] == "assistant"
    }
    todo = [i for i in items if i.id not in done]
    engine = backend or BridgeBackend(model, batch_size=batch_size)
    if isinstance(engine, StreamingBackend):
        _generate_streaming(model, engine, store, todo, done, sampling, progress)
        return [done[i.id] for i in items]
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


def generate_run(
    model: Model,
    personas: Any,
    store: Any,
    items: Sequence[Any],
    sampling: SamplingConfig,
    *,
    engine: Backend,
    batch_size: int,
    launch: Any,
    roles: Sequence[str],
    progress: bool = True,
) -> tuple[list[Any], list[Any]]:
    """Generate a run's missing responses into ``store``; returns every record of ``items`` and
    the records new in this run (this rank's, under a launcher).

    Under ``accelerate launch`` / ``torchrun`` each rank first generates the items of its share
    of ``roles`` (rank 0 also the default items) and waits for the others; every rank then
    reads the finished records.

    Args:
        model: the bridge (its tokenizer and chat template format the prompts).
        personas: the catalogue the items come from.
        store: the store the responses go to.
        items: the whole run's items, in order.
        sampling: the sampling settings.
        engine: the backend that generates (:class:`BridgeBackend` or an engine).
        batch_size: prompts per batch.
        launch: this process's place in a multi-process job
            (:func:`~axislens.collection.launch.current_launch`).
        roles: the run's roles in their order (a rank owns every ``launch.owns(k)``-th).
        progress: show a progress bar.
    """
    before = {
        rid
        for rid, r in store.records().items()
        if r.messages and r.messages[-1]["role"] == "assistant"
    }
    gen: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "batch_size": batch_size,
        "backend": engine,
        "progress": progress,
    }
    mine: list[Any] | None = None
    if launch.distributed:  # this rank's share of the roles, then wait for the others
        owned = {r for k, r in enumerate(roles) if launch.owns(k)}
        share = [i for i in items if i.role in owned or (i.kind == "default" and launch.rank == 0)]
        mine = generate_responses(model, personas, store, items=share, **gen)
        from accelerate import PartialState

        PartialState().wait_for_everyone()
    # under a launcher: nothing left to generate, the records
    records = generate_responses(model, personas, store, items=items, **gen)
    return records, [r for r in (records if mine is None else mine) if r.id not in before]


def _generate_streaming(
    model: Model,
    engine: StreamingBackend,
    store: Any,
    todo: Sequence[Any],
    done: dict[str, Any],
    sampling: SamplingConfig,
    progress: bool,
) -> None:
    """The engine path of :func:`generate_responses`: check the engine, print the plan, then
    write completions in chunks as they arrive; failed items are left for resume (one error)."""
    import time
    from dataclasses import replace as dc_replace

    from tqdm.auto import tqdm

    from axislens.collection.engines import EngineError, eta_line, plan_line
    from axislens.model.chat import format_conversation

    info = engine.check(model)  # unreachable / wrong model / tokenizer mismatch: before any work
    # the plan, above the progress bar that follows
    tqdm.write(plan_line(info, len(todo), len(done), sampling, engine.concurrency))
    if not todo:
        return
    by_id = {i.id: i for i in todo}
    requests = (
        (i.id, format_conversation(model, list(i.messages), add_generation_prompt=True))
        for i in todo
    )
    buffer: list[Any] = []
    failed, first_error = 0, ""
    tokens, count, reported = 0, 0, False
    flush_every = float(getattr(engine, "flush_seconds", 30.0))
    t0 = last = time.perf_counter()
    bar = tqdm(total=len(todo), desc="generate", unit="resp", disable=not progress)

    def flush() -> None:
        if buffer:
            store.append_records(buffer)
            done.update({r.id: r for r in buffer})
            buffer.clear()

    try:
        for c in engine.stream(requests, sampling, info):
            count += 1
            bar.update(1)
            if not c.ok or c.text is None:
                failed += 1
                first_error = first_error or f"{c.key}: {c.error}"
                continue
            tokens += c.completion_tokens
            item = by_id[c.key]
            buffer.append(
                dc_replace(
                    item,
                    messages=(*item.messages, {"role": "assistant", "content": c.text}),
                    skipped=None if c.text.strip() else "empty response",
                )
            )
            now = time.perf_counter()
            bar.set_postfix_str(f"{tokens / max(now - t0, 1e-9):.1f} tok/s", refresh=False)
            if len(buffer) >= engine.chunk_size or now - last >= flush_every:
                flush()
                last = now
                if progress and not reported:
                    reported = True
                    bar.write(eta_line(count, tokens, now - t0, len(todo) - count))
    finally:
        flush()
        bar.close()
    if failed:
        raise EngineError(
            f"engine {info.name}: {failed} of {len(todo)} items failed and are left for resume "
            f"({len(todo) - failed} stored; first: {first_error})"
        )


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
