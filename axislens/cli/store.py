"""``axislens store``: look at, verify and repair an activation store from the command line.

- ``info``: what the store holds (model, hooks, layers, counts, size), read-only;
- ``verify``: every shard's checksum and owner, every row against its record; writes nothing,
  exits 1 on a problem;
- ``repair``: moves broken shards aside (checking every row, ignoring the verified ledger),
  then recomputes what they held with the model the store names (``--model`` to override).
  The store's lock is taken before the model loads.

Example::

    axislens store info runs/smol
    axislens store verify runs/smol
    axislens store repair runs/smol
"""

from __future__ import annotations

import argparse
from typing import Any

from axislens.cli.app import DTYPES, command, positive_int


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "verify", "repair"], help="what to do")
    p.add_argument("path", help="the store folder")
    p.add_argument(
        "--model", default=None, metavar="NAME", help="repair: the model (default: the store's)"
    )
    p.add_argument(
        "--device", default="auto", help="repair: auto (CUDA, MPS, CPU), cpu, cuda, cuda:N or mps"
    )
    p.add_argument(
        "--dtype", default=None, choices=DTYPES, help="repair: weights dtype (default: the store's)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="repair: sequences per batch (default: the store's)",
    )


def _size(path: Any) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _info(store: Any) -> int:
    m = store.manifest
    records = store.records()
    collected = store.collected_ids()
    scores = store.scores()
    model = m.get("model", {})
    rows = [
        ("store", f"{store.root} (id {store.store_id or 'none: made before store ids'})"),
        ("model", f"{model.get('model_id', '?')} ({model.get('dtype', '?')}, {model.get('source', '?')})"),
        ("hooks", ", ".join(m.get("hooks", [])) or "-"),
        ("layers", f"{len(m.get('layers', []))} ({m.get('layers', ['-'])[0]}..{m.get('layers', ['-'])[-1]})"),
        ("span", m.get("span", "-")),
        ("storage dtype", m.get("dtype", "float32")),
        ("records", f"{len(records)} ({sum(r.skipped is not None for r in records.values())} skipped)"),
        ("activations", f"{len(collected)} items"),
        ("scores", f"{len(scores)} items"),
        ("size", f"{_size(store.root) / 2**20:.1f} MiB"),
        ("axislens", m.get("axislens_version", "?")),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _repair(args: argparse.Namespace, store: Any) -> int:
    import torch

    from axislens.collection.activations import collect
    from axislens.model.loading import load_model, model_name_for
    from axislens.store import ActivationStore

    store = ActivationStore.create(store.root, {})  # holds the store before the model loads
    todo = store.repair(full=True)
    records = store.records()
    todo = [rid for rid in todo if rid in records and records[rid].skipped is None]
    if not todo:
        print(f"{store.root}: nothing to recompute")
        return 0
    m = store.manifest
    name, revision = (args.model, None) if args.model else model_name_for(m.get("model", {}))
    dtype = args.dtype or m.get("model", {}).get("dtype", "float32")
    print(f"{store.root}: {len(todo)} items to recompute with {name} ({dtype})", flush=True)
    model = load_model(
        name,
        device=args.device,
        dtype=getattr(torch, dtype),
        revision=revision,
        processing=bool(m.get("model", {}).get("processing", False)),
    )
    extra = {k: m[k] for k in ("personas", "generation") if k in m}
    summary = collect(
        model,
        [records[rid] for rid in todo],
        store,
        hooks=list(m["hooks"]),
        layers=list(m["layers"]),
        span=m["span"],
        batch_size=args.batch_size or int(m.get("collection", {}).get("batch_size", 8)),
        provenance=extra,
        progress=True,
    )
    print(f"{store.root}: recomputed {summary.collected} items")
    return _verify(store)


def _verify(store: Any) -> int:
    """Print every problem :meth:`~axislens.store.ActivationStore.verify` finds, then a verdict;
    the exit status (1 on a problem)."""
    problems = store.verify()
    for line in problems:
        print(line)
    print(f"{store.root}: {'sound' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


@command(
    "store",
    _add_store_args,
    summary="show, verify or repair an activation store",
    example="axislens store info runs/smol\naxislens store verify runs/smol\n"
    "axislens store repair runs/smol",
)
def _cmd_store(args: argparse.Namespace) -> int:
    from axislens.store import ActivationStore, check_not_in_use

    store = ActivationStore.open(args.path)
    if args.action == "info":
        return _info(store)
    if args.action == "verify":
        return _verify(store)
    check_not_in_use(store.root)
    return _repair(args, store)
