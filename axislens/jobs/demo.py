"""The main job (``axislens demo`` / ``make demo``): the Assistant Axis method end to end.

It composes the other jobs and adds what only the demo does. Stages, each timed and reported:

1. the collect job (:mod:`axislens.jobs.collect`): role and default responses for a scaled-down
   persona set (seeded, resumable), their per-layer span means, and a judge (``keep_all`` by
   default: a 135M model is no judge of role-play; ``model`` and ``openai`` as in the paper);
2. the axis job (:mod:`axislens.jobs.axis`): the axis, persona-space PCA, cap thresholds and the
   axis's split-half cosines;
3. steer one prompt away from and toward the Assistant and measure the projection;
4. replay a built-in multi-turn conversation unsteered and capped, tracking the drift;
5. write ``report.html`` (all figures) and ``summary.json``, and print a summary table.

Every number is computed from the store in this run; nothing is hard-coded. A second run reuses
the store (resumable). ``DemoConfig.full()`` is the paper-scale configuration (all roles,
5 prompts, 240 questions, 512 tokens): for a GPU.

Example:
    >>> DemoConfig(n_roles=12).collect_config().data.roles
    12

    Needs a real model (not run by the doctest suite).

    >>> result = run(DemoConfig(n_roles=12, n_questions=2))  # doctest: +SKIP
    >>> result.to_pandas()  # the summary table  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from axislens.collection.engines import OpenAIBackend
from axislens.collection.judges import JudgeChoice
from axislens.display import compact_repr, html_summary
from axislens.interventions.attach import residual_norms
from axislens.jobs import axis as axis_job
from axislens.jobs import collect as collect_job
from axislens.jobs.collect_steps import items_for
from axislens.jobs.demo_steps import (
    axis_summary,
    collect_stages,
    peak_rss_gib,
    replay_drift,
    steer_one_prompt,
)
from axislens.jobs.specs import PersonaData, SummaryMapping
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig
from axislens.model.loading import load_model, model_provenance
from axislens.personas import load_personas
from axislens.plots.reports import (
    demo_report_html,
    demo_table_rows,
    stability_label,
    table_text,
    weak_axis_warning,
)
from axislens.presets import job_layers
from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

    from axislens.model.protocol import Model
    from axislens.personas.catalogue import Personas
    from axislens.personas.designs import DesignName

__all__ = ["DemoConfig", "DemoResult", "run", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Scale and settings of the main job. Defaults fit 2 CPU cores in under 10 minutes.

    ``n_roles`` roles are taken from the catalogue's spread order (categories interleaved, so
    even a small subset spans assistant-like professions to fantastical creatures); ``None``
    takes all of them. :meth:`collect_config` and :meth:`axis_config` are the job configs the
    demo runs.
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
    judge: JudgeChoice = "keep_all"
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

    def collect_config(self, personas: Personas | None = None) -> collect_job.CollectConfig:
        """The collect job the demo runs (into ``<out>/store``)."""
        data = PersonaData(
            self.personas if personas is None else personas,
            self.n_roles,
            self.n_prompts,
            self.n_questions,
            self.n_default_prompts,
            self.n_default_questions,
            self.design,
        )
        return collect_job.CollectConfig(
            Path(self.out) / "store",
            data,
            SamplingConfig(max_new_tokens=self.max_new_tokens, seed=self.seed),
            judge=self.judge,
            batch_size=self.batch_size,
        )

    def axis_config(
        self, layer: int | None = None, cap_layers: list[int] | None = None
    ) -> axis_job.AxisConfig:
        """The axis job the demo runs (``<out>/store`` into ``<out>/axis``)."""
        return axis_job.AxisConfig(
            Path(self.out) / "store",
            Path(self.out) / "axis",
            layer=layer,
            min_score=self.min_score,
            min_count=self.min_count,
            percentile=self.percentile,
            cap_layers=cap_layers,
            seed=self.seed,
        )


@dataclass(frozen=True, slots=True, eq=False)
class DemoResult(SummaryMapping):
    """The demo's outputs. It reads as the ``summary.json`` mapping (``result["cap"]``).

    Attributes:
        out: the demo's folder.
        summary: the ``summary.json`` content.
        collect: the collect job's result (``None`` after :meth:`load`).
        axis: the axis job's result.
    """

    out: Path
    summary: dict[str, Any]
    collect: collect_job.CollectResult | None = None
    axis: axis_job.AxisResult | None = None

    def to_pandas(self) -> pd.DataFrame:
        """The summary table the demo prints, one row per figure."""
        import pandas as pd

        rows = demo_table_rows(self.summary)
        return pd.DataFrame({"value": [v for _, v in rows]}, index=[k for k, _ in rows])

    def _facts(self) -> list[tuple[str, Any]]:
        s = self.summary
        return [
            ("model", s["model"]["model_id"]),
            ("responses", s["items"]["responses"]),
            ("roles", s["roles_used"]),
            ("layer", s["middle_layer"]),
            ("cos(axis, PC1)", s["cos_axis_pc1_middle"]),
        ]

    def __repr__(self) -> str:
        return compact_repr("DemoResult", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("DemoResult", self._facts(), self.to_pandas())

    def save(self, out: str | os.PathLike[str] | None = None) -> Path:
        """Write ``summary.json`` into ``out`` (default: :attr:`out`)."""
        folder = Path(self.out if out is None else out)
        atomic_write_json(folder / "summary.json", self.summary)
        return folder

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> DemoResult:
        """The result a demo wrote into ``out`` (its summary and the axis job's files)."""
        folder = Path(out)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        axis = axis_job.AxisResult.load(folder / "axis") if (folder / "axis").is_dir() else None
        return cls(folder, summary, None, axis)


@dataclass
class _Timer:
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - t0, 1)


def _backend(cfg: DemoConfig) -> OpenAIBackend | None:
    if not cfg.engine_url:
        return None
    if not cfg.engine_model:
        raise ValueError("DemoConfig.engine_url needs engine_model (the served model name)")
    return OpenAIBackend(cfg.engine_url, cfg.engine_model, concurrency=cfg.engine_concurrency)


def run(
    cfg: DemoConfig | None = None, *, model: Model | None = None, progress: bool = True
) -> DemoResult:
    """Run the main job; writes ``<out>/summary.json`` and ``<out>/report.html``.

    ``model`` overrides ``cfg.model`` with an already-loaded bridge (tests use a tiny model).
    """
    cfg = DemoConfig() if cfg is None else cfg
    timer = _Timer()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with timer.stage("load model"):
        dtype = getattr(torch, cfg.dtype)
        bridge = load_model(cfg.model, device=cfg.device, dtype=dtype) if model is None else model
        n_layers = int(bridge.cfg.n_layers)
        model_id = model_provenance(bridge).model_id
        mid, cap_layers, measure, layer_note = job_layers(n_layers, model_id)
        print(
            f"{model_id}: {n_layers} layers, d_model {bridge.cfg.d_model}; middle layer {mid}, "
            f"cap layers {cap_layers}\n  ({layer_note})"
        )
    personas = load_personas(cfg.personas)
    print(f"persona catalogue: {personas.source} (sha256 {personas.content_hash()[:12]})")
    collect_cfg = cfg.collect_config(personas)
    print("\n== collect job: generate, collect, judge", flush=True)
    collected = collect_job.run(collect_cfg, bridge, backend=_backend(cfg), progress=progress)
    print(collected)
    store = ActivationStore.open(collect_cfg.out)
    n_roles = cfg.n_roles or len(personas.roles)
    collect_stages(
        timer.stages, cfg, collected, n_roles, store.manifest["generation"]["design"]["name"]
    )
    with timer.stage("axis, persona space, thresholds"):
        axis = axis_job.run(cfg.axis_config(mid, cap_layers))
    with timer.stage("steering one prompt away from / toward the Assistant"):
        items = items_for(collect_cfg, bridge, personas, personas.pick_roles(cfg.n_roles))
        records = store.records()
        first = [records[i.id] for i in items[:16]]  # the run's first items, as generated
        norms = residual_norms(
            bridge, [format_conversation(bridge, list(r.messages)) for r in first]
        )
        steering = steer_one_prompt(cfg, bridge, axis.axis, norms, mid, measure)
    with timer.stage("replay a drifting conversation, unsteered and capped"):
        replay, drift_fig = replay_drift(cfg, bridge, axis.axis, axis.cap, measure)
    with timer.stage("report"):
        stab = {k: v for k, v in axis["stability"].items() if k not in ("layer", "at_layer")}
        summary = axis_summary(cfg, bridge, personas, layer_note, store, collected, axis, stab)
        summary |= {"steering": steering, "replay": replay}
        summary |= {"stage_seconds": timer.stages, "peak_rss_gib": round(peak_rss_gib(), 2)}
        figures = [*axis.figures(), (drift_fig, stability_label(stab, measure))]
        result = DemoResult(out, summary, collected, axis)
        atomic_write_bytes(out / "report.html", demo_report_html(summary, figures).encode())
    result.save()  # after the report stage, so summary.json has its time too
    print("\n" + table_text(demo_table_rows(summary)))
    warning = weak_axis_warning(summary["stability"], summary["middle_layer"])
    if warning is not None:
        print(f"warning: {warning}")
    print(f"\nwrote {out / 'report.html'} and {out / 'summary.json'}")
    return result


def run_demo(
    cfg: DemoConfig | None = None, *, model: Model | None = None, progress: bool = True
) -> DemoResult:
    """The main job (:func:`run`; the 0.2 name)."""
    return run(cfg, model=model, progress=progress)
