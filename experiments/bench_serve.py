"""Server throughput under concurrency vs calling ``generate_tokens`` in-process.

    python experiments/bench_serve.py --model smollm2-135m-instruct --clients 8 --requests 32
    python experiments/bench_serve.py --model tiny:llama

The same greedy requests (distinct prompts, ``--max-tokens`` new tokens each) are run

1. in-process, one at a time (``generate_tokens(..., batch_size=1)``): the work the server does,
   since it serialises generation on one model;
2. in-process, batched (``batch_size=--clients``): what cross-request batching could reach;
3. through the server (``axislens.serving.engine``, loopback, official ``openai`` client) from
   ``--clients`` threads at once, without projections (same work as 1);
4. the same with per-request axis monitoring on (one extra teacher-forced pass per request).

It prints completion tokens per second for each and the ratios against (1), with the machine.
Replies of (3) are checked to equal (1) token for token (greedy). One run; CPU timings on a
shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from typing import Any

QUESTIONS = (
    "Who are you?",
    "What is the capital of France?",
    "Give me a tip for sleeping better.",
    "Write one sentence about the sea.",
    "What is 12 times 7?",
    "Name three fruits.",
    "How do plants make food?",
    "Tell me a fun fact about octopuses.",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    args = parser.parse_args()

    import openai
    import torch

    import axislens
    from axislens.directions import Direction
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_tokens
    from axislens.serving.engine import background_server, create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model.startswith("tiny:"):
        model = axislens.tiny_model(args.model.split(":", 1)[1], n_layers=4, d_model=64)
    else:
        model = axislens.load_model(args.model)
    messages: list[Any] = [
        [
            {"role": "system", "content": f"You are helper number {k}."},
            {"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]},
        ]
        for k in range(args.requests)
    ]
    convs = [format_conversation(model, m, add_generation_prompt=True) for m in messages]
    sampling = SamplingConfig(max_new_tokens=args.max_tokens, temperature=0.0)

    def timed(fn: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    generate_tokens(model, [convs[0].input_ids], sampling, batch_size=1)  # warm-up
    t_seq, seq = timed(
        lambda: generate_tokens(model, [c.input_ids for c in convs], sampling, batch_size=1)
    )
    t_bat, bat = timed(
        lambda: generate_tokens(
            model, [c.input_ids for c in convs], sampling, batch_size=args.clients
        )
    )
    n_seq = sum(len(t) for t in seq)
    n_bat = sum(len(t) for t in bat)

    def run_server(axis: Any) -> tuple[float, list[Any]]:
        app = create_app(model, axis=axis, name="bench")
        results: list[Any] = [None] * len(messages)
        with background_server(app) as url:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
            client.chat.completions.create(  # warm-up
                model="bench", messages=messages[0], max_tokens=2, temperature=0
            )

            def worker(k: int) -> None:
                own = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
                for i in range(k, len(messages), args.clients):
                    results[i] = own.chat.completions.create(
                        model="bench",
                        messages=messages[i],
                        max_tokens=args.max_tokens,
                        temperature=0,
                    )

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0, results

    t_srv, srv = run_server(None)
    n_srv = sum(r.usage.completion_tokens for r in srv)
    tok = model.tokenizer
    same = sum(
        r.choices[0].message.content == tok.decode(t, skip_special_tokens=True).strip()
        for r, t in zip(srv, seq, strict=True)
    )
    g = torch.Generator().manual_seed(0)
    axis = Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="random"
    )
    t_mon, mon = run_server(axis)
    n_mon = sum(r.usage.completion_tokens for r in mon)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; model "
        f"{args.model}; {args.requests} requests x <= {args.max_tokens} new tokens, greedy"
    )
    print(f"{'run':48s} {'seconds':>8s} {'tokens':>7s} {'tok/s':>8s} {'ratio':>6s}")
    ref = n_seq / t_seq
    for name, t, n in (
        ("in-process generate_tokens, batch_size=1", t_seq, n_seq),
        (f"in-process generate_tokens, batch_size={args.clients}", t_bat, n_bat),
        (f"server, {args.clients} concurrent clients", t_srv, n_srv),
        (f"server + axis monitoring, {args.clients} clients", t_mon, n_mon),
    ):
        print(f"{name:48s} {t:8.2f} {n:7d} {n / t:8.1f} {n / t / ref:6.2f}")
    print(f"server replies equal to in-process greedy replies: {same}/{len(srv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
