"""Benchmark: ActivationStore reads, storage dtype and analysis memory on a synthetic store.

Writes a synthetic store (``--items`` items x ``--layers`` layers x ``--d-model`` dims, shards of
``--shard-rows`` items, roles + 10% default items) and measures, in one run:

1. contiguous block reads (``store.activations``: one slice per run of rows in a shard, crc32 of
   every row checked) vs the previous row-by-row reads (one ``get_slice`` per row, no
   checksum) of the same rows; also the block read with checksum checking switched off;
2. disk use of the activation shards at bfloat16 vs float32 (same data);
3. (``--rss-items A,B``; empty to skip) peak RSS of ``role_vectors`` + ``assistant_axis`` +
   ``persona_pca`` + ``calibrate_cap`` on bfloat16 stores of A and B items, each in a fresh
   process (analysis reads float64 whatever the storage dtype). Both stores have 275 roles
   (the paper's count): the role vectors, ``roles x layers x d_model`` float64, are the result
   and grow with the roles, never with the responses per role.

The full-size target, 100,000 x 30 x 576 float32, is ~6.9 GB; the defaults (10,000 items, RSS at
2,000 vs 20,000) run in a few minutes on 2 cores.

Run:  .venv/bin/python experiments/bench_store.py [--items 10000] [--rss-items 10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open

from axislens.store import ActivationStore, ItemRecord


def build(
    root: Path,
    n_items: int,
    n_layers: int,
    d_model: int,
    shard_rows: int,
    dtype: str,
    n_roles: int = 275,
) -> ActivationStore:
    """``n_roles`` roles (the paper's 275 by default: a larger dataset has more responses per
    role, not more roles) sharing 90% of the items, plus 10% default items; deterministic."""
    g = torch.Generator().manual_seed(0)
    manifest = {
        "model": {"model_id": "synthetic", "n_layers": n_layers},
        "hooks": ["resid_post"],
        "layers": list(range(n_layers)),
        "span": "response",
        "d_model": d_model,
    }
    store = ActivationStore.create(root, manifest, store_dtype=dtype)
    n_default = max(1, n_items // 10)
    ids, recs = [], []
    for i in range(n_items - n_default):
        role = f"r{i % n_roles:04d}"
        ids.append(f"role/{role}/p0/q{i:06d}")
        recs.append(ItemRecord(ids[-1], "role", role, 0, f"q{i:06d}", ()))
    for i in range(n_default):
        ids.append(f"default/p0/q{i:06d}")
        recs.append(ItemRecord(ids[-1], "default", "default", 0, f"q{i:06d}", ()))
    for k in range(0, n_items, shard_rows):  # one record shard per chunk, as collection writes
        store.append_records(recs[k : k + shard_rows])
    u = torch.randn(n_layers, d_model, generator=g)
    for k in range(0, n_items, shard_rows):
        part = ids[k : k + shard_rows]
        x = torch.randn(len(part), n_layers, d_model, generator=g) + u
        store.append_activations(part, {"resid_post": x})
    store.close()
    return ActivationStore.open(root)


def rowwise(store: ActivationStore, ids: list[str]) -> torch.Tensor:
    """The previous reader: one ``get_slice`` and one copy per row."""
    index = store._activation_index()
    out = torch.empty((len(ids), len(store.layers), store.d_model))
    by_shard: dict[Path, list[tuple[int, int]]] = {}
    for pos, rid in enumerate(ids):
        shard, row = index[rid]
        by_shard.setdefault(shard, []).append((pos, row))
    for shard, pairs in by_shard.items():
        with safe_open(str(shard), framework="pt") as f:
            sl = f.get_slice("resid_post")
            for pos, row in pairs:
                out[pos] = sl[row : row + 1][0].float()
    return out


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def shard_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "acts").glob("*.safetensors"))


_RSS_CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
from axislens.analysis.vectors import assistant_axis, role_vectors
from axislens.analysis.space import persona_pca
from axislens.analysis.thresholds import calibrate_cap
from axislens.store import ActivationStore
store = ActivationStore.open(sys.argv[1])
t0 = time.perf_counter()
mid = store.layers[len(store.layers) // 2]
axis = assistant_axis(store, min_score=None, min_count=1)
rv = role_vectors(store, min_score=None, min_count=1)
persona_pca(rv, mid)
calibrate_cap(store, axis, layers=[mid])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]), time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--d-model", type=int, default=576)
    ap.add_argument("--shard-rows", type=int, default=64)
    ap.add_argument("--rss-items", default="2000,20000", help="A,B (bfloat16 stores); '' skips")
    ap.add_argument("--dir", default=None, help="where to write the stores (default: a temp dir)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    base = Path(tmp.name)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    shape = f"{args.items} items x {args.layers} layers x {args.d_model} dims"
    print(f"store: {shape}, shards of {args.shard_rows} items")
    results: dict[str, object] = {"items": args.items, "layers": args.layers}

    t0 = time.perf_counter()
    f32 = build(base / "f32", args.items, args.layers, args.d_model, args.shard_rows, "float32")
    t_write32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    bf16 = build(base / "bf16", args.items, args.layers, args.d_model, args.shard_rows, "bfloat16")
    t_write16 = time.perf_counter() - t0
    gb = shard_bytes(base / "f32") / 1e9
    print(
        f"write: float32 {t_write32:.1f} s ({gb / t_write32:.2f} GB/s), bfloat16 {t_write16:.1f} s"
    )

    # 1. reads (page cache warm: the files were just written)
    ids = sorted(f32.collected_ids())
    t_row, a = best_of(2, lambda: rowwise(f32, ids))
    t_block, b = best_of(2, lambda: f32.activations(ids=ids))
    verify = f32._verify
    f32._verify = lambda *a, **k: None  # type: ignore[method-assign]
    t_nocheck, _ = best_of(2, lambda: f32.activations(ids=ids))
    f32._verify = verify  # type: ignore[method-assign]
    assert torch.equal(a, b), "block read differs from the row-by-row read"
    print(
        f"read {len(ids)} rows ({gb:.2f} GB float32): row-by-row {t_row:.2f} s, "
        f"contiguous+crc32 {t_block:.2f} s ({t_row / t_block:.1f}x), "
        f"contiguous unchecked {t_nocheck:.2f} s ({t_row / t_nocheck:.1f}x); results identical"
    )
    results |= {"read_rowwise_s": t_row, "read_block_s": t_block, "read_block_nocheck_s": t_nocheck}

    # 2. disk use
    d32, d16 = shard_bytes(base / "f32"), shard_bytes(base / "bf16")
    print(f"disk: float32 {d32 / 1e6:.1f} MB, bfloat16 {d16 / 1e6:.1f} MB ({d16 / d32:.3f}x)")
    x32 = f32.activations(ids=ids[:2000], dtype=torch.float64)
    x16 = bf16.activations(ids=ids[:2000], dtype=torch.float64)
    rel = float((x32 - x16).abs().max() / x32.abs().max())
    print(f"bfloat16 round-off: max |f32 - bf16| / max |f32| = {rel:.2e}")
    results |= {"disk_f32": d32, "disk_bf16": d16, "disk_ratio": d16 / d32}
    del a, b, x32, x16
    for p in list((base / "f32" / "acts").iterdir()):
        p.unlink()  # free the space before the RSS stores

    # 3. peak RSS of the analysis
    sizes = [int(s) for s in args.rss_items.split(",") if s.strip()]
    rss: dict[int, float] = {}
    for n in sizes:
        root = base / f"rss{n}"
        t0 = time.perf_counter()
        build(root, n, args.layers, args.d_model, args.shard_rows, "bfloat16")
        t_b = time.perf_counter() - t0
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(root)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        ).stdout.split()
        rss[n] = int(out[0]) / 1024
        print(
            f"analysis on {n} items: peak RSS {rss[n]:.0f} MiB, {float(out[1]):.1f} s "
            f"(store built in {t_b:.1f} s)"
        )
        for p in list((root / "acts").iterdir()):
            p.unlink()
    if len(sizes) == 2:
        print(
            f"peak RSS ratio {sizes[1]} / {sizes[0]} items: {rss[sizes[1]] / rss[sizes[0]]:.2f}x "
            f"(target <= 1.2x)"
        )
    results["rss_mib"] = rss
    print(json.dumps(results))
    tmp.cleanup()


if __name__ == "__main__":
    main()
