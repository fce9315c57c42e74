"""The main job (``axislens demo`` / ``make demo``): the Assistant Axis method end to end.

Stages, each timed and reported:

1. generate role and default responses for a scaled-down persona set (seeded, resumable);
2. collect per-layer span means of the responses into an activation store;
3. judge adherence (``keep_all`` by default: a 135M model is no judge of role-play — with
   ``--judge model`` the local model scores its own answers, with ``--judge openai`` an
   OpenAI-compatible endpoint does, as in the paper);
4. compute the axis, persona-space PCA, cap thresholds and the axis's split-half cosines
   (``axislens axis`` on the store; every figure shows the cosine at its layer);
5. steer one prompt away from and toward the Assistant and measure the projection;
6. replay a built-in multi-turn conversation unsteered and capped, tracking the drift;
7. write ``report.html`` (all figures) and ``summary.json``, and print a summary table.

Every number is computed from the store in this run; nothing is hard-coded. A second run reuses
the store (resumable). ``DemoConfig.full()`` is the paper-scale configuration (all roles,
5 prompts, 240 questions, 512 tokens): for a GPU.

Example:
    >>> from axislens.pipelines import DemoConfig, run_demo
    >>> summary = run_demo(DemoConfig(n_roles=12, n_questions=2))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from axislens.model.protocol import Model

if TYPE_CHECKING:
    from axislens.analysis.space import Scale
    from axislens.analysis.vectors import Adjust
    from axislens.collection.activations import CollectSummary
    from axislens.collection.judges import Judge, JudgeSummary
    from axislens.personas.designs import DesignName, QuestionDesign

__all__ = [
    "CollectMode",
    "DemoConfig",
    "JudgeChoice",
    "RunSummary",
    "default_cap_layers",
    "load_script",
    "parse_cap_layers",
    "run_axis",
    "run_collect",
    "run_demo",
]

CollectMode = Literal["response", "prefill"]
JudgeChoice = Literal["none", "model", "openai"]


# ------------------------------------------------------------------ run_collect


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What :func:`run_collect` did: items, tokens, seconds per stage."""

    out: str
    mode: CollectMode
    items: int
    generated: int
    generated_tokens: int
    generate_seconds: float
    collect: CollectSummary | None
    """``None`` when collection was skipped (generation only: a later run completes it)."""
    judge: JudgeSummary | None
    seconds: float

    @property
    def tokens(self) -> int:
        """Tokens processed this run: generated tokens plus teacher-forced tokens."""
        return self.generated_tokens + (self.collect.tokens if self.collect else 0)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [f"store: {self.out} (span={self.mode})"]
        if self.mode == "response":
            rate = self.generated_tokens / self.generate_seconds if self.generate_seconds else 0.0
            lines.append(
                f"generate: {self.generated} new responses, {self.generated_tokens} tokens in "
                f"{self.generate_seconds:.1f} s ({rate:.1f} tokens/s)"
            )
        if self.collect is None:
            lines.append("collect: skipped (generation only; rerun without --no-collect)")
        else:
            lines.append(f"collect: {self.collect}")
        if self.collect is not None and self.collect.skipped_reasons:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(self.collect.skipped_reasons.items()))
            lines.append(f"  skipped: {why}")
        if self.judge is not None:
            lines.append(str(self.judge))
        lines.append(
            f"total: {self.items} items, {self.tokens} tokens in {self.seconds:.1f} s "
            f"({self.tokens_per_second:.1f} tokens/s)"
        )
        return "\n".join(lines)


def _pick_roles(personas: Any, roles: int | Sequence[str] | None) -> list[str] | None:
    if roles is None:
        return None
    if isinstance(roles, int):
        spread = personas.spread_roles()
        if not 1 <= roles <= len(spread):
            raise ValueError(f"--roles {roles}: the catalogue has {len(spread)} roles")
        return [r.name for r in spread[:roles]]
    return [personas.role(name).name for name in roles]


@dataclass(slots=True)
class _CountingBackend:
    """The bridge backend, counting generated tokens (stop tokens excluded)."""

    model: Model
    batch_size: int
    tokens: int = 0

    def generate(
        self, conversations: Sequence[Any], sampling: Any, keys: Sequence[str]
    ) -> list[str]:
        from axislens.model.decoding import generate_tokens

        toks = generate_tokens(
            self.model,
            [c.input_ids for c in conversations],
            sampling,
            keys=keys,
            batch_size=self.batch_size,
        )
        self.tokens += sum(len(t) for t in toks)
        return [self.model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]


def _make_judge(choice: JudgeChoice | Judge, model: Model, batch_size: int) -> Judge | None:
    from axislens.collection.judges import ModelJudge, OpenAIJudge

    if not isinstance(choice, str):
        return choice
    if choice not in get_args(JudgeChoice):
        raise ValueError(
            f"unknown judge {choice!r}; expected one of {', '.join(get_args(JudgeChoice))}"
        )
    if choice == "none":
        return None
    if choice == "model":
        return ModelJudge(model, batch_size=batch_size)
    return OpenAIJudge()


def run_collect(
    model: Model,
    out: str | os.PathLike[str],
    *,
    personas: Any = None,
    roles: int | Sequence[str] | None = None,
    n_prompts: int = 5,
    n_questions: int = 240,
    default_prompts: int | None = None,
    default_questions: int | None = None,
    design: QuestionDesign | str | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    mode: CollectMode = "response",
    judge: JudgeChoice | Judge = "none",
    hooks: Sequence[str] = ("resid_post",),
    layers: Sequence[int] | slice | None = None,
    include_default: bool = True,
    progress: bool = True,
    store_dtype: str | None = None,
    writer: Any = None,
    backend: Any = None,
    collect_activations: bool = True,
    force: bool = False,
    launch: Any = None,
) -> RunSummary:
    """Generate responses (``mode="response"``), collect span means, and judge, into ``out``.

    Under ``accelerate launch`` / ``torchrun`` (``launch``: default
    :func:`~axislens.collection.launch.current_launch`), each rank generates the responses of
    its share of the roles (rank 0 also the default items), waits for the others, collects its
    share of the chunks as a :class:`~axislens.store.SharedWriter`, and rank 0 judges.
    ``force`` resumes a store whose persona catalogue, generation settings or model weights
    differ (otherwise refused, naming the field).

    ``store_dtype`` (``"float32"`` default for a new store, ``"bfloat16"``) and ``writer``
    (:class:`~axislens.store.ExclusiveWriter` default, :class:`~axislens.store.SharedWriter` for
    the ranks of one multi-process job) go to :meth:`~axislens.store.ActivationStore.create`.

    Args:
        personas: a :class:`~axislens.personas.catalogue.Personas`, a catalogue directory, or ``None`` for
            the shipped catalogue.
        roles: ``N`` = the first N roles of the catalogue's spread order (categories
            interleaved), a list of names, or ``None`` for all.
        default_prompts, default_questions, design: the default set's size and the question
            design (:func:`~axislens.collection.responses.persona_items`; recorded in the
            store manifest as ``generation.design``).
        mode: ``"response"`` generates responses and averages over them; ``"prefill"`` skips
            generation and records the activation at the generation-prompt position.
        judge: ``"none"`` (no scores), ``"model"`` (this model judges, greedy), ``"openai"``
            (:class:`~axislens.collection.judges.OpenAIJudge` configured from the environment) or a judge
            object. Only role responses are judged; ``"prefill"`` has nothing to judge.
        backend: generate through this engine (e.g. an
            :class:`~axislens.collection.engines.OpenAIBackend` on a vLLM server) instead of the
            bridge; collection always runs through the bridge.
        collect_activations: ``False`` stops after generation (and judging): a store with
            responses but no activations, which a later run completes.

    Resumable: items already generated, collected or scored are skipped.
    """
    from axislens.collection.activations import collect, collection_manifest, span_policy
    from axislens.collection.judges import judge_store
    from axislens.collection.launch import current_launch
    from axislens.collection.responses import (
        design_record,
        generate_responses,
        generation_provenance,
        persona_items,
    )
    from axislens.model.decoding import SamplingConfig
    from axislens.model.hooks import hook_name, resolve_layers
    from axislens.model.loading import model_provenance
    from axislens.personas import Personas, load_personas
    from axislens.presets import model_short_name
    from axislens.store import ActivationStore, SharedWriter

    t0 = time.perf_counter()
    if mode not in get_args(CollectMode):
        raise ValueError(
            f"unknown mode {mode!r}; expected one of {', '.join(get_args(CollectMode))}"
        )
    if mode == "prefill" and (backend is not None or not collect_activations):
        raise ValueError("--mode prefill generates nothing: --engine and --no-collect do not apply")
    if mode == "prefill" and judge != "none":
        raise ValueError(
            "--judge needs responses; --mode prefill generates none (use --judge none)"
        )
    cat = personas if isinstance(personas, Personas) else load_personas(personas)
    role_names = _pick_roles(cat, roles)
    judge_obj = _make_judge(judge, model, batch_size)
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    n_roles = len(role_names) if role_names is not None else len(cat.roles)
    prov = generation_provenance(
        cat,
        sampling,
        design=design_record(n_roles, n_questions, default_questions, design),
        **({"engine": backend.name} if backend is not None else {}),
    )
    if mode == "prefill":
        prov = {"personas": prov["personas"]}
    policy = span_policy(mode)
    layer_list = resolve_layers(layers, int(model.cfg.n_layers))
    hooks = tuple(hooks)
    if not hooks:
        raise ValueError("hooks: expected at least one hook")
    for h in hooks:  # before the store exists: a typo must not become the store's identity
        if hook_name(h, 0) not in model.hook_dict:
            raise ValueError(f"hooks: the model has no hook point {hook_name(h, 0)!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    launch = current_launch() if launch is None else launch
    if writer is None and launch.distributed:
        writer = SharedWriter(job=launch.job)
    # Create (or check) the store before any work: a mismatched model/hooks/span/catalogue/
    # sampling fails fast, and so does an unwritable folder.
    store = ActivationStore.create(
        out,
        collection_manifest(model, hooks, layer_list, policy, prov, store_dtype),
        writer=writer,
        force=force,
    )
    gen_t0 = time.perf_counter()
    generated = 0
    counting = _CountingBackend(model, batch_size)
    every = persona_items(  # the whole run's items: rotation follows each role's place in it
        cat,
        roles=role_names,
        n_prompts=n_prompts,
        n_questions=n_questions,
        include_default=include_default,
        model_name=model_short_name(model_provenance(model).model_id),
        default_prompts=default_prompts,
        default_questions=default_questions,
        design=design,
    )
    if mode == "response":
        before = {
            rid
            for rid, r in store.records().items()
            if r.messages and r.messages[-1]["role"] == "assistant"
        }
        gen: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "batch_size": batch_size,
            "backend": counting if backend is None else backend,
            "progress": progress,
        }
        mine: list[Any] | None = None
        if launch.distributed:  # this rank's share of the roles, then wait for the others
            order = role_names or [r.name for r in cat.spread_roles()]
            owned = {r for k, r in enumerate(order) if launch.owns(k)}
            mine = generate_responses(
                model,
                cat,
                store,
                items=[
                    i
                    for i in every
                    if i.role in owned or (i.kind == "default" and launch.rank == 0)
                ],
                **gen,
            )
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        # under a launcher: nothing left to generate, the records
        records = generate_responses(model, cat, store, items=every, **gen)
        generated = sum(1 for r in (records if mine is None else mine) if r.id not in before)
        if backend is not None:  # the engine's tokens, counted with the local tokenizer
            counting.tokens = sum(
                len(model.tokenizer(r.messages[-1]["content"], add_special_tokens=False).input_ids)
                for r in (records if mine is None else mine)
                if r.id not in before
            )
    else:
        records = every
    gen_seconds = time.perf_counter() - gen_t0
    summary = None
    if collect_activations:
        summary = collect(
            model,
            records,
            store,
            hooks=hooks,
            layers=list(layer_list),
            span=policy,
            batch_size=batch_size,
            provenance=prov,
            progress=progress,
            writer=writer,
            launch=launch,
            force=force,
        )
    judged = None
    if judge_obj is not None and launch.rank == 0:
        judged = judge_store(store, cat, judge_obj, progress=progress)
    return RunSummary(
        out=str(Path(out)),
        mode=mode,
        items=len(records),
        generated=generated,
        generated_tokens=counting.tokens,
        generate_seconds=gen_seconds if mode == "response" else 0.0,
        collect=summary,
        judge=judged,
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------ run_axis


def default_cap_layers(
    stored: Sequence[int], n_model_layers: int, model_id: str | None = None
) -> list[int]:
    """The cap window of ``model_id`` from the known-model table
    (:func:`axislens.presets.cap_window`: Qwen3-32B 46-53, Llama-3.3-70B 56-71, ...) when all
    of it is stored; otherwise, as a *fallback* (with a warning saying so), the stored layers at
    70%-85% of the model's depth (:data:`axislens.presets.CAP_DEPTH`; at least the one nearest
    77.5%)."""
    import warnings

    from axislens.presets import cap_window, depth_cap_layers

    if model_id is not None:
        try:
            window, source = cap_window(model_id, n_model_layers)
        except ValueError as err:  # same name, another depth: not the tabled model
            window, source = (), f"fallback ({err})"
        if not source.startswith("fallback") and set(window) <= set(stored):
            return list(window)
        why = source if source.startswith("fallback") else f"{source}, not all stored"
    else:
        why = "no model id"
    chosen = list(depth_cap_layers(n_model_layers, tuple(stored)))
    warnings.warn(
        f"cap layers {chosen}: depth-rule fallback ({why}); pass cap layers explicitly to override",
        UserWarning,
        stacklevel=2,
    )
    return chosen


def parse_cap_layers(
    text: str, stored: Sequence[int], n_model_layers: int | None = None
) -> list[int]:
    """:func:`~axislens.model.hooks.parse_layers` syntax: ``"all"`` (every stored layer);
    ``"21:26"`` (stop excluded, as in Python and the public ids); ``"-4:"``; ``"21,23"``.
    Negative layers count from ``n_model_layers`` (default: the last stored layer + 1)."""
    from axislens.model.hooks import parse_layers, resolve_layers

    if text.strip() == "all":
        return list(stored)
    n = n_model_layers if n_model_layers is not None else max(stored) + 1
    return list(resolve_layers(parse_layers(text, "--cap-layers"), n, "--cap-layers"))


def _floats(t: Any) -> list[float]:
    return [float(v) for v in t]


# ------------------------------------------------------------------ split-half stability

_STABILITY_NOTE = (
    "split-half cosine: the cosine between the axes computed from two disjoint halves of the "
    "responses (by item: each role's and the defaults' responses halved at random; by question: "
    "the questions halved, so the halves share none); near 1 = stable, near 0 = noise"
)
_SPLITS: tuple[Literal["item", "question"], ...] = ("item", "question")


def _split_half_cosines(
    src: Any,
    by: Literal["item", "question"],
    *,
    layers: Sequence[int],
    seed: int,
    min_score: int | None,
    min_count: int,
    hook: str,
    adjust: Adjust = "auto",
) -> tuple[list[float] | None, str | None]:
    """Per-layer split-half cosines (:func:`~axislens.analysis.stability.split_half`), or
    ``(None, reason)`` when the data cannot be split that way (too few questions, the defaults
    all in one half, no role in both halves)."""
    from axislens.analysis.stability import split_half

    try:
        sh = split_half(
            src,
            by=by,
            seed=seed,
            min_score=min_score,
            min_count=min_count,
            hook=hook,
            layers=layers,
            adjust=adjust,
        )
    except ValueError as err:
        return None, str(err)
    return _floats(sh.cosines), None


def _stability(
    src: Any,
    layers: Sequence[int],
    *,
    seed: int,
    min_score: int | None,
    min_count: int,
    hook: str,
    adjust: Adjust = "auto",
) -> dict[str, Any]:
    """Split-half cosines at every layer in ``layers``, by item and by question (``None`` plus
    ``by_<split>_reason`` where a split is impossible), with the settings and a note."""
    out: dict[str, Any] = {"layers": list(layers)}
    for by in _SPLITS:
        values, reason = _split_half_cosines(
            src,
            by,
            layers=layers,
            seed=seed,
            min_score=min_score,
            min_count=min_count,
            hook=hook,
            adjust=adjust,
        )
        out[f"by_{by}"], out[f"by_{by}_reason"] = values, reason
    settings = {"seed": seed, "min_score": min_score, "min_count": min_count, "adjust": adjust}
    return {**out, **settings, "note": _STABILITY_NOTE}


def _stability_at(stab: dict[str, Any], layer: int) -> dict[str, float | None]:
    """``{"by_item": cos, "by_question": cos}`` at ``layer`` (``None`` where not computed)."""
    i = stab["layers"].index(layer) if layer in stab["layers"] else None
    return {
        f"by_{by}": None if i is None or stab[f"by_{by}"] is None else stab[f"by_{by}"][i]
        for by in _SPLITS
    }


def _cos_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _stability_pair(stab: dict[str, Any], layer: int) -> str:
    """``"+0.991 / +0.874"``: the split-half cosines (item / question) at ``layer``."""
    return " / ".join(_cos_text(v) for v in _stability_at(stab, layer).values())


def _stability_label(stab: dict[str, Any], layer: int) -> str:
    """The one-line note shown beside a figure of ``layer``."""
    return f"split-half cos (item / question), layer {layer}: {_stability_pair(stab, layer)}"


def _stability_by_layer_label(stab: dict[str, Any], layers: Sequence[int]) -> str:
    """The note beside a figure of every layer: the cosines at each plotted layer."""
    pairs = ", ".join(f"{layer}: {_stability_pair(stab, layer)}" for layer in layers)
    return f"split-half cos (item / question) by layer (dotted lines): {pairs}"


def _with_stability_traces(fig: Any, stab: dict[str, Any]) -> Any:
    """Add the per-layer split-half cosines to :func:`~axislens.plots.axis_layer_lines`'s
    cosine axis (dotted lines); returns ``fig``."""
    for by in _SPLITS:
        if stab[f"by_{by}"] is not None:
            fig.add_scatter(
                x=stab["layers"],
                y=stab[f"by_{by}"],
                mode="lines+markers",
                line={"dash": "dot"},
                name=f"split-half cos ({by})",
                secondary_y=False,
            )
    return fig


def _figures_html(figures: Sequence[tuple[Any, str]], **kwargs: Any) -> str:
    """Every ``(figure, note)`` as a captioned ``<figure>`` with its note above the plot
    (plotly.js embedded in the first)."""
    from axislens.plots.captions import figure_html

    return "".join(
        figure_html(fig, include_plotlyjs=(i == 0), note=note, **kwargs)
        for i, (fig, note) in enumerate(figures)
    )


def run_axis(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layer: int | None = None,
    min_score: int | None = 3,
    min_count: int = 50,
    percentile: float = 0.25,
    cap_layers: str | Sequence[int] | None = None,
    scale: Scale = "center",
    hook: str = "resid_post",
    seed: int = 0,
    adjust: Adjust = "auto",
) -> dict[str, Any]:
    """Compute everything ``axislens axis`` writes; returns the ``summary.json`` content.

    ``seed`` draws the split halves of the stability check (``summary["stability"]``: the
    split-half cosines by item and by question at every layer, and at ``layer``). ``adjust``
    picks the estimator (:func:`~axislens.analysis.vectors.role_vectors`; the summary's
    ``estimator`` says which ran and why); ``summary["question_offset"]`` holds the design and
    the question-offset estimate b̂ (:func:`~axislens.analysis.balance.question_offset`), and
    ``summary["cap"]["pools"]`` the thresholds under the default, balanced and all pools."""
    from axislens import plots
    from axislens.analysis.balance import question_offset
    from axislens.analysis.space import layer_profile, persona_pca
    from axislens.analysis.thresholds import cap_pools
    from axislens.analysis.traits import TraitFilter, trait_cosines, trait_vectors
    from axislens.analysis.vectors import role_projections, role_vectors
    from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json

    if scale not in ("center", "center_l2"):
        raise ValueError(f"unknown scale {scale!r}; expected 'center' or 'center_l2'")
    src = ActivationStore.open(store)
    out_dir = Path(out)
    rv = role_vectors(src, hook=hook, min_score=min_score, min_count=min_count, adjust=adjust)
    if layer is None:  # the known target layer (Gemma-2-27B: 22), else the middle stored layer
        from axislens.presets import known_model

        known = known_model(src.model_id) if src.model_id else None
        layer = (
            known.target_layer
            if known is not None and known.target_layer in rv.layers
            else rv.layers[len(rv.layers) // 2]
        )
    rv.column(layer)  # raises naming the stored layers
    axis = rv.axis()
    n_model = rv.n_model_layers or max(rv.layers) + 1
    caps = (
        default_cap_layers(rv.layers, n_model, src.model_id)
        if cap_layers is None
        else parse_cap_layers(cap_layers, rv.layers, n_model)
        if isinstance(cap_layers, str)
        else list(cap_layers)
    )
    profile = layer_profile(rv, scale=scale)
    pca = persona_pca(rv, layer, scale=scale)
    proj = role_projections(rv, layer)
    pools = cap_pools(src, axis, layers=caps, percentile=percentile)
    cap = pools["default"]
    offset = question_offset(src, axis, min_score=min_score, min_count=min_count)
    stab = _stability(
        src,
        rv.layers,
        seed=seed,
        min_score=min_score,
        min_count=min_count,
        hook=hook,
        adjust=adjust,
    )
    at = _stability_label(stab, layer)
    figures: list[tuple[Any, str]] = [
        (plots.variance_bars(pca), at),
        (plots.persona_space_scatter(pca, dims=2), at),
        *([(plots.persona_space_scatter(pca, dims=3), at)] if pca.loadings.shape[1] >= 3 else []),
        (
            _with_stability_traces(plots.axis_layer_lines(profile), stab),
            _stability_by_layer_label(stab, profile.layers),
        ),
        (plots.role_projection_strip(proj), at),
    ]
    traits: dict[str, Any] | None = None
    if src.query(kind="trait_pos") and src.query(kind="trait_neg"):
        tfilter = TraitFilter() if min_score is not None else None  # > 50 / < 50 (assumption)
        tv = trait_vectors(src, hook=hook, layers=[layer], score_filter=tfilter)
        tc = trait_cosines(tv, axis, layer)
        traits = {"layer": layer, "cosines": dict(zip(tc.names, _floats(tc.cosines), strict=True))}
        figures.append((plots.trait_cosine_bars(tc), at))

    out_dir.mkdir(parents=True, exist_ok=True)
    axis.save(out_dir / "axis.safetensors")
    cap.save(out_dir / "cap.json")
    summary: dict[str, Any] = {
        "store": str(src.root),
        "model": src.model_id,
        "hook": hook,
        "min_score": min_score,
        "min_count": min_count,
        "roles_used": dict(zip(rv.names, rv.counts, strict=True)),
        "roles_excluded": dict(rv.excluded),
        "n_default": rv.default_count,
        "estimator": {
            "adjust": adjust,
            "name": rv.provenance["estimator"],
            "reason": rv.provenance["estimator_reason"],
        },
        "question_offset": offset.to_dict(),
        "pca": {
            "layer": layer,
            "scale": scale,
            "pc1_variance": float(pca.explained_variance_ratio[0]),
            "explained_variance_ratio": _floats(pca.explained_variance_ratio[:50]),
            "dims": {str(k): v for k, v in pca.dims.items()},
            "cos_axis_pc1": pca.cos_axis_pc1,
            "default_position": _floats(pca.default_position[:10])
            if pca.default_position is not None
            else None,
            "pc1_loadings": dict(zip(pca.names, _floats(pca.pc1_loadings), strict=True)),
        },
        "layers": {
            "layer": list(profile.layers),
            "cos_axis_pc1": _floats(profile.cos_axis_pc1),
            "axis_norm": _floats(profile.axis_norm),
            "pc1_variance": _floats(profile.pc1_variance),
            "dims_70": list(profile.dims_70),
        },
        "role_projections": {
            "layer": layer,
            "default": proj.default,
            "roles": dict(zip(proj.names, _floats(proj.values), strict=True)),
        },
        "cap": {
            "convention": "floor: h <- h - unit(v_l) * min(h . unit(v_l) - tau_l, 0)",
            "layers": list(cap.layers),
            "thresholds": list(cap.thresholds),
            "percentile": cap.percentile,
            "n_items": cap.provenance["calibration"]["n_items"],
            "unit": cap.provenance["calibration"]["unit"],
            "pool": cap.provenance["calibration"]["pool"],
            "pools": {k: list(c.thresholds) for k, c in pools.items()},
            "assumption": "unit, pool and percentile: docs/concepts.md, 'Cap thresholds'",
        },
        "stability": {"layer": layer, "at_layer": _stability_at(stab, layer), **stab},
        "traits": traits,
        "files": ["axis.safetensors", "cap.json", "cap.safetensors", "summary.json", "report.html"],
    }
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_bytes(out_dir / "report.html", _report(summary, figures).encode())
    return summary


def _design_row(offset: dict[str, Any]) -> tuple[str, str]:
    """The summary-table row of the question design: name, questions per side, overlap."""
    name = (offset.get("design") or {}).get("name", "not recorded")
    return (
        "question design",
        f"{name}: default {offset['default_questions']} questions, roles "
        f"{offset['role_questions']}, overlap {offset['overlap']}, weight gap "
        f"{offset['weight_gap']:.2f}",
    )


def _estimator_row(est: dict[str, Any]) -> tuple[str, str]:
    return "estimator", f"{est['name']} ({est['reason']})"


def _offset_row(offset: dict[str, Any], layer: int) -> tuple[str, str]:
    """|b-hat| / |axis| and cos(axis, b-hat) at ``layer`` (or why they are not available)."""
    label = f"question offset |b|/|axis|, cos (layer {layer})"
    if offset["offset_over_axis"] is None:
        return label, f"n/a ({offset['reason']})"
    i = offset["layers"].index(layer)
    cos = offset["cos_axis_offset"][i]
    return label, f"{offset['offset_over_axis'][i]:.3f}, {_cos_text(cos)}"


def _pool_rows(cap: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per cap pool: the thresholds over the cap layers (the first is the one used)."""
    pools = cap.get("pools") or {cap["pool"].get("name", "?"): cap["thresholds"]}
    used = cap["pool"].get("name")
    return [
        (
            f"cap thresholds, {name} pool{' (used)' if name == used else ''}",
            ", ".join(f"{t:.3f}" for t in taus),
        )
        for name, taus in pools.items()
    ]


def _report(summary: dict[str, Any], figures: Sequence[tuple[Any, str]]) -> str:
    """One HTML page: a summary table, then every ``(figure, note)`` (plotly.js embedded in the
    first; the note, above the plot, gives the axis's split-half cosine at its layer)."""
    pca = summary["pca"]
    stab = summary["stability"]
    rows = [
        ("model", summary["model"]),
        ("store", summary["store"]),
        (
            "roles used / excluded",
            f"{len(summary['roles_used'])} / {len(summary['roles_excluded'])}",
        ),
        ("default responses", summary["n_default"]),
        (f"PC1 variance (layer {pca['layer']})", f"{100 * pca['pc1_variance']:.1f}%"),
        ("dims for 70/80/90/95%", " / ".join(str(v) for v in pca["dims"].values())),
        ("cos(axis, PC1)", f"{pca['cos_axis_pc1']:.3f}"),
        _design_row(summary["question_offset"]),
        _estimator_row(summary["estimator"]),
        _offset_row(summary["question_offset"], stab["layer"]),
        _stability_row(stab, stab["layer"]),
        ("cap layers", summary["cap"]["layers"]),
        *_pool_rows(summary["cap"]),
    ]
    if summary["roles_excluded"]:
        rows.append(("roles excluded (count)", json.dumps(summary["roles_excluded"])))
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td>"
        f"<td class='note'>{html.escape(_row_note(str(k)))}</td></tr>"
        for k, v in rows
    )
    parts = _figures_html(figures, default_height="560px")
    title = html.escape(f"axislens axis report: {summary['model']}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        f"{_REPORT_CSS}</style></head><body>"
        f"<h1>{title}</h1><table>{table}</table>{parts}</body></html>\n"
    )


# ------------------------------------------------------------------ run_demo


DemoJudge = Literal["keep_all", "model", "openai"]


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Scale and settings of the main job. Defaults fit 2 CPU cores in under 10 minutes.

    ``n_roles`` roles are taken from the catalogue's spread order (categories interleaved, so
    even a small subset spans assistant-like professions to fantastical creatures); ``None``
    takes all of them.
    """

    model: str = "smollm2-135m-instruct"
    out: str = "demo-out"
    n_roles: int | None = 48
    n_prompts: int = 2
    n_questions: int = 3
    n_default_prompts: int | None = 5
    """Default (no-role) prompts; ``None``: ``n_prompts``. The default set is one set that every
    role is compared against, so more default items steady the axis most cheaply."""
    n_default_questions: int | None = 36
    """Questions per default prompt; ``None``: ``n_questions``. 5 x 36 = 180 default items: the
    default set is one set that every role is compared against, so its size steadies the axis
    most cheaply (``experiments/paper_table.py``'s lever study, docs/results.md). 36 = 48 roles x
    3 questions / 4, so the rotated design gives every default question to exactly 4 roles. At
    these defaults the demo measures split-half cosines of 0.86 by item and 0.74 by question at
    layer 15 (0.2's nested design: 0.89 / -0.11), in 5.8 min on 2 CPU cores."""
    design: DesignName | None = None
    """Question design (:mod:`axislens.personas.designs`): ``None`` = shared when
    ``n_questions == n_default_questions``, else rotated (each role answers a cyclic block of
    the default set's questions, so both sides weigh every question alike); ``"nested"`` is
    0.2's unbalanced design."""
    max_new_tokens: int = 48
    batch_size: int = 16
    judge: DemoJudge = "keep_all"
    min_score: int = 3
    min_count: int = 3
    percentile: float = 0.25
    steer_coeff: float = 0.5
    replay_tokens: int = 48
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    engine_url: str | None = None
    """Generate through this OpenAI-compatible server (vLLM...) instead of the bridge."""
    engine_model: str | None = None
    engine_concurrency: int = 64
    personas: str | None = None
    """Persona catalogue folder (axislens or the paper's public layout: the paper preset);
    ``None`` = the shipped catalogue. The summary records which one ran."""

    @classmethod
    def full(cls, **overrides: Any) -> DemoConfig:
        """The paper's scale: every role, 5 prompts, 240 questions, 512 new tokens, >= 50 score-3
        responses per role, an LLM judge (OpenAI-compatible endpoint from the environment)."""
        base = cls(
            n_roles=None,
            n_prompts=5,
            n_questions=240,
            n_default_prompts=None,
            n_default_questions=None,
            max_new_tokens=512,
            batch_size=64,
            judge="openai",
            min_count=50,
            replay_tokens=256,
            dtype="bfloat16",
            device="cuda",
        )
        return replace(base, **overrides)


@dataclass
class _Timer:
    stages: dict[str, float]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - t0, 1)


def _peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024**2) if sys.platform != "darwin" else kib / 1024**3


def builtin_conversation(name: str = "philosophy_drift") -> dict[str, Any]:
    """A built-in replay script (``user_turns`` + metadata) from ``axislens/data/conversations``."""
    text = resources.files("axislens").joinpath(f"data/conversations/{name}.json").read_text()
    return dict(json.loads(text))


def load_script(spec: str) -> tuple[tuple[str, ...], str | None, dict[str, Any], str]:
    """``(user turns, system prompt, metadata, source)`` of a replay script
    (``axislens monitor --script``): a transcript file (read by
    :func:`~axislens.monitoring.projection.load_transcript`), a JSON file with a ``"user_turns"``
    list (the layout of the shipped conversations), or the name of a shipped conversation
    (``philosophy_drift``, ``therapy_drift``, ``coding_control``, ``writing_control``).

    Example:
        >>> turns, system, meta, source = load_script("philosophy_drift")
        >>> len(turns) > 3 and meta["domain"]
        'philosophy-of-AI'
    """
    from axislens.monitoring.projection import TranscriptError, load_transcript

    path = Path(spec)
    shipped = resources.files("axislens").joinpath("data/conversations")
    obj: Any = None
    if not path.exists():
        name = path.stem if path.suffix in ("", ".json") else spec
        if path.parent != Path(".") or not shipped.joinpath(f"{name}.json").is_file():
            names = sorted(f.name[:-5] for f in shipped.iterdir() if f.name.endswith(".json"))
            raise FileNotFoundError(
                f"{spec}: no such file, and no shipped conversation of that name "
                f"(shipped: {', '.join(names)})"
            )
        obj = builtin_conversation(name)
        source = f"axislens/data/conversations/{name}.json"
    else:
        source = str(path)
        if path.suffix == ".json":
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None  # load_transcript reports it, naming the line
        if not (isinstance(obj, dict) and "user_turns" in obj):
            t = load_transcript(path)
            return t.user_turns, t.system, dict(t.metadata), source
    turns = obj["user_turns"]
    if not (
        isinstance(turns, list) and turns and all(isinstance(x, str) and x.strip() for x in turns)
    ):
        raise TranscriptError(f"{source}: 'user_turns' must be a non-empty list of strings")
    meta = {k: v for k, v in obj.items() if k != "user_turns"}
    system = meta.get("system_prompt")
    if not (isinstance(system, str) and system.strip()):
        system = None
    return tuple(turns), system, meta, source


def _layers(n_layers: int, model_id: str = "") -> tuple[int, list[int], int, str]:
    """(target layer, cap window, measure layer, where they come from): the known-model table
    (:mod:`axislens.presets`), else the fallbacks (``n_layers // 2``; the depth rule)."""
    from axislens.presets import cap_window, target_layer

    try:
        mid, mid_src = target_layer(model_id, n_layers)
        caps, cap_src = cap_window(model_id, n_layers)
    except ValueError as err:  # a tabled name with another depth (e.g. a truncated model)
        mid, mid_src = n_layers // 2, f"fallback: n_layers // 2 ({err})"
        caps, cap_src = cap_window("", n_layers)
    return mid, list(caps), caps[-1], f"target layer: {mid_src}; cap layers: {cap_src}"


def _judge(cfg: DemoConfig, model: Model) -> Any:
    from axislens.collection.judges import KeepAll, ModelJudge, OpenAIJudge

    if cfg.judge == "keep_all":
        return KeepAll()
    if cfg.judge == "model":
        return ModelJudge(model)
    return OpenAIJudge()


def run_demo(
    cfg: DemoConfig | None = None, *, model: Model | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the main job; returns (and writes to ``<out>/summary.json``) the summary.

    ``model`` overrides ``cfg.model`` with an already-loaded bridge (tests use a tiny model)."""
    cfg = DemoConfig() if cfg is None else cfg
    from axislens import plots
    from axislens.analysis.space import layer_profile, persona_pca
    from axislens.analysis.vectors import role_projections, role_vectors
    from axislens.collection.activations import collect, collection_manifest, span_policy
    from axislens.collection.judges import judge_store
    from axislens.collection.responses import (
        design_record,
        generate_responses,
        generation_provenance,
    )
    from axislens.directions import CapConfig, Direction
    from axislens.interventions.attach import residual_norms, steer
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_text
    from axislens.model.loading import load_model, model_provenance
    from axislens.monitoring.projection import project_conversation
    from axislens.monitoring.session import chat_session
    from axislens.personas import load_personas
    from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json

    timer = _Timer({})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with timer.stage("load model"):
        bridge: Model = (
            model
            if model is not None
            else load_model(cfg.model, device=cfg.device, dtype=getattr(torch, cfg.dtype))
        )
        n_layers = int(bridge.cfg.n_layers)
        mid, cap_layers, measure, layer_note = _layers(n_layers, model_provenance(bridge).model_id)
        print(
            f"{model_provenance(bridge).model_id}: {n_layers} layers, d_model {bridge.cfg.d_model}; middle layer {mid}, cap layers {cap_layers}"
        )
        print(f"  ({layer_note})")
    personas = load_personas(cfg.personas)
    print(f"persona catalogue: {personas.source} (sha256 {personas.content_hash()[:12]})")
    roles = [r.name for r in personas.spread_roles()[: cfg.n_roles]] if cfg.n_roles else None
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    backend = None
    if cfg.engine_url:
        from axislens.collection.engines import OpenAIBackend

        if not cfg.engine_model:
            raise ValueError("DemoConfig.engine_url needs engine_model (the served model name)")
        backend = OpenAIBackend(
            cfg.engine_url, cfg.engine_model, concurrency=cfg.engine_concurrency
        )
    n_roles = len(roles) if roles else len(personas.roles)
    prov = generation_provenance(
        personas,
        sampling,
        n_prompts=cfg.n_prompts,
        n_questions=cfg.n_questions,
        roles=roles,
        design=design_record(n_roles, cfg.n_questions, cfg.n_default_questions, cfg.design),
        **({"default_prompts": cfg.n_default_prompts} if cfg.n_default_prompts is not None else {}),
        **(
            {"default_questions": cfg.n_default_questions}
            if cfg.n_default_questions is not None
            else {}
        ),
        **({"engine": backend.name} if backend is not None else {}),
    )
    manifest = collection_manifest(
        bridge, ["resid_post"], list(range(n_layers)), span_policy("response"), prov
    )
    store = ActivationStore.create(out / "store", manifest)

    with timer.stage(
        f"generate ({n_roles} roles x {cfg.n_prompts} prompts x {cfg.n_questions} questions + default {prov['generation']['design']['name']})"
    ):
        records = generate_responses(
            bridge,
            personas,
            store,
            roles=roles,
            n_prompts=cfg.n_prompts,
            n_questions=cfg.n_questions,
            default_prompts=cfg.n_default_prompts,
            default_questions=cfg.n_default_questions,
            design=cfg.design,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            backend=backend,
            progress=progress,
        )
    with timer.stage("collect"):
        summary_collect = collect(
            bridge, records, store, batch_size=cfg.batch_size, provenance=prov, progress=progress
        )
        print(summary_collect)
    with timer.stage(f"judge ({cfg.judge})"):
        judged = judge_store(store, personas, _judge(cfg, bridge), progress=progress)
        print(judged)
    with timer.stage("axis, persona space, thresholds"):
        axis_summary = run_axis(
            out / "store",
            out / "axis",
            layer=mid,
            min_score=cfg.min_score,
            min_count=cfg.min_count,
            percentile=cfg.percentile,
            cap_layers=cap_layers,
            seed=cfg.seed,
        )
        stab = {
            k: v for k, v in axis_summary["stability"].items() if k not in ("layer", "at_layer")
        }
        axis = Direction.load(out / "axis" / "axis.safetensors")
        cap_cfg = CapConfig.load(out / "axis" / "cap.json")
        rv = role_vectors(store, min_score=cfg.min_score, min_count=cfg.min_count)
        pca = persona_pca(rv, mid)
        profile = layer_profile(rv)
        proj = role_projections(rv, mid)

    with timer.stage("steering one prompt away from / toward the Assistant"):
        prompt = [{"role": "user", "content": "Who are you? Introduce yourself in two sentences."}]
        conv = format_conversation(bridge, prompt, add_generation_prompt=True)
        greedy = SamplingConfig(max_new_tokens=cfg.replay_tokens, temperature=0.0)
        norms = residual_norms(
            bridge, [format_conversation(bridge, list(r.messages)) for r in records[:16]]
        )
        steer_layers = [mid]
        replies: dict[str, str] = {"unsteered": generate_text(bridge, [conv], greedy)[0]}
        for label, sign in (("away (-)", -1.0), ("toward (+)", 1.0)):
            with steer(bridge, axis, sign * cfg.steer_coeff, steer_layers, norm_units=norms):
                replies[label] = generate_text(bridge, [conv], greedy)[0]
        # Measured on the unsteered reply, teacher-forced, so every setting sees the same tokens
        # (a fixed reference sentence if the model produced nothing).
        teacher = [
            *prompt,
            {"role": "assistant", "content": replies["unsteered"] or "I am an AI assistant."},
        ]
        steer_proj: dict[str, float] = {}
        base = project_conversation(bridge, axis, teacher, layers=[measure])
        steer_proj["unsteered"] = base.means(measure)[0]
        for label, sign in (("away (-)", -1.0), ("toward (+)", 1.0)):
            with steer(bridge, axis, sign * cfg.steer_coeff, steer_layers, norm_units=norms):
                steer_proj[label] = project_conversation(
                    bridge, axis, teacher, layers=[measure]
                ).means(measure)[0]
        for label, text in replies.items():
            print(
                f"[{label}] projection at layer {measure}: {steer_proj[label]:+.3f}\n    {text[:200]!r}"
            )

    with timer.stage("replay a drifting conversation, unsteered and capped"):
        script = builtin_conversation()
        sessions = {}
        for label, cap_arg in (("unsteered", None), ("capped", cap_cfg)):
            session = chat_session(
                bridge, axis=axis, cap=cap_arg, monitor_layers=[measure], sampling=greedy
            )
            for turn in script["user_turns"]:
                report = session.send(turn)
                print(f"  {label:9s} {report}")
            sessions[label] = session
        trajectories = {k: s.trajectory for k, s in sessions.items()}
        tau = (
            cap_cfg.thresholds[cap_cfg.layers.index(measure)] if measure in cap_cfg.layers else None
        )

    with timer.stage("report"):
        at_mid = _stability_label(stab, mid)
        figures: list[tuple[Any, str]] = [
            (plots.variance_bars(pca), at_mid),
            (plots.persona_space_scatter(pca, dims=2), at_mid),
            *(
                [(plots.persona_space_scatter(pca, dims=3), at_mid)]
                if pca.loadings.shape[1] >= 3
                else []
            ),
            (
                _with_stability_traces(plots.axis_layer_lines(profile), stab),
                _stability_by_layer_label(stab, profile.layers),
            ),
            (plots.role_projection_strip(proj), at_mid),
            (
                plots.drift_trajectory(
                    *trajectories.values(),
                    labels=list(trajectories),
                    layer=measure,
                    threshold=tau,
                    title=f"Drift over a philosophy-of-AI conversation (layer {measure})",
                ),
                _stability_label(stab, measure),
            ),
        ]
        drop = steer_proj["unsteered"] - steer_proj["away (-)"]
        summary: dict[str, Any] = {
            "config": asdict(cfg),
            "model": model_provenance(bridge).to_dict(),
            "personas": {"source": personas.source, "sha256": personas.content_hash()},
            "layers_source": layer_note,
            "store": str(out / "store"),
            "items": {
                "responses": len(records),
                "collected": len(store.collected_ids()),
                "collect": str(summary_collect),
            },
            "judge": {"kind": cfg.judge, "counts": {str(k): v for k, v in judged.counts.items()}},
            "roles_used": len(axis_summary["roles_used"]),
            "roles_excluded": axis_summary["roles_excluded"],
            "pc1_variance": axis_summary["pca"]["pc1_variance"],
            "dims_70": axis_summary["pca"]["dims"].get("70"),
            "middle_layer": mid,
            "cos_axis_pc1_middle": axis_summary["pca"]["cos_axis_pc1"],
            "stability": stab,
            "design": prov["generation"]["design"],
            "estimator": axis_summary["estimator"],
            "question_offset": axis_summary["question_offset"],
            "cap": {
                "layers": list(cap_cfg.layers),
                "thresholds": list(cap_cfg.thresholds),
                "percentile": cap_cfg.percentile,
                "pool": axis_summary["cap"]["pool"],
                "pools": axis_summary["cap"]["pools"],
            },
            "steering": {
                "layers": steer_layers,
                "coeff_norm_units": cfg.steer_coeff,
                "measure_layer": measure,
                "projection": steer_proj,
                "projection_drop_negative": drop,
                "replies": replies,
            },
            "replay": {
                k: {
                    "means": t.means(measure),
                    "replies": [m["content"] for m in s.history if m["role"] == "assistant"],
                }
                for (k, t), s in zip(trajectories.items(), sessions.values(), strict=True)
            },
            "stage_seconds": timer.stages,
            "peak_rss_gib": round(_peak_rss_gib(), 2),
        }
        atomic_write_json(out / "summary.json", summary)
        atomic_write_bytes(out / "report.html", _report_html(summary, figures).encode())
    _print_table(summary)
    print(f"\nwrote {out / 'report.html'} and {out / 'summary.json'}")
    return summary


def _table_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    cap = s["cap"]
    return [
        ("model", s["model"]["model_id"]),
        ("persona catalogue", str(s.get("personas", {}).get("source", "?"))),
        ("responses / roles used", f"{s['items']['responses']} / {s['roles_used']}"),
        (f"PC1 variance (layer {s['middle_layer']})", f"{100 * s['pc1_variance']:.1f}%"),
        ("dims for 70% variance", str(s["dims_70"])),
        (f"cos(axis, PC1) (layer {s['middle_layer']})", f"{s['cos_axis_pc1_middle']:+.3f}"),
        *(
            [
                _design_row(s["question_offset"]),
                _estimator_row(s["estimator"]),
                _offset_row(s["question_offset"], s["middle_layer"]),
            ]
            if "question_offset" in s
            else []
        ),
        *([_stability_row(s["stability"], s["middle_layer"])] if "stability" in s else []),
        (
            f"cap threshold (p{cap['percentile']:g}, layers {cap['layers'][0]}-{cap['layers'][-1]}"
            f", {cap.get('pool', {}).get('name', 'all')} pool)",
            ", ".join(f"{t:.2f}" for t in cap["thresholds"]),
        ),
        (
            f"projection drop, steering {-s['config']['steer_coeff']:+g} (layer {s['steering']['measure_layer']})",
            f"{s['steering']['projection_drop_negative']:+.3f}",
        ),
        (
            f"replay mean projection unsteered / capped (layer {s['steering']['measure_layer']})",
            f"{_mean(s['replay']['unsteered']['means']):+.3f} / {_mean(s['replay']['capped']['means']):+.3f}",
        ),
        (
            "stage seconds",
            ", ".join(f"{k.split(' (')[0]} {v}" for k, v in s["stage_seconds"].items()),
        ),
        ("peak memory (RSS)", f"{s['peak_rss_gib']} GiB"),
    ]


def _stability_row(stab: dict[str, Any], layer: int) -> tuple[str, str]:
    """The summary-table row of the split-half cosines at ``layer`` (a split that could not be
    made shows ``n/a`` and why)."""
    why = "; ".join(
        f"{by}: {stab[f'by_{by}_reason']}" for by in _SPLITS if stab.get(f"by_{by}_reason")
    )
    value = _stability_pair(stab, layer) + (f" ({why})" if why else "")
    return f"split-half cos (item / question), layer {layer}", value


_REPORT_CSS = (
    "td.note{color:#555;font-size:90%;padding-left:1.5em}"
    "p.figure-note{color:#333;margin:1.5em 0 0 1em;font-weight:bold}"
    "figcaption{color:#333;margin:0 0 2em 1em;font-style:italic}"
)

# What each summary-table row means (matched by the start of its label), shown beside it.
_ROW_NOTES = (
    ("model", "the model the responses were generated with and read from"),
    ("store", "the activation store the vectors were read from"),
    ("persona catalogue", "where the roles, system prompts and questions came from"),
    ("roles used", "roles with enough kept responses / roles left out for too few"),
    ("responses / roles used", "generated responses (roles and default) / roles kept for the axis"),
    ("default responses", "responses to the default (no persona) prompts, the Assistant end"),
    ("PC1 variance", "share of the role vectors' variance on the first principal component"),
    ("dims for", "principal components needed to explain that share of the variance"),
    ("cos(axis, PC1)", "cosine between the Assistant Axis (default - mean of roles) and PC1"),
    ("split-half cos", "the cosine between the axes computed from two disjoint halves of the "
     "responses (halved by item / by question): near 1 = stable, near 0 = noise"),
    ("cap layers", "layers whose projection on the axis is held at or above the threshold"),
    ("question design", "which questions the roles and the default set answered: shared and "
     "rotated designs weigh them alike, nested does not"),
    ("estimator", "plain means, or question-adjusted (role effects with the default set's "
     "question mix) when the two sides weigh the questions differently"),
    ("question offset", "|b|/|axis|: how long an axis the question mix alone could make "
     "(0 on a balanced design), and its cosine with the axis"),
    ("cap thresholds,", "per-layer floor tau under each pool: default = the Assistant's own "
     "responses (used), balanced = roles and default weighted equally, all = every item"),
    ("cap threshold", "per-layer floor tau: that percentile of the stored responses' projections"),
    ("projection drop", "unsteered minus steered-away projection of one reply: > 0 means steering "
     "moved it away from the Assistant end as intended"),
    ("replay mean projection", "the replayed drift conversation's assistant turns, mean projection "
     "on the axis at this layer, without and with the cap: capped should be the higher"),
    ("stage seconds", "wall time of each stage"),
    ("peak memory", "largest resident memory of this process"),
    ("roles excluded", "roles left out, with their kept-response counts"),
)  # fmt: skip


def _row_note(label: str) -> str:
    """The explanation of a summary-table row (empty when there is none)."""
    return next((note for start, note in _ROW_NOTES if label.startswith(start)), "")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _print_table(s: dict[str, Any]) -> None:
    rows = _table_rows(s)
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("=" * (width + 40))


def _report_html(summary: dict[str, Any], figures: Sequence[tuple[Any, str]]) -> str:
    """The demo's page: the summary table, the steering replies, then every ``(figure, note)``
    (the note, above the plot, gives the axis's split-half cosine at its layer)."""
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td>"
        f"<td class='note'>{html.escape(_row_note(k))}</td></tr>"
        for k, v in _table_rows(summary)
    )
    replies = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{summary['steering']['projection'][k]:+.3f}</td><td>{html.escape(v)}</td></tr>"
        for k, v in summary["steering"]["replies"].items()
    )
    figs = _figures_html(figures)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>axislens demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}th{text-align:left;padding-right:1em}"
        f"td{{vertical-align:top}}{_REPORT_CSS}</style></head><body><h1>axislens demo: the Assistant Axis</h1>"
        f"<table>{rows}</table><h2>Steering one prompt</h2><table>{replies}</table>"
        f"<h2>Figures</h2>{figs}</body></html>"
    )
