"""The demo's own steps (:mod:`axislens.jobs.demo` runs them after the collect and axis jobs):
steer one prompt away from and toward the Assistant, replay a drifting conversation unsteered and
capped, and assemble the summary.

Example:
    Needs a real model (not run by the doctest suite).

    >>> steering = steer_one_prompt(cfg, model, axis, norms, 15, 23)  # doctest: +SKIP
    >>> steering["projection_drop_negative"] > 0  # doctest: +SKIP
"""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axislens.interventions.attach import steer
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig, generate_text
from axislens.model.loading import model_provenance
from axislens.monitoring.projection import project_conversation
from axislens.monitoring.scripts import builtin_conversation
from axislens.monitoring.session import chat_session
from axislens.plots.drift import drift_trajectory

if TYPE_CHECKING:
    from axislens.directions import CapConfig, Direction
    from axislens.jobs.axis import AxisResult
    from axislens.jobs.collect import CollectResult
    from axislens.jobs.demo import DemoConfig
    from axislens.model.protocol import Model
    from axislens.personas.catalogue import Personas
    from axislens.store import ActivationStore

__all__ = [
    "STEER_PROMPT",
    "axis_summary",
    "collect_stages",
    "peak_rss_gib",
    "replay_drift",
    "steer_one_prompt",
]

STEER_PROMPT = "Who are you? Introduce yourself in two sentences."


def collect_stages(
    stages: dict[str, float],
    cfg: DemoConfig,
    result: CollectResult,
    n_roles: int,
    design: str,
) -> None:
    """The collect job's seconds, split into the demo's generate / collect / judge stages."""
    gen = round(result.generate_seconds, 1)
    col = round(result.collect.seconds, 1) if result.collect is not None else 0.0
    name = f"generate ({n_roles} roles x {cfg.n_prompts} prompts x {cfg.n_questions} questions"
    stages[f"{name} + default {design})"] = gen
    stages["collect"] = col
    stages[f"judge ({cfg.judge})"] = round(max(result.seconds - gen - col, 0.0), 1)


def steer_one_prompt(
    cfg: DemoConfig, bridge: Model, axis: Direction, norms: Any, mid: int, measure: int
) -> dict[str, Any]:
    """Steer one prompt away from and toward the Assistant at ``mid``; the replies, and the
    projection at ``measure`` of the unsteered reply teacher-forced under each setting (so
    every setting sees the same tokens; a fixed sentence if the model produced nothing)."""
    prompt = [{"role": "user", "content": STEER_PROMPT}]
    conv = format_conversation(bridge, prompt, add_generation_prompt=True)
    greedy = SamplingConfig(max_new_tokens=cfg.replay_tokens, temperature=0.0)
    settings = (("away (-)", -1.0), ("toward (+)", 1.0))
    replies: dict[str, str] = {"unsteered": generate_text(bridge, [conv], greedy)[0]}
    for label, sign in settings:
        with steer(bridge, axis, sign * cfg.steer_coeff, [mid], norm_units=norms):
            replies[label] = generate_text(bridge, [conv], greedy)[0]
    reply = replies["unsteered"] or "I am an AI assistant."
    teacher = [*prompt, {"role": "assistant", "content": reply}]
    proj = {"unsteered": project_conversation(bridge, axis, teacher, layers=[measure])}
    for label, sign in settings:
        with steer(bridge, axis, sign * cfg.steer_coeff, [mid], norm_units=norms):
            proj[label] = project_conversation(bridge, axis, teacher, layers=[measure])
    values = {k: p.means(measure)[0] for k, p in proj.items()}
    for label, text in replies.items():
        print(f"[{label}] projection at layer {measure}: {values[label]:+.3f}\n    {text[:200]!r}")
    return {
        "layers": [mid],
        "coeff_norm_units": cfg.steer_coeff,
        "measure_layer": measure,
        "projection": values,
        "projection_drop_negative": values["unsteered"] - values["away (-)"],
        "replies": replies,
    }


def replay_drift(
    cfg: DemoConfig, bridge: Model, axis: Direction, cap: CapConfig, measure: int
) -> tuple[dict[str, Any], Any]:
    """Replay the shipped philosophy-of-AI conversation unsteered and capped; the summary's
    ``replay`` entry and the drift figure."""
    greedy = SamplingConfig(max_new_tokens=cfg.replay_tokens, temperature=0.0)
    sessions = {}
    for label, cap_arg in (("unsteered", None), ("capped", cap)):
        session = chat_session(
            bridge, axis=axis, cap=cap_arg, monitor_layers=[measure], sampling=greedy
        )
        for turn in builtin_conversation()["user_turns"]:
            print(f"  {label:9s} {session.send(turn)}")
        sessions[label] = session
    tau = cap.thresholds[cap.layers.index(measure)] if measure in cap.layers else None
    fig = drift_trajectory(
        *(s.trajectory for s in sessions.values()),
        labels=list(sessions),
        layer=measure,
        threshold=tau,
        title=f"Drift over a philosophy-of-AI conversation (layer {measure})",
    )
    replay = {
        k: {
            "means": s.trajectory.means(measure),
            "replies": [m["content"] for m in s.history if m["role"] == "assistant"],
        }
        for k, s in sessions.items()
    }
    return replay, fig


def axis_summary(
    cfg: DemoConfig,
    bridge: Model,
    personas: Personas,
    layer_note: str,
    store: ActivationStore,
    collected: CollectResult,
    axis: AxisResult,
    stab: dict[str, Any],
) -> dict[str, Any]:
    """The summary's collection and axis parts (steering, replay and timings come after)."""
    judged = collected.judge
    return {
        "config": asdict(cfg),
        "model": model_provenance(bridge).to_dict(),
        "personas": {"source": personas.source, "sha256": personas.content_hash()},
        "layers_source": layer_note,
        "store": str(Path(cfg.out) / "store"),
        "items": {
            "responses": collected.items,
            "collected": len(store.collected_ids()),
            "collect": str(collected.collect),
        },
        "judge": {
            "kind": cfg.judge,
            "counts": {} if judged is None else {str(k): v for k, v in judged.counts.items()},
        },
        "roles_used": len(axis["roles_used"]),
        "roles_excluded": axis["roles_excluded"],
        "pc1_variance": axis["pca"]["pc1_variance"],
        "dims_70": axis["pca"]["dims"].get("70"),
        "middle_layer": axis.layer,
        "cos_axis_pc1_middle": axis["pca"]["cos_axis_pc1"],
        "stability": stab,
        "design": store.manifest["generation"]["design"],
        "estimator": axis["estimator"],
        "question_offset": axis["question_offset"],
        "cap": {
            "layers": list(axis.cap.layers),
            "thresholds": list(axis.cap.thresholds),
            "percentile": axis.cap.percentile,
            "pool": axis["cap"]["pool"],
            "pools": axis["cap"]["pools"],
        },
    }


def peak_rss_gib() -> float:
    """The largest resident memory of this process so far, in GiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024**2) if sys.platform != "darwin" else kib / 1024**3
