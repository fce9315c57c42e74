"""Cap and steering sweep: identity and attack robustness vs capability, with a Pareto plot.

    python experiments/cap_sweep.py --store runs/smol/store --axis runs/smol/axis.safetensors
    python experiments/cap_sweep.py --build-store --windows 12:16,16:20,20:24 \\
        --percentiles 0.01 0.25 0.5 0.75 --coeffs 2 4 --n-identity 30 --n-attacks 10

The grid is (layer windows x cap percentiles) plus (layer windows x steering coefficients), as in
the paper's capping experiments (windows of 4-8 layers, percentiles 0.01/0.25/0.5/0.75). Cap
thresholds come from :func:`axislens.calibrate_cap` over the store's collected responses at each
window layer; steering adds ``coeff * v`` (the raw axis) at each window layer. Every setting is
evaluated with :func:`axislens.evaluate` against the unsteered baseline.

``--build-store`` (when ``--store`` does not exist yet) collects a small store with
:func:`axislens.cli.collect.run_collect`: the first ``--roles`` roles of the persona catalogue and
the default prompts (``--prompts`` system prompts each) x ``--questions`` questions.
``--store-mode response`` (default) generates replies (temperature 0.7, top-p 0.9, up to
``--store-max-new-tokens``) and averages over their tokens, as the paper; ``prefill`` records the
last prompt token only (no generation: fast, but its projections are on another scale than reply
tokens, so percentile thresholds from it are a poor stand-in). No judge: every role response is
kept. The axis is ``mean(default) - mean(roles)`` over the store (unless ``--axis`` is given).

Outputs in ``--out`` (each written atomically, after every grid point, so a killed run resumes
where it stopped and skips finished points): ``results.json`` (rows + provenance),
``results.csv`` (tidy: one row per setting), ``settings/<name>.json`` (replies, labels,
scores), ``pareto.html`` (plotly). ``--model tiny:llama`` runs on a tiny random model (smoke).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class CapSweepConfig:
    """Everything a sweep depends on (each field is a command-line flag)."""

    model: str = "smollm2-135m-instruct"
    out: str = "runs/cap_sweep"
    store: str = "runs/cap_sweep/store"
    axis: str = ""  # Direction file; empty: assistant_axis(store) (all responses, no judge filter)
    build_store: bool = False
    store_mode: str = "response"  # response (generate, then average over reply tokens) | prefill
    roles: int = 20
    prompts: int = 5  # system prompts per role (and default prompts)
    questions: int = 3
    store_max_new_tokens: int = 32
    windows: str = "12:16,16:20,20:24,24:28"  # comma list of start:stop (stop exclusive)
    percentiles: tuple[float, ...] = (0.01, 0.25, 0.5, 0.75)
    coeffs: tuple[float, ...] = ()
    eval_set: str = ""  # folder; empty: the shipped set
    attacks: str = ""  # your own attack JSONL (e.g. harmful requests) replacing the shipped ones
    n_attacks: int = -1  # -1: all
    n_identity: int = -1
    n_qa: int = -1
    max_new_tokens: int = 48
    qa_max_new_tokens: int = 12
    batch_size: int = 8
    projection_layer: int = -1  # -1: the middle stored layer of the axis
    judge_model: str = ""  # OpenAI-compatible judge (attack success); empty: keyword metrics only
    judge_base_url: str = ""
    x_metric: str = "kl"  # kl | qa_loss | ppl_ratio
    y_metric: str = ""  # identity_loss | attack_success_rate | attack_identity_loss; "": auto
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0: leave as is
    yes: bool = False  # start a sweep too large for a CPU (the plan printed first says how large)


def parse_args(argv: Sequence[str] | None = None) -> CapSweepConfig:
    """An argparse CLI generated from :class:`CapSweepConfig`'s fields."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    for f in dataclasses.fields(CapSweepConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=float, nargs="*", default=list(default))
        else:
            parser.add_argument(flag, type=type(default), default=default)
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()}
    return CapSweepConfig(**values)


# --------------------------------------------------------------------------------------------


def parse_windows(text: str, n_layers: int) -> list[tuple[int, ...]]:
    """``"12:16,16:20"`` -> ``[(12, 13, 14, 15), (16, 17, 18, 19)]``."""
    out = []
    for part in text.split(","):
        bits = part.strip().split(":")
        if len(bits) != 2:
            raise ValueError(f"--windows: {part!r} is not start:stop")
        a, b = int(bits[0]), int(bits[1])
        if not 0 <= a < b <= n_layers:
            raise ValueError(f"--windows: {part!r} is outside the model's {n_layers} layers")
        out.append(tuple(range(a, b)))
    return out


def _span(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}"


def load_model(cfg: CapSweepConfig) -> Any:
    import axislens

    if cfg.model.startswith("tiny:"):
        return axislens.tiny_model(cfg.model.split(":", 1)[1], n_layers=4, d_model=64)  # type: ignore[arg-type]
    return axislens.load_model(cfg.model, device=cfg.device)


def build_store(cfg: CapSweepConfig, model: Any) -> Path:
    """A small store of role and default activations: ``response`` mode generates replies
    (temperature 0.7, top-p 0.9, as the paper) and averages over their tokens; ``prefill`` mode
    records the last prompt token (no generation). No judge: every role response is kept."""
    from axislens.jobs import run_collect

    summary = run_collect(
        model,
        cfg.store,
        roles=cfg.roles,
        n_prompts=cfg.prompts,
        n_questions=cfg.questions,
        max_new_tokens=cfg.store_max_new_tokens,
        batch_size=cfg.batch_size,
        mode=cfg.store_mode,  # type: ignore[arg-type]
    )
    print(summary, file=sys.stderr)
    return Path(cfg.store)


def plan(cfg: CapSweepConfig, ev: Any) -> Any:
    """The sweep's :class:`~axislens.collection.plan.RunPlan`: the store build (when it will
    run) plus every grid point's replies (attacks and identity prompts at ``--max-new-tokens``,
    QA at ``--qa-max-new-tokens``), baseline included."""
    from axislens.collection.plan import RunPlan

    points = 1 + len(cfg.windows.split(",")) * (len(cfg.percentiles) + len(cfg.coeffs))
    replies = len(ev.attacks) + len(ev.identity)
    items = points * (replies + len(ev.qa))
    tokens = points * (replies * cfg.max_new_tokens + len(ev.qa) * cfg.qa_max_new_tokens)
    detail = f"{points} grid points x {replies + len(ev.qa)} prompts"
    if cfg.build_store and not Path(cfg.store).exists():
        store_items = (cfg.roles + 1) * cfg.prompts * cfg.questions
        items += store_items
        if cfg.store_mode == "response":
            tokens += store_items * cfg.store_max_new_tokens
        detail += f" + a store of {store_items} items"
    return RunPlan(
        "cap_sweep",
        items=items,
        new_tokens=tokens,
        device=cfg.device,
        detail=detail,
        flags="--windows/--percentiles/--coeffs/--n-attacks/--n-identity/--n-qa",
    )


def calibrate(store: Any, axis: Any, layers: Sequence[int], q: float) -> Any:
    try:
        from axislens import calibrate_cap  # type: ignore[attr-defined]
    except ImportError:  # not exported yet
        from axislens.analysis.thresholds import calibrate_cap
    return calibrate_cap(store, axis, layers=layers, percentile=q)


def grid(cfg: CapSweepConfig, store: Any, axis: Any, n_layers: int) -> list[Any]:
    """The grid of :class:`axislens.evals.harness.Setting` values (thresholds computed here)."""
    from axislens.evals.harness import Setting
    from axislens.interventions.attach import Intervention, cap_intervention
    from axislens.interventions.operations import Add

    out = []
    for window in parse_windows(cfg.windows, n_layers):
        for q in cfg.percentiles:
            cap = calibrate(store, axis, window, q)
            params = {
                "kind": "cap",
                "layers": _span(window),
                "percentile": q,
                "coeff": None,
                "thresholds": json.dumps([round(t, 4) for t in cap.thresholds]),
            }
            name = f"cap L{_span(window)} p{q:g}"
            out.append(Setting(name, (cap_intervention(cap, n_layers=n_layers),), params))
        for c in cfg.coeffs:
            params = {
                "kind": "steer",
                "layers": _span(window),
                "percentile": None,
                "coeff": c,
                "thresholds": None,
            }
            out.append(
                Setting(
                    f"steer L{_span(window)} c{c:g}", (Intervention(Add(c), axis, window),), params
                )
            )
    return out


# --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _with_derived(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add losses relative to the baseline row (first row)."""
    base = rows[0]

    def diff(a: Any, b: Any) -> float | None:
        return None if a is None or b is None else a - b

    out = []
    for r in rows:
        d = dict(r)
        d["identity_loss"] = (
            None if r["identity_rate_roles"] is None else 1 - r["identity_rate_roles"]
        )
        d["identity_gain"] = diff(r["identity_rate_roles"], base["identity_rate_roles"])
        d["attack_identity_loss"] = (
            None if r["attack_identity_rate"] is None else 1 - r["attack_identity_rate"]
        )
        d["qa_loss"] = diff(base["qa_contains"], r["qa_contains"])
        ppl, bppl = r.get("perplexity"), base.get("perplexity")
        d["ppl_ratio"] = None if ppl is None or not bppl else ppl / bppl
        out.append(d)
    return out


def write_tables(out: Path, rows: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    from axislens.store import atomic_write_bytes, atomic_write_json

    rows = _with_derived(rows)
    atomic_write_json(out / "results.json", {"rows": rows, "provenance": provenance})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (both coordinates minimised), sorted by x."""
    keep = [
        i
        for i, (x, y) in enumerate(points)
        if not any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
    ]
    return sorted(keep, key=lambda i: points[i])


def pareto_figure(rows: list[dict[str, Any]], x_metric: str, y_metric: str) -> Any:
    import plotly.graph_objects as go

    rows = [
        r
        for r in _with_derived(rows)
        if r.get(x_metric) is not None and r.get(y_metric) is not None
    ]
    fig = go.Figure()
    for kind, symbol in (("baseline", "star"), ("cap", "circle"), ("steer", "diamond")):
        sel = [r for r in rows if (r.get("kind") or "baseline") == kind]
        if not sel:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r[x_metric] for r in sel],
                y=[r[y_metric] for r in sel],
                mode="markers",
                name=kind,
                marker={"symbol": symbol, "size": 11},
                text=[r["setting"] for r in sel],
                customdata=[
                    [r.get("qa_contains"), r.get("perplexity"), r.get("identity_rate_roles")]
                    for r in sel
                ],
                hovertemplate=(
                    "%{text}<br>" + x_metric + "=%{x:.4f}<br>" + y_metric + "=%{y:.3f}<br>"
                    "qa_contains=%{customdata[0]:.3f}<br>ppl=%{customdata[1]:.2f}<br>"
                    "identity_rate_roles=%{customdata[2]:.3f}<extra></extra>"
                ),
            )
        )
    pts = [(float(r[x_metric]), float(r[y_metric])) for r in rows]
    front = pareto_front(pts)
    fig.add_trace(
        go.Scatter(
            x=[pts[i][0] for i in front],
            y=[pts[i][1] for i in front],
            mode="lines",
            name="Pareto front",
            line={"dash": "dot", "color": "grey"},
        )
    )
    fig.update_layout(
        title=f"{y_metric} vs {x_metric} (lower-left is better)",
        xaxis_title=f"capability loss: {x_metric}",
        yaxis_title=y_metric,
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from tqdm.auto import tqdm

    import axislens
    from axislens.directions import Direction
    from axislens.evals.harness import SettingResult, evaluate
    from axislens.evals.metrics import metrics_fingerprint
    from axislens.evals.sets import eval_set_summary, load_eval_set
    from axislens.model.loading import model_provenance
    from axislens.store import ActivationStore, atomic_write_json

    cfg = parse_args(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ev = load_eval_set(cfg.eval_set or None, attacks=cfg.attacks or None)

    def n(x: int) -> int | None:
        return None if x < 0 else x

    ev = ev.subset(attacks=n(cfg.n_attacks), identity=n(cfg.n_identity), qa=n(cfg.n_qa))
    run_plan = plan(cfg, ev)
    print(run_plan.describe(), file=sys.stderr, flush=True)
    try:
        run_plan.check(cfg.yes)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg)
    n_layers = int(model.cfg.n_layers)
    if not Path(cfg.store).exists():
        if not cfg.build_store:
            raise SystemExit(f"{cfg.store}: no activation store; pass --build-store to collect one")
        build_store(cfg, model)
    store = ActivationStore.open(cfg.store)
    if cfg.axis:
        axis = Direction.load(cfg.axis)
    else:
        from axislens.analysis import assistant_axis

        axis = assistant_axis(store, min_score=None, min_count=1)
        axis.save(out / "axis.safetensors")
    judge = None
    if cfg.judge_model:
        from axislens.collection.judges import OpenAIJudge

        judge = OpenAIJudge(cfg.judge_model, base_url=cfg.judge_base_url or None)
    provenance = {
        "config": dataclasses.asdict(cfg),
        "model": model_provenance(model).to_dict(),
        "eval_set": dict(eval_set_summary(ev)),
        "metrics": metrics_fingerprint(),
        "generation": {k: getattr(cfg, k) for k in ("max_new_tokens", "qa_max_new_tokens")},
        "axis": {"method": axis.method, "sha256_of_vectors": _tensor_sha(axis.vectors)},
        "store": str(store.root),
        "axislens_version": axislens.__version__,
        "machine": _machine(),
    }
    keep = ("model", "eval_set", "axis", "metrics", "generation")
    rows: list[dict[str, Any]] = []
    if (out / "results.json").is_file():
        old = json.loads((out / "results.json").read_text())
        for k in keep:
            if old["provenance"].get(k) != provenance[k]:
                raise SystemExit(
                    f"{out}: results.json was made with a different {k}; use another --out"
                )
        derived = {"identity_loss", "identity_gain", "attack_identity_loss", "qa_loss", "ppl_ratio"}
        rows = [{k: v for k, v in r.items() if k not in derived} for r in old["rows"]]
    kwargs: dict[str, Any] = {
        "axis": axis,
        "judge": judge,
        "max_new_tokens": cfg.max_new_tokens,
        "qa_max_new_tokens": cfg.qa_max_new_tokens,
        "batch_size": cfg.batch_size,
        "projection_layer": None if cfg.projection_layer < 0 else cfg.projection_layer,
        "progress": False,
    }
    base_file = out / "settings" / "baseline.json"
    if rows and base_file.is_file():
        baseline = SettingResult.from_json(json.loads(base_file.read_text()))
    else:
        t0 = time.perf_counter()
        baseline = evaluate(model, ev, [], **kwargs).baseline
        atomic_write_json(base_file, baseline.to_json())
        rows = [
            {
                "setting": "baseline",
                "kind": "baseline",
                "layers": None,
                "percentile": None,
                "coeff": None,
                "thresholds": None,
                **dict(baseline.metrics),
                "seconds": time.perf_counter() - t0,
            }
        ]
        write_tables(out, rows, provenance)
    settings = grid(cfg, store, axis, n_layers)
    done = {r["setting"] for r in rows}
    todo = [s for s in settings if s.name not in done]
    print(
        f"{len(settings) - len(todo)} of {len(settings)} grid points already done", file=sys.stderr
    )
    for setting in tqdm(todo, desc="cap sweep", unit="setting"):
        t0 = time.perf_counter()
        res = evaluate(model, ev, [setting], baseline=baseline, **kwargs)
        result = res.settings[1]
        atomic_write_json(out / "settings" / f"{_slug(setting.name)}.json", result.to_json())
        row = res.rows()[1]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        write_tables(out, rows, provenance)
    y_metric = cfg.y_metric or ("attack_success_rate" if judge is not None else "identity_loss")
    fig = pareto_figure(rows, cfg.x_metric, y_metric)
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    from axislens.store import atomic_write_bytes

    atomic_write_bytes(out / "pareto.html", html.encode())
    _print_table(_with_derived(rows))
    print(
        f"wrote {out / 'results.csv'}, {out / 'results.json'}, {out / 'pareto.html'}",
        file=sys.stderr,
    )
    return 0


def _tensor_sha(t: Any) -> str:
    import hashlib

    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _machine() -> str:
    import os
    import platform

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        "setting",
        "identity_rate_roles",
        "identity_rate_default",
        "attack_identity_rate",
        "attack_success_rate",
        "qa_contains",
        "perplexity",
        "kl",
        "projection_identity",
    ]
    print(" | ".join(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
