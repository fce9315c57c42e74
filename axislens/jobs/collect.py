"""The collect job (``axislens collect``): generate role responses, collect their span means
into an activation store, and judge them, in one resumable run.

Example:
    >>> from axislens.jobs import CollectConfig, PersonaData
    >>> cfg = CollectConfig("runs/x", PersonaData(roles=6, n_prompts=2, n_questions=4))
    >>> cfg.data.n_questions
    4

    Needs a real model (not run by the doctest suite).

    >>> result = run(cfg, model)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from axislens.collection.activations import (
    CollectSummary,
    collect,
    span_policy,
)
from axislens.collection.judges import JudgeChoice, JudgeSummary, judge_for, judge_store
from axislens.collection.launch import current_launch
from axislens.display import compact_repr, html_summary
from axislens.jobs.collect_steps import create_store, generate_stage, items_for, provenance
from axislens.jobs.specs import PersonaData, StoreLayout
from axislens.model.decoding import SamplingConfig
from axislens.model.layers import resolve_layers
from axislens.personas import Personas, load_personas
from axislens.store import SharedWriter, atomic_write_json

if TYPE_CHECKING:
    from axislens.collection.judges import Judge
    from axislens.model.protocol import Model

__all__ = ["CollectConfig", "CollectMode", "CollectResult", "RunSummary", "run", "run_collect"]

CollectMode = Literal["response", "prefill"]
"""``"response"``: generate responses and average over them; ``"prefill"``: generate nothing
and record the activation at the generation-prompt position."""


@dataclass(frozen=True, slots=True)
class CollectConfig:
    """Everything a collect run is asked for.

    Attributes:
        out: the store folder (created, or resumed).
        data: which persona items (:class:`~axislens.jobs.specs.PersonaData`).
        sampling: how responses are sampled.
        layout: what the store records (:class:`~axislens.jobs.specs.StoreLayout`).
        mode: what the spans cover (:data:`CollectMode`).
        judge: a :data:`~axislens.collection.judges.JudgeChoice` or a judge object. Only role
            responses are judged; ``"prefill"`` has nothing to judge.
        batch_size: sequences per batch for generation and collection.
        collect_activations: ``False`` stops after generation (and judging): a store with
            responses but no activations, which a later run completes.
    """

    out: str | os.PathLike[str]
    data: PersonaData = field(default_factory=PersonaData)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    layout: StoreLayout = field(default_factory=StoreLayout)
    mode: CollectMode = "response"
    judge: JudgeChoice | Judge = "none"
    batch_size: int = 8
    collect_activations: bool = True

    @classmethod
    def from_flat(cls, out: str | os.PathLike[str], **settings: Any) -> CollectConfig:
        """A config from flat keywords: each names a field of this class or of one of its
        parts; an unknown keyword is refused, naming it.

        Example:
            >>> cfg = CollectConfig.from_flat("runs/x", roles=6, n_questions=4, temperature=0.0)
            >>> cfg.data.roles, cfg.sampling.temperature, cfg.mode
            (6, 0.0, 'response')
        """
        parts = {"data": PersonaData, "sampling": SamplingConfig, "layout": StoreLayout}
        given: dict[str, dict[str, Any]] = {name: {} for name in parts}
        own = {f.name for f in fields(cls)} - set(parts) - {"out"}
        top: dict[str, Any] = {}
        for key, value in settings.items():
            part = next((n for n, t in parts.items() if key in {f.name for f in fields(t)}), None)
            if part is not None:
                given[part][key] = value
            elif key in own:
                top[key] = value
            else:
                raise TypeError(f"run_collect: unknown setting {key!r}")
        made = {name: parts[name](**kw) for name, kw in given.items()}
        return cls(out, **made, **top)

    def __post_init__(self) -> None:
        if self.mode not in get_args(CollectMode):
            raise ValueError(
                f"unknown mode {self.mode!r}; expected one of {', '.join(get_args(CollectMode))}"
            )
        if isinstance(self.judge, str) and self.judge not in get_args(JudgeChoice):
            raise ValueError(
                f"unknown judge {self.judge!r}; expected one of {', '.join(get_args(JudgeChoice))}"
            )
        if self.mode == "prefill" and not self.collect_activations:
            raise ValueError("--mode prefill generates nothing: --no-collect does not apply")
        if self.mode == "prefill" and self.judge != "none":
            raise ValueError(
                "--judge needs responses; --mode prefill generates none (use --judge none)"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")


@dataclass(frozen=True, slots=True)
class CollectResult:
    """What a collect run did: items, tokens, seconds per stage.

    ``collect`` is ``None`` when collection was skipped (generation only: a later run completes
    it); ``judge`` is ``None`` when no judge ran.
    """

    out: str
    mode: CollectMode
    items: int
    generated: int
    generated_tokens: int
    generate_seconds: float
    collect: CollectSummary | None
    judge: JudgeSummary | None
    seconds: float

    @property
    def tokens(self) -> int:
        """Tokens processed this run: generated tokens plus teacher-forced tokens."""
        return self.generated_tokens + (self.collect.tokens if self.collect else 0)

    @property
    def tokens_per_second(self) -> float:
        """Tokens processed per second of the whole run."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("out", self.out),
            ("mode", self.mode),
            ("items", self.items),
            ("generated", self.generated),
            ("tokens", self.tokens),
            ("seconds", round(self.seconds, 1)),
        ]

    def __repr__(self) -> str:
        return compact_repr("CollectResult", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("CollectResult", self._facts())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the stage summaries as their text)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("collect", "judge")}
        return {
            **d,
            "collect": None if self.collect is None else str(self.collect),
            "judge": None if self.judge is None else str(self.judge),
            "tokens": self.tokens,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_json(Path(path), self.to_dict())

    @staticmethod
    def load(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The dict :meth:`save` wrote (the stage summaries stay text)."""
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))

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


RunSummary = CollectResult
"""The 0.2 name of :class:`CollectResult` (``axislens.pipelines.RunSummary``)."""


def run(
    cfg: CollectConfig,
    model: Model,
    *,
    backend: Any = None,
    writer: Any = None,
    launch: Any = None,
    progress: bool = True,
) -> CollectResult:
    """Run the collect job on a loaded ``model``.

    Under ``accelerate launch`` / ``torchrun`` (``launch``: default
    :func:`~axislens.collection.launch.current_launch`), each rank generates the responses of
    its share of the roles (rank 0 also the default items), waits for the others, collects its
    share of the chunks as a :class:`~axislens.store.SharedWriter`, and rank 0 judges.

    Args:
        cfg: the run's configuration.
        model: the loaded bridge; collection always runs through it.
        backend: generate through this engine (e.g. an
            :class:`~axislens.collection.engines.OpenAIBackend` on a vLLM server) instead of the
            bridge.
        writer: :class:`~axislens.store.ExclusiveWriter` (default) or
            :class:`~axislens.store.SharedWriter` for the ranks of one multi-process job.
        launch: the multi-process launch this rank belongs to.
        progress: show progress bars.

    Returns:
        What the run did; resumable: items already generated, collected or scored are skipped.
    """
    t0 = time.perf_counter()
    if cfg.mode == "prefill" and backend is not None:
        raise ValueError("--mode prefill generates nothing: --engine does not apply")
    cat = cfg.data.personas
    cat = cat if isinstance(cat, Personas) else load_personas(cat)
    roles = cat.pick_roles(cfg.data.roles)
    judge = judge_for(cfg.judge, model, batch_size=cfg.batch_size)
    prov = provenance(cfg, cat, roles, backend)
    policy = span_policy(cfg.mode)
    layers = resolve_layers(cfg.layout.layers, int(model.cfg.n_layers))
    launch = current_launch() if launch is None else launch
    if writer is None and launch.distributed:
        writer = SharedWriter(job=launch.job)
    store = create_store(cfg, model, prov, policy, layers, writer)
    every = items_for(cfg, model, cat, roles)
    records, generated, tokens, gen_seconds = every, 0, 0, 0.0
    if cfg.mode == "response":
        records, generated, tokens, gen_seconds = generate_stage(
            cfg, model, cat, store, every, roles, backend, launch, progress
        )
    summary = None
    if cfg.collect_activations:
        summary = collect(
            model,
            records,
            store,
            hooks=cfg.layout.hooks,
            layers=list(layers),
            span=policy,
            batch_size=cfg.batch_size,
            provenance=prov,
            progress=progress,
            writer=writer,
            launch=launch,
            force=cfg.layout.force,
        )
    judged = None
    if judge is not None and launch.rank == 0:
        judged = judge_store(store, cat, judge, progress=progress)
    return CollectResult(
        out=str(Path(cfg.out)),
        mode=cfg.mode,
        items=len(records),
        generated=generated,
        generated_tokens=tokens,
        generate_seconds=gen_seconds,
        collect=summary,
        judge=judged,
        seconds=time.perf_counter() - t0,
    )


def run_collect(
    model: Model,
    out: str | os.PathLike[str],
    *,
    backend: Any = None,
    writer: Any = None,
    launch: Any = None,
    progress: bool = True,
    **settings: Any,
) -> CollectResult:
    """:func:`run` with the configuration as keywords: the fields of :class:`CollectConfig`
    and of its parts (:class:`~axislens.jobs.specs.PersonaData`,
    :class:`~axislens.model.decoding.SamplingConfig`, :class:`~axislens.jobs.specs.StoreLayout`),
    flattened (:meth:`CollectConfig.from_flat`).

    Example:
        Needs a real model (not run by the doctest suite).

        >>> result = run_collect(model, "runs/x", roles=6, n_prompts=2, n_questions=4,
        ...                      max_new_tokens=32)  # doctest: +SKIP
    """
    cfg = CollectConfig.from_flat(out, **settings)
    return run(cfg, model, backend=backend, writer=writer, launch=launch, progress=progress)
