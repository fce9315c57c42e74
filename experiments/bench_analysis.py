"""Benchmark: the analysis plane on a store the size of a 275-role run of the embedded model.

Builds a synthetic float32 store (275 roles x 10 responses + 100 default responses, all 30
layers, d_model 576: SmolLM2-135M's shape), then times, for every layer, what ``axislens axis``
computes: role/default means from the store, the Assistant Axis, PCA of the role vectors
(+ cos(axis, PC1)), and cap thresholds (25th percentile of every response's projection).

Reference: the same work written directly against the files (``safetensors.load_file`` of every
shard, ``index_add`` group means, one float64 SVD and ``torch.quantile`` per layer), on the same
inputs in the same process. Target: axislens < 5 s on 2 cores.

Run:  .venv/bin/python experiments/bench_analysis.py [--roles 275] [--per-role 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from axislens.analysis import role_vectors
from axislens.analysis.space import layer_profile
from axislens.analysis.thresholds import calibrate_cap
from axislens.store import ActivationStore, ItemRecord

N_LAYERS, D_MODEL = 30, 576


def build(
    root: Path, n_roles: int, per_role: int, n_default: int, shard: int = 256
) -> ActivationStore:
    g = torch.Generator().manual_seed(0)
    manifest = {
        "model": {"model_id": "synthetic-smollm2-shape", "n_layers": N_LAYERS, "d_model": D_MODEL},
        "hooks": ["resid_post"],
        "layers": list(range(N_LAYERS)),
        "span": "content",
        "d_model": D_MODEL,
        "dtype": "float32",
    }
    store = ActivationStore.create(root, manifest)
    u = torch.nn.functional.normalize(torch.randn(N_LAYERS, D_MODEL, generator=g), dim=-1)
    recs, ids, acts = [], [], []
    for r in range(n_roles):
        mean = -20 * torch.rand(1, generator=g) * u + torch.randn(N_LAYERS, D_MODEL, generator=g)
        for i in range(per_role):
            recs.append(
                ItemRecord(f"role/r{r:03d}/p0/q{i:03d}", "role", f"r{r:03d}", 0, f"q{i:03d}", ())
            )
            acts.append(mean + 0.5 * torch.randn(N_LAYERS, D_MODEL, generator=g))
    for i in range(n_default):
        recs.append(ItemRecord(f"default/p0/q{i:03d}", "default", "default", 0, f"q{i:03d}", ()))
        acts.append(6 * u + 0.5 * torch.randn(N_LAYERS, D_MODEL, generator=g))
    ids = [r.id for r in recs]
    store.append_records(recs)
    for k in range(0, len(ids), shard):
        store.append_activations(
            ids[k : k + shard], {"resid_post": torch.stack(acts[k : k + shard])}
        )
    store.append_scores({"id": i, "score": 3, "raw": "keep-all", "judge": "keep_all"} for i in ids)
    return ActivationStore.open(root)


def axislens_run(root: Path) -> tuple[float, list[float], dict[str, float]]:
    t0 = time.perf_counter()
    store = ActivationStore.open(root)
    rv = role_vectors(store, min_score=3, min_count=10)
    axis = rv.axis()
    t1 = time.perf_counter()
    profile = layer_profile(rv)
    t2 = time.perf_counter()
    cap = calibrate_cap(store, axis, layers=range(N_LAYERS), percentile=0.25)
    t3 = time.perf_counter()
    assert float(profile.cos_axis_pc1.min()) > 0.5
    stages = {"role vectors + axis": t1 - t0, "PCA x30": t2 - t1, "cap thresholds x30": t3 - t2}
    return t3 - t0, list(cap.thresholds), stages


def reference_run(root: Path) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    items = [json.loads(p.read_text()) for p in sorted((root / "items").glob("*.json"))]
    kind = {d["id"]: (d["kind"], d["role"]) for shard in items for d in shard}
    xs, groups = [], []
    names = sorted({r for k, r in kind.values() if k == "role"})
    index = {n: i for i, n in enumerate(names)}
    for p in sorted((root / "acts").glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            ids = json.loads(f.metadata()["ids"])
        xs.append(load_file(str(p))["resid_post"].double())
        groups += [index.get(kind[i][1], len(names)) for i in ids]
    x = torch.cat(xs)
    gi = torch.tensor(groups)
    sums = torch.zeros(len(names) + 1, N_LAYERS, D_MODEL, dtype=torch.float64).index_add_(0, gi, x)
    means = sums / torch.bincount(gi).double()[:, None, None]
    axis = means[-1] - means[:-1].mean(0)
    taus = []
    for layer in range(N_LAYERS):
        roles = means[:-1, layer]
        _, _, vh = torch.linalg.svd(roles - roles.mean(0), full_matrices=False)
        u = axis[layer] / axis[layer].norm()
        _ = float(u @ vh[0])
        taus.append(float(torch.quantile(x[:, layer] @ u.float().double(), 0.25)))
    return time.perf_counter() - t0, taus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--roles", type=int, default=275)
    ap.add_argument("--per-role", type=int, default=10)
    ap.add_argument("--defaults", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(root, args.roles, args.per_role, args.defaults)
        n = args.roles * args.per_role + args.defaults
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
        print(
            f"store: {n} items x {N_LAYERS} layers x {D_MODEL} ({size:.0f} MiB), built in {time.perf_counter() - t0:.1f} s"
        )
        ours, ref, stages = [], [], []
        for _ in range(args.repeats):
            t, taus, st = axislens_run(root)
            stages.append(st)
            r, ref_taus = reference_run(root)
            ours.append(t)
            ref.append(r)
        worst = max(abs(a - b) for a, b in zip(taus, ref_taus, strict=True))
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(
            f"axislens   (role vectors + axis + PCA + cap, all {N_LAYERS} layers): best {min(ours):.2f} s"
        )
        print(
            f"reference  (same work, bare safetensors + torch):              best {min(ref):.2f} s"
        )
        best = stages[ours.index(min(ours))]
        print("  axislens stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))
        print(
            f"ratio axislens / reference: {min(ours) / min(ref):.2f}  (max |tau diff| {worst:.2e})"
        )
        print(f"target < 5 s: {'met' if min(ours) < 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
