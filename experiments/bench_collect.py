"""Benchmark collection and generation against references doing the same work in the same run.

    .venv/bin/python experiments/bench_collect.py            # ~4-6 min on 2 CPU cores
    .venv/bin/python experiments/bench_collect.py --quick    # smaller sizes, for a smoke test

(a) Collection throughput on smollm2-135m-instruct: ``axislens.collection.activations`` end to end (templating,
    span arithmetic, hooks, store writes) and its forward loop alone (``span_means``), against a
    bare HF forward (``model.original_model``, no hooks, ``torch.no_grad``) over exactly the same
    right-padded batches (built with ``axislens.collection.activations._fit`` / ``_chunks``, as collect does).
    The HF reference runs the decoder only (``original_model.model``: collect stops after the
    last block, so it does no unembedding either), with eager attention (what the bridge uses)
    and with the HF default sdpa; the full ``LlamaForCausalLM`` forward with logits is printed
    too. Tokens = real (unpadded) tokens; each timing is the best of ``--repeats`` runs.
(b) Peak memory (``ru_maxrss`` of fresh subprocesses) of collecting 200 vs 2000 short
    conversations with a tiny random model: memory grows with the batch, not the dataset.
(d) Data parallel on the same items: 2 processes x 1 thread under ``torchrun --nproc-per-node 2``
    (each rank takes every other chunk, ``axislens.collect`` as is) vs 1 process x 2 threads.
    Rate = real tokens / the slowest rank's collect time (model load excluded); the two stores
    are checked equal vector for vector. Expect about 1.0x on a 2-core machine (the cores are
    the limit either way); it pays on N GPUs.
(c) Batched generation of 64 responses (greedy, 32 new tokens) vs one at a time, tokens/s. The
    one-at-a-time rate is measured on the first ``--sequential`` of the 64 prompts (a rate; the
    full 64 would take minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if (REPO / ".cache" / "axislens").is_dir():
    os.environ.setdefault("AXISLENS_CACHE", str(REPO / ".cache" / "axislens"))

import torch  # noqa: E402

import axislens  # noqa: E402
from axislens.collection.activations import _chunks, _fit, collect, span_means, span_policy  # noqa: E402
from axislens.model.decoding import SamplingConfig, generate_tokens  # noqa: E402
from axislens.store import ItemRecord  # noqa: E402

ANSWER = (
    "I keep the old lighthouse on the northern cape, and I have done so for thirty winters. "
    "Every evening I climb the hundred and twelve steps, trim the wick, polish the great lens "
    "and watch the beam sweep across the water. Ships I will never meet steer by my light. "
    "People ask whether the solitude weighs on me, but the sea is never the same twice, and "
    "the gulls, the storms and the logbook keep me company. If you came to visit, I would "
    "show you the view from the gallery at dawn."
)


def conversations(n: int) -> list[list[dict[str, str]]]:
    """``n`` conversations: a role system prompt, an extraction question, the fixed answer."""
    personas = axislens.load_personas()
    roles = personas.spread_roles()
    questions = personas.spread_questions()
    return [
        [
            {"role": "system", "content": roles[i % len(roles)].system_prompts[i % 5]},
            {"role": "user", "content": questions[i % len(questions)].text},
            {"role": "assistant", "content": ANSWER},
        ]
        for i in range(n)
    ]


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def padded_batches(model, convs, batch_size):  # type: ignore[no-untyped-def]
    """The right-padded input batches collect() runs, in its order, and the real token count."""
    records = [
        ItemRecord(f"conv/{i:05d}", "conversation", "", 0, "", tuple(c))
        for i, c in enumerate(convs)
    ]
    policy = span_policy("response")
    prepared = [_fit(model, r, policy, int(model.cfg.n_ctx)) for r in records]
    assert all(p.ids is not None for p in prepared)
    pad = int(model.tokenizer.pad_token_id)
    batches, chunks = [], []
    for chunk in _chunks(prepared, batch_size):
        ids = [p.ids for p in chunk if p.ids is not None]
        width = max(len(t) for t in ids)
        batch = torch.full((len(ids), width), pad, dtype=torch.long)
        for i, t in enumerate(ids):
            batch[i, : len(t)] = t
        batches.append(batch)
        chunks.append(chunk)
    tokens = sum(p.record.n_tokens for p in prepared)
    return batches, chunks, tokens


def bench_collect(model, n_convs: int, batch_size: int, repeats: int) -> None:  # type: ignore[no-untyped-def]
    convs = conversations(n_convs)
    batches, chunks, tokens = padded_batches(model, convs, batch_size)
    padded = sum(b.numel() for b in batches)
    layers = list(range(model.cfg.n_layers))
    hf = model.original_model
    print(
        f"\n(a) collection: {n_convs} conversations, batch {batch_size}, {len(batches)} batches, "
        f"{tokens} real tokens ({padded} with padding), all {len(layers)} layers, resid_post"
    )

    def run_collect() -> None:
        with tempfile.TemporaryDirectory() as d:
            collect(model, convs, d, batch_size=batch_size, progress=False)

    def run_span_means() -> None:
        for chunk in chunks:
            span_means(
                model,
                [p.ids for p in chunk],
                [p.weights for p in chunk],
                hooks=("resid_post",),
                layers=layers,
            )

    def hf_decoder() -> None:
        with torch.no_grad():
            for b in batches:
                hf.model(input_ids=b)

    def hf_causal_lm() -> None:
        with torch.no_grad():
            for b in batches:
                hf(input_ids=b)

    with torch.no_grad():  # warm up both paths on one batch
        hf.model(input_ids=batches[0])
    span_means(
        model,
        [p.ids for p in chunks[0]],
        [p.weights for p in chunks[0]],
        hooks=("resid_post",),
        layers=layers,
    )
    results: dict[str, float] = {}
    original = hf.config._attn_implementation
    try:
        for name, fn, reps in (
            ("axislens collect (end to end)", run_collect, repeats),
            ("axislens span_means loop", run_span_means, repeats),
            ("HF decoder, eager", hf_decoder, repeats),
            ("HF CausalLM + logits, eager", hf_causal_lm, 1),
        ):
            results[name] = tokens / best_of(reps, fn)
        hf.set_attn_implementation("sdpa")
        with torch.no_grad():
            hf.model(input_ids=batches[0])
        results["HF decoder, sdpa"] = tokens / best_of(repeats, hf_decoder)
    finally:
        hf.set_attn_implementation(original)
    for name, rate in results.items():
        print(f"  {name:32s} {rate:8.0f} tokens/s")
    ref = results["HF decoder, eager"]
    print(
        f"  ratio collect / HF eager decoder:    {results['axislens collect (end to end)'] / ref:.2f}x"
        " (target >= 0.9)"
    )
    print(
        f"  ratio span_means / HF eager decoder: {results['axislens span_means loop'] / ref:.2f}x"
    )
    print(
        f"  ratio collect / HF sdpa decoder:     "
        f"{results['axislens collect (end to end)'] / results['HF decoder, sdpa']:.2f}x"
    )


# ---------------------------------------------------------------------------------- parallel


def parallel_child(out: str, n: int, batch_size: int) -> None:
    """One process of part (d): load, collect ``n`` conversations into ``out``, print JSON."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = axislens.load_model("smollm2-135m-instruct")
    convs = conversations(n)
    t0 = time.perf_counter()
    s = collect(model, convs, out, batch_size=batch_size, progress=False)
    print(json.dumps({"rank": s.rank, "seconds": time.perf_counter() - t0, "tokens": s.tokens}))


def bench_parallel(n: int, batch_size: int) -> None:
    from axislens.store import ActivationStore

    print(f"\n(d) data parallel: {n} conversations, batch {batch_size}, smollm2, all layers")
    me = [
        str(Path(__file__).resolve()),
        "--parallel-child",
        str(n),
        "--batch-size",
        str(batch_size),
    ]
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    rates = {}
    with tempfile.TemporaryDirectory() as d:
        for name, cmd, threads in (
            ("1 process x 2 threads", [sys.executable, *me], "2"),
            (
                "2 processes x 1 thread",
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node=2", *me],
                "1",
            ),
        ):  # fmt: skip
            out = str(Path(d) / name.split()[0])
            res = subprocess.run(
                [*cmd, "--parallel-out", out],
                capture_output=True,
                text=True,
                check=True,
                env={**env, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"},
            )
            rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
            tokens = sum(r["tokens"] for r in rows)
            rates[name] = tokens / max(r["seconds"] for r in rows)
            print(f"  {name:24s} {rates[name]:8.0f} tokens/s ({len(rows)} process(es))")
        a, b = (ActivationStore.open(Path(d) / k) for k in ("1", "2"))
        ids = sorted(a.collected_ids())
        same = ids == sorted(b.collected_ids()) and torch.equal(
            a.activations(ids=ids), b.activations(ids=ids)
        )
    ratio = rates["2 processes x 1 thread"] / rates["1 process x 2 threads"]
    print(f"  ratio 2x1 / 1x2: {ratio:.2f}x (expect ~1.0 on 2 cores); stores identical: {same}")


# ---------------------------------------------------------------------------------- memory


def memory_child(n: int, batch_size: int) -> None:
    """Run in a fresh process: print baseline and peak ru_maxrss (KiB) around one collect."""
    model = axislens.tiny_model("llama", n_layers=2, d_model=64)
    convs = [
        [
            {"role": "system", "content": f"You are character number {i}."},
            {"role": "user", "content": f"Question {i}: who are you?"},
            {"role": "assistant", "content": f"I am number {i}. " * (1 + i % 5)},
        ]
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as d:
        collect(model, convs[:batch_size], Path(d) / "warm", batch_size=batch_size, progress=False)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        summary = collect(model, convs, Path(d) / "run", batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert summary.collected == n
    print(json.dumps({"n": n, "base_kib": base, "peak_kib": peak, "seconds": seconds}))


def bench_memory(sizes: tuple[int, int], batch_size: int) -> None:
    print(
        f"\n(b) peak memory (ru_maxrss, fresh subprocess per run), tiny llama, batch {batch_size}"
    )
    out = {}
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "--batch-size", str(batch_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = out[n]
        print(
            f"  {n:5d} conversations: peak {r['peak_kib'] / 1024:7.1f} MiB, before collect "
            f"{r['base_kib'] / 1024:7.1f} MiB, growth {(r['peak_kib'] - r['base_kib']) / 1024:6.1f} MiB "
            f"({r['seconds']:.1f} s)"
        )
    small, large = (out[n] for n in sizes)
    print(
        f"  ratio of peaks {sizes[1]} / {sizes[0]}: {large['peak_kib'] / small['peak_kib']:.3f}x "
        f"(target <= 1.2); dataset ratio {sizes[1] / sizes[0]:.0f}x"
    )


# ---------------------------------------------------------------------------------- generation


def bench_generate(model, n: int, sequential: int, max_new_tokens: int, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    convs = conversations(n)
    prompts = [
        axislens.format_conversation(model, c[:2], add_generation_prompt=True).input_ids
        for c in convs
    ]
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    print(
        f"\n(c) generation: greedy, {max_new_tokens} new tokens, {n} prompts batched "
        f"(batch {batch_size}) vs the first {sequential} one at a time"
    )
    generate_tokens(model, prompts[:2], SamplingConfig(max_new_tokens=2, temperature=0.0))
    t0 = time.perf_counter()
    batched = generate_tokens(model, prompts, sampling, batch_size=batch_size)
    t_batched = time.perf_counter() - t0
    n_batched = sum(len(t) for t in batched)
    t0 = time.perf_counter()
    single = [generate_tokens(model, [p], sampling, batch_size=1)[0] for p in prompts[:sequential]]
    t_single = time.perf_counter() - t0
    n_single = sum(len(t) for t in single)
    same = sum(torch.equal(a, b) for a, b in zip(batched[:sequential], single, strict=True))
    r_b, r_s = n_batched / t_batched, n_single / t_single
    print(f"  batched:       {n_batched:5d} tokens in {t_batched:6.1f} s = {r_b:7.1f} tokens/s")
    print(f"  one at a time: {n_single:5d} tokens in {t_single:6.1f} s = {r_s:7.1f} tokens/s")
    print(f"  ratio batched / one at a time: {r_b / r_s:.1f}x (target >= 4)")
    print(f"  identical greedy outputs batched vs alone: {same}/{sequential}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=12)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parallel-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parallel-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d")
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch_size)
        return
    if args.parallel_child is not None:
        parallel_child(args.parallel_out, args.parallel_child, args.batch_size)
        return
    skip = set(args.skip.split(",")) - {""}
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"nproc {os.cpu_count()}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, transformers {__import__('transformers').__version__}, "
        f"axislens {axislens.__version__}"
    )
    n_convs, n_gen, seq = (16, 16, 3) if args.quick else (64, 64, args.sequential)
    print(f"1-min load average at the start: {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    if "b" not in skip:
        bench_memory((20, 200) if args.quick else (200, 2000), args.batch_size)
    if not {"a", "c"} <= skip:
        model = axislens.load_model("smollm2-135m-instruct")
        if "a" not in skip:
            bench_collect(model, n_convs, args.batch_size, 1 if args.quick else args.repeats)
        if "c" not in skip:
            bench_generate(model, n_gen, seq, 8 if args.quick else 32, 64 if not args.quick else 16)
    if "d" not in skip:
        bench_parallel(16 if args.quick else 64, args.batch_size)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    load = os.getloadavg()[0]
    print(f"1-min load average at the end: {load:.1f} on {os.cpu_count()} cores")
    if load > 0.75 * (os.cpu_count() or 1) + 1:
        print("WARNING: other processes were competing for the CPU; the numbers are not valid")


if __name__ == "__main__":
    main()
