"""Layer sweep of the Assistant Axis: steer (or ablate) one layer at a time, write a table and
an HTML report.

    python experiments/layer_sweep.py --model smollm2-135m-instruct --strengths=-0.5,-0.25,0,0.25,0.5
    python experiments/layer_sweep.py --axis runs/x/axis.safetensors --layers 8:20 --op ablate

Without ``--axis`` a quick stand-in axis is built from prompts (mean last-prompt-token residual
of default-assistant system prompts minus that of role system prompts, same question; see
``axislens.evals.sweeps.prompt_contrast_axis``) and saved next to the results. Strengths are in
units of each layer's average residual norm unless ``--no-norm-units``.

Outputs in ``--out``: ``sweep.csv`` (tidy: layer, strength, metric, value), ``sweep.json``
(everything, with provenance), ``report.html`` (heatmaps), ``axis.safetensors`` (if built).
``--model tiny:llama`` runs on a tiny random model (smoke tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_QUESTIONS = (
    "Who are you?",
    "What is your name?",
    "Tell me about yourself.",
    "What are you?",
    "How would you describe yourself?",
    "Are you a person?",
    "Introduce yourself in one sentence.",
    "What do you like to do?",
)
ASSISTANT_SYSTEMS = (
    "",
    "You are a helpful AI assistant.",
    "You are an AI assistant created to help users with their questions.",
)
ROLE_SYSTEMS = (
    "You are a ghost haunting an old castle.",
    "You are a pirate captain sailing the seven seas.",
    "You are a medieval bard who sings tales of heroes.",
    "You are an ancient leviathan sleeping beneath the ocean.",
)


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """Everything a sweep run depends on (each field is a command-line flag)."""

    model: str = "smollm2-135m-instruct"
    axis: str = ""  # Direction file; empty: build the prompt-contrast stand-in
    op: str = "add"  # add | ablate (ablate: strengths are the add-back coefficients)
    layers: str = ":"  # start:stop, a list "3,5,9" or one layer
    strengths: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)
    norm_units: bool = True
    readout: str = "-1"  # readout layers, same syntax as --layers
    n_prompts: int = 8
    continuation_ai: str = "I am an AI assistant"
    continuation_role: str = "I am a ghost"
    generate_tokens: int = 0  # > 0: also generate this many greedy tokens per setting
    batch_size: int = 16
    out: str = "runs/layer_sweep"
    device: str = "cpu"
    seed: int = 0


def parse_args(argv: Sequence[str] | None = None) -> SweepConfig:
    """Build an argparse CLI from :class:`SweepConfig`'s fields and parse ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(SweepConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(
                flag,
                type=lambda s: tuple(float(x) for x in s.split(",")),
                default=default,
                help="comma-separated numbers",
            )
        else:
            parser.add_argument(flag, type=type(default), default=default)
    ns = parser.parse_args(argv)
    cfg = SweepConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(SweepConfig)})
    if cfg.op not in ("add", "ablate"):
        parser.error(f"--op must be add or ablate, got {cfg.op!r}")
    return cfg


def _load(cfg: SweepConfig) -> Any:
    import axislens

    if cfg.model.startswith("tiny:"):
        return axislens.tiny_model(cfg.model.removeprefix("tiny:"), n_layers=4, d_model=64)  # type: ignore[arg-type]
    return axislens.load_model(cfg.model, device=cfg.device)


def _conv(model: Any, system: str | None, question: str) -> Any:
    import axislens

    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": question})
    return axislens.format_conversation(model, msgs, add_generation_prompt=True)


def report_html(result: Any, path: Path, title: str) -> Path:
    """One HTML page with a heatmap per metric (plotly.js inlined once: works offline)."""
    from axislens.plots.steering import ablation_bars, sweep_heatmap

    figs = [sweep_heatmap(result, m) for m in result.metrics if not m.startswith("proj@")]
    if result.kind == "ablation" or len(result.strengths) == 1:
        figs = [ablation_bars(result, m) for m in result.metrics if not m.startswith("proj@")]
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    texts = "".join(
        f"<tr><td>{t.layer}</td><td>{t.strength:g}</td><td>{t.prompt}</td><td>{t.text}</td></tr>"
        for t in result.texts
    )
    table = (
        f"<h2>generations</h2><table><tr><th>layer</th><th>strength</th><th>prompt</th>"
        f"<th>text</th></tr>{texts}</table>"
        if texts
        else ""
    )
    path.write_text(
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1>{''.join(parts)}{table}</body></html>"
    )
    return path


def run(cfg: SweepConfig, model: Any = None) -> Any:
    """Run the sweep described by ``cfg`` (on ``model`` if given); write and return the result."""
    import torch

    from axislens.directions import Direction
    from axislens.evals.sweeps import layer_sweep, prompt_contrast_axis
    from axislens.interventions.attach import residual_norms
    from axislens.interventions.operations import Ablate, Add
    from axislens.model.layers import parse_layers

    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else _load(cfg)
    prompts = [_conv(model, None, q) for q in DEFAULT_QUESTIONS[: cfg.n_prompts]]
    if cfg.axis:
        axis = Direction.load(cfg.axis)
    else:
        question = DEFAULT_QUESTIONS[0]
        axis = prompt_contrast_axis(
            model,
            [_conv(model, s, question) for s in ASSISTANT_SYSTEMS],
            [_conv(model, s, question) for s in ROLE_SYSTEMS],
        )
        axis.save(out / "axis.safetensors")
    norms = residual_norms(model, prompts) if cfg.norm_units else None
    from axislens.model.decoding import SamplingConfig

    sampling = (
        SamplingConfig(max_new_tokens=cfg.generate_tokens, temperature=0.0)
        if cfg.generate_tokens > 0
        else None
    )
    t0 = time.perf_counter()
    result = layer_sweep(
        model,
        axis,
        prompts,
        op=Add if cfg.op == "add" else Ablate,
        layers=parse_layers(cfg.layers),
        strengths=cfg.strengths,
        readout_layers=parse_layers(cfg.readout),
        norm_units=norms,
        continuations={"ai": cfg.continuation_ai, "role": cfg.continuation_role},
        generate=sampling,
        batch_size=cfg.batch_size,
        progress=True,
    )
    seconds = time.perf_counter() - t0
    result.to_csv(out / "sweep.csv")
    result.to_json(out / "sweep.json")
    title = (
        f"{cfg.op} sweep on {cfg.model}: {len(result.layers)} layers x "
        f"{len(result.strengths)} strengths x {len(prompts)} prompts ({seconds:.1f} s)"
    )
    report_html(result, out / "report.html", title)
    print(title)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'report.html'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
