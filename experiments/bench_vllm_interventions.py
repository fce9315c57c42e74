"""Throughput of interventions inside vLLM (the axislens plugin) against stock vLLM and the
bridge's own decode loop doing the same capped work, measured in one run.

    python experiments/bench_vllm_interventions.py            # CPU, SmolLM2-135M, float32
    python experiments/bench_vllm_interventions.py --requests 64 --tokens 64

The same ``--requests`` prompts (a persona system prompt and question each, chat-formatted by
``format_conversation``), ``--tokens`` new tokens each (greedy, no early stop), all submitted at
once to an in-process ``vllm.LLM`` started from ``--vllm-python`` (default: ``.venv-vllm``):

1. ``stock``: the plugin installed, not configured (vLLM's own model classes);
2. ``capped, default``: one cap for every request (``AXISLENS_VLLM_DEFAULT``: no routing);
3. ``capped, routed``: the cap chosen per request by name, beside a steer (per-request routing);
4. the bridge: ``generate_tokens`` under ``axislens.cap`` at batch ``--requests`` (what
   ``axislens serve`` and ``evaluate`` run in-process).

``--evaluate`` adds the harness: ``evaluate`` on the shipped eval set (30 attacks, 30 identity
probes, 40 QA items; baseline and the cap) in-process, then with ``engine=`` a vLLM server that
loaded the cap through the plugin; prints both wall times, how many replies are identical and
whether the metrics are identical where every reply is.

The cap: a seeded random unit direction at layers 10 and 15 with thresholds at the 30th
percentile of the prompts' projections, so it fires on part of the tokens. Each vLLM mode runs in
its own process (the plugin registers once per process) with ``--enforce-eager`` off (vLLM's
default torch.compile). Prints tokens/s and the ratios.
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

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (10, 15)

_CHILD = r"""
import json, sys, time
from vllm import LLM, SamplingParams
prompts, tokens, name = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
llm = LLM(model=sys.argv[4], dtype="float32", enable_prefix_caching=False, seed=0,
          max_model_len=2048, max_num_batched_tokens=8192)
sp = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True,
                    extra_args={"axislens": name} if name else None)
batch = [{"prompt_token_ids": p} for p in prompts]
llm.generate(batch[:2], sp, use_tqdm=False)  # warm-up (compilation) outside the timing
t0 = time.perf_counter()
out = llm.generate(batch, sp, use_tqdm=False)
dt = time.perf_counter() - t0
n = sum(len(o.outputs[0].token_ids) for o in out)
print(json.dumps({"tokens": n, "seconds": dt, "texts": [list(o.outputs[0].token_ids) for o in out]}))
"""


def _prompts(model, n: int) -> list[list[int]]:
    import axislens

    personas = axislens.load_personas()
    items = axislens.persona_items(personas, n_prompts=1, n_questions=4, include_default=False)
    convs = [
        axislens.format_conversation(model, list(i.messages), add_generation_prompt=True)
        for i in items[:n]
    ]
    return [[int(t) for t in c.input_ids.tolist()] for c in convs]


def _vllm(python: str, folder: str, prompts, tokens: int, env: dict[str, str], name: str) -> dict:
    full = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        **env,
    }
    for key in ("AXISLENS_VLLM_INTERVENTIONS", "AXISLENS_VLLM_DEFAULT"):
        if key not in env:
            full.pop(key, None)
    done = subprocess.run(
        [python, "-c", _CHILD, json.dumps(prompts), str(tokens), name, folder],
        capture_output=True, text=True, env=full, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"vLLM run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--evaluate", action="store_true", help="also time evaluate() both ways")
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--skip-throughput", action="store_true", help="with --evaluate: only that")
    args = ap.parse_args()

    import axislens
    from axislens.model.decoding import SamplingConfig, generate_tokens
    from axislens.model.loading import prepare_model

    model = axislens.load_model("smollm2-135m-instruct")
    prompts = _prompts(model, args.requests)
    g = torch.Generator().manual_seed(7)
    axis = axislens.Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="imported"
    )
    _, cache = model.run_with_cache(torch.tensor([prompts[0]]))
    taus = tuple(
        float(torch.quantile(cache[f"blocks.{la}.hook_resid_post"][0] @ axis.unit(la), 0.3))
        for la in LAYERS
    )
    cap = axislens.CapConfig(axis, layers=LAYERS, thresholds=taus)
    tmp = Path(tempfile.mkdtemp())
    cap_file = axislens.to_vllm(tmp / "cap.safetensors", cap)
    steer_file = axislens.to_vllm(
        tmp / "steer.safetensors", axislens.Intervention(axislens.Add(2.0), axis, layers=(12,))
    )
    folder = str(prepare_model("smollm2-135m-instruct"))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; float32")
    print(f"{args.requests} requests x {args.tokens} tokens, greedy, all submitted at once\n")
    if args.skip_throughput and args.evaluate:
        _evaluate(args, model, cap, cap_file, folder)
        return
    runs = {}
    runs["stock"] = _vllm(args.vllm_python, folder, prompts, args.tokens, {}, "")
    runs["capped, default"] = _vllm(
        args.vllm_python, folder, prompts, args.tokens,
        {"AXISLENS_VLLM_INTERVENTIONS": f"cap={cap_file}", "AXISLENS_VLLM_DEFAULT": "cap"}, "",
    )  # fmt: skip
    runs["capped, routed"] = _vllm(
        args.vllm_python, folder, prompts, args.tokens,
        {"AXISLENS_VLLM_INTERVENTIONS": f"cap={cap_file},steer={steer_file}"}, "cap",
    )  # fmt: skip
    sampling = SamplingConfig(max_new_tokens=args.tokens, temperature=0.0)
    with axislens.cap(model, cap), torch.no_grad():
        generate_tokens(model, [torch.tensor(p) for p in prompts[:2]], sampling, batch_size=2)
        t0 = time.perf_counter()
        out = generate_tokens(
            model, [torch.tensor(p) for p in prompts], sampling, batch_size=args.requests
        )
        dt = time.perf_counter() - t0
    runs["bridge, capped"] = {"tokens": sum(len(o) for o in out), "seconds": dt}

    stock = runs["stock"]["tokens"] / runs["stock"]["seconds"]
    bridge = runs["bridge, capped"]["tokens"] / runs["bridge, capped"]["seconds"]
    print(
        f"{'run':<18} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs stock':>9} {'vs bridge':>10}"
    )
    for name, r in runs.items():
        rate = r["tokens"] / r["seconds"]
        print(
            f"{name:<18} {r['tokens']:>7} {r['seconds']:>8.1f} {rate:>7.1f} {rate / stock:>8.2f}x {rate / bridge:>9.2f}x"
        )
    same = sum(
        a == b
        for a, b in zip(
            runs["capped, default"]["texts"], runs["capped, routed"]["texts"], strict=True
        )
    )
    print(f"\ncapped replies identical between default and routed modes: {same}/{len(prompts)}")
    changed = sum(
        a != b
        for a, b in zip(runs["capped, default"]["texts"], runs["stock"]["texts"], strict=True)
    )
    print(f"capped replies that differ from stock: {changed}/{len(prompts)}")
    if args.evaluate:
        _evaluate(args, model, cap, cap_file, folder)


def _evaluate(args: argparse.Namespace, model, cap, cap_file: Path, folder: str) -> None:
    import signal

    from bench_engine import _free_port, start_vllm, wait_ready

    import axislens
    from axislens.collection.engines import OpenAIBackend
    from axislens.evals.harness import Setting, evaluate

    ev = axislens.load_eval_set()
    settings = [Setting("cap", (axislens.cap_intervention(cap),))]
    kw = dict(max_new_tokens=args.eval_tokens, batch_size=32, progress=False)
    t0 = time.perf_counter()
    local = evaluate(model, ev, settings, **kw)
    t_local = time.perf_counter() - t0
    port = _free_port()
    server = argparse.Namespace(
        vllm_python=args.vllm_python, model_folder=folder, served_name="bench", dtype="float32",
        max_model_len=2048, tensor_parallel=1, device="cpu", vllm_log="/tmp/bench_vllm_iv.log",
    )  # fmt: skip
    proc, log = start_vllm(
        server, port, ("--no-enable-prefix-caching",),
        {"AXISLENS_VLLM_INTERVENTIONS": f"cap={cap_file}"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, log, 900)
        t0 = time.perf_counter()
        remote = evaluate(model, ev, settings, engine=OpenAIBackend(url, "bench"), **kw)
        t_remote = time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    parts = f"{len(ev.attacks)} attacks, {len(ev.identity)} identity probes, {len(ev.qa)} QA"
    print(f"\nevaluate on the shipped set ({parts}), baseline + cap, {args.eval_tokens} tokens:")
    print(
        f"  in-process {t_local:.1f} s, through vLLM {t_remote:.1f} s ({t_local / t_remote:.2f}x)"
    )
    print("  (both include the bridge's teacher-forced perplexity and KL passes)")
    for a, b in zip(local.settings, remote.settings, strict=True):
        same = sum(a.replies[k] == b.replies[k] for k in a.replies)
        metrics = "identical" if dict(a.metrics) == dict(b.metrics) else "differ"
        print(f"  {a.name}: {same}/{len(a.replies)} replies identical; metrics {metrics}")


if __name__ == "__main__":
    main()
