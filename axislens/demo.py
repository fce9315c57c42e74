"""The main job (``axislens demo`` / ``make demo``): the Assistant Axis method end to end.

Stages, each timed and reported:

1. generate role and default responses for a scaled-down persona set (seeded, resumable);
2. collect per-layer span means of the responses into an activation store;
3. judge adherence (``keep_all`` by default: a 135M model is no judge of role-play — with
   ``--judge model`` the local model scores its own answers, with ``--judge openai`` an
   OpenAI-compatible endpoint does, as in the paper);
4. compute the axis, persona-space PCA and cap thresholds (``axislens axis`` on the store);
5. steer one prompt away from and toward the Assistant and measure the projection;
6. replay a built-in multi-turn conversation unsteered and capped, tracking the drift;
7. write ``report.html`` (all figures) and ``summary.json``, and print a summary table.

Every number is computed from the store in this run; nothing is hard-coded. A second run reuses
the store (resumable). ``DemoConfig.full()`` is the paper-scale configuration (all roles,
5 prompts, 240 questions, 512 tokens): for a GPU.

Example:
    >>> from axislens.demo import DemoConfig, run_demo
    >>> summary = run_demo(DemoConfig(n_roles=12, n_questions=2))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["DemoConfig", "run_demo"]

JudgeChoice = Literal["keep_all", "model", "openai"]


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

    @classmethod
    def full(cls, **overrides: Any) -> DemoConfig:
        """The paper's scale: every role, 5 prompts, 240 questions, 512 new tokens, >= 50 score-3
        responses per role, an LLM judge (OpenAI-compatible endpoint from the environment)."""
        base = cls(
            n_roles=None,
            n_prompts=5,
            n_questions=240,
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


def _layers(n_layers: int) -> tuple[int, list[int], int]:
    """(middle layer, cap window at ~73-83% depth as in the paper's configs, measure layer)."""
    mid = n_layers // 2
    lo, hi = round(0.72 * n_layers), round(0.84 * n_layers)
    cap_layers = list(range(lo, max(hi, lo + 1)))
    return mid, cap_layers, cap_layers[-1]


def _judge(cfg: DemoConfig, model: Any) -> Any:
    from axislens.judge import KeepAll, ModelJudge, OpenAIJudge

    if cfg.judge == "keep_all":
        return KeepAll()
    if cfg.judge == "model":
        return ModelJudge(model)
    return OpenAIJudge()


def run_demo(
    cfg: DemoConfig | None = None, *, model: Any = None, progress: bool = True
) -> dict[str, Any]:
    """Run the main job; returns (and writes to ``<out>/summary.json``) the summary.

    ``model`` overrides ``cfg.model`` with an already-loaded bridge (tests use a tiny model)."""
    cfg = DemoConfig() if cfg is None else cfg
    from axislens import plots, plots_monitor
    from axislens.analysis import role_projections, role_vectors
    from axislens.chat import format_conversation
    from axislens.cli_axis import run_axis
    from axislens.collect import collect, collection_manifest, span_policy
    from axislens.directions import CapConfig, Direction
    from axislens.generate import (
        SamplingConfig,
        generate_responses,
        generate_text,
        generation_provenance,
    )
    from axislens.judge import judge_store
    from axislens.models import load_model, model_provenance
    from axislens.monitor import project_conversation
    from axislens.persona_space import layer_profile, persona_pca
    from axislens.personas import load_personas
    from axislens.session import chat_session
    from axislens.steer import residual_norms, steer
    from axislens.store import ActivationStore, atomic_write_bytes, atomic_write_json

    timer = _Timer({})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with timer.stage("load model"):
        if model is None:
            model = load_model(cfg.model, device=cfg.device, dtype=getattr(torch, cfg.dtype))
        n_layers = int(model.cfg.n_layers)
        mid, cap_layers, measure = _layers(n_layers)
        print(
            f"{model_provenance(model).model_id}: {n_layers} layers, d_model {model.cfg.d_model}; middle layer {mid}, cap layers {cap_layers}"
        )
    personas = load_personas()
    roles = [r.name for r in personas.spread_roles()[: cfg.n_roles]] if cfg.n_roles else None
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    prov = generation_provenance(
        personas, sampling, n_prompts=cfg.n_prompts, n_questions=cfg.n_questions, roles=roles
    )
    manifest = collection_manifest(
        model, ["resid_post"], list(range(n_layers)), span_policy("response"), prov
    )
    store = ActivationStore.create(out / "store", manifest)

    with timer.stage(
        f"generate ({len(roles) if roles else len(personas.roles)} roles x {cfg.n_prompts} prompts x {cfg.n_questions} questions + default)"
    ):
        records = generate_responses(
            model,
            personas,
            store,
            roles=roles,
            n_prompts=cfg.n_prompts,
            n_questions=cfg.n_questions,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            progress=progress,
        )
    with timer.stage("collect"):
        summary_collect = collect(
            model, records, store, batch_size=cfg.batch_size, provenance=prov, progress=progress
        )
        print(summary_collect)
    with timer.stage(f"judge ({cfg.judge})"):
        judged = judge_store(store, personas, _judge(cfg, model), progress=progress)
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
        )
        axis = Direction.load(out / "axis" / "axis.safetensors")
        cap_cfg = CapConfig.load(out / "axis" / "cap.json")
        rv = role_vectors(store, min_score=cfg.min_score, min_count=cfg.min_count)
        pca = persona_pca(rv, mid)
        profile = layer_profile(rv)
        proj = role_projections(rv, mid)

    with timer.stage("steering one prompt away from / toward the Assistant"):
        prompt = [{"role": "user", "content": "Who are you? Introduce yourself in two sentences."}]
        conv = format_conversation(model, prompt, add_generation_prompt=True)
        greedy = SamplingConfig(max_new_tokens=cfg.replay_tokens, temperature=0.0)
        norms = residual_norms(
            model, [format_conversation(model, list(r.messages)) for r in records[:16]]
        )
        steer_layers = [mid]
        replies: dict[str, str] = {"unsteered": generate_text(model, [conv], greedy)[0]}
        for label, sign in (("away (-)", -1.0), ("toward (+)", 1.0)):
            with steer(model, axis, sign * cfg.steer_coeff, steer_layers, norm_units=norms):
                replies[label] = generate_text(model, [conv], greedy)[0]
        # Measured on the unsteered reply, teacher-forced, so every setting sees the same tokens
        # (a fixed reference sentence if the model produced nothing).
        teacher = [
            *prompt,
            {"role": "assistant", "content": replies["unsteered"] or "I am an AI assistant."},
        ]
        steer_proj: dict[str, float] = {}
        base = project_conversation(model, axis, teacher, layers=[measure])
        steer_proj["unsteered"] = base.means(measure)[0]
        for label, sign in (("away (-)", -1.0), ("toward (+)", 1.0)):
            with steer(model, axis, sign * cfg.steer_coeff, steer_layers, norm_units=norms):
                steer_proj[label] = project_conversation(
                    model, axis, teacher, layers=[measure]
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
                model, axis=axis, cap=cap_arg, monitor_layers=[measure], sampling=greedy
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
        figures = [
            plots.variance_bars(pca),
            plots.persona_space_scatter(pca, dims=2),
            *([plots.persona_space_scatter(pca, dims=3)] if pca.loadings.shape[1] >= 3 else []),
            plots.axis_layer_lines(profile),
            plots.role_projection_strip(proj),
            plots_monitor.drift_trajectory(
                *trajectories.values(),
                labels=list(trajectories),
                layer=measure,
                threshold=tau,
                title=f"Drift over a philosophy-of-AI conversation (layer {measure})",
            ),
        ]
        drop = steer_proj["unsteered"] - steer_proj["away (-)"]
        summary: dict[str, Any] = {
            "config": asdict(cfg),
            "model": model_provenance(model).to_dict(),
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
            "cap": {
                "layers": list(cap_cfg.layers),
                "thresholds": list(cap_cfg.thresholds),
                "percentile": cap_cfg.percentile,
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
        ("responses / roles used", f"{s['items']['responses']} / {s['roles_used']}"),
        (f"PC1 variance (layer {s['middle_layer']})", f"{100 * s['pc1_variance']:.1f}%"),
        ("dims for 70% variance", str(s["dims_70"])),
        (f"cos(axis, PC1) (layer {s['middle_layer']})", f"{s['cos_axis_pc1_middle']:+.3f}"),
        (
            f"cap threshold (p{cap['percentile']:g}, layers {cap['layers'][0]}-{cap['layers'][-1]})",
            ", ".join(f"{t:.2f}" for t in cap["thresholds"]),
        ),
        (
            f"projection drop, steering {-s['config']['steer_coeff']:+g} (layer {s['steering']['measure_layer']})",
            f"{s['steering']['projection_drop_negative']:+.3f}",
        ),
        (
            "replay mean projection unsteered / capped",
            f"{_mean(s['replay']['unsteered']['means']):+.3f} / {_mean(s['replay']['capped']['means']):+.3f}",
        ),
        (
            "stage seconds",
            ", ".join(f"{k.split(' (')[0]} {v}" for k, v in s["stage_seconds"].items()),
        ),
        ("peak memory (RSS)", f"{s['peak_rss_gib']} GiB"),
    ]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _print_table(s: dict[str, Any]) -> None:
    rows = _table_rows(s)
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("=" * (width + 40))


def _report_html(summary: dict[str, Any], figures: list[Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _table_rows(summary)
    )
    replies = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{summary['steering']['projection'][k]:+.3f}</td><td>{html.escape(v)}</td></tr>"
        for k, v in summary["steering"]["replies"].items()
    )
    figs = "".join(
        f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>axislens demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}th{text-align:left;padding-right:1em}"
        "td{vertical-align:top}</style></head><body><h1>axislens demo: the Assistant Axis</h1>"
        f"<table>{rows}</table><h2>Steering one prompt</h2><table>{replies}</table>"
        f"<h2>Figures</h2>{figs}</body></html>"
    )
