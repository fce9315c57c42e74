"""Server throughput under concurrency vs ``generate_tokens`` in-process, and the cost of clients
that hang up.

    python experiments/bench_serve.py --model smollm2-135m-instruct --clients 8 --requests 32
    python experiments/bench_serve.py --model tiny:llama

1. The same greedy requests (distinct prompts, ``--max-tokens`` new tokens each) in-process,
   batched (``generate_tokens(..., batch_size=--clients)``): the reference.
2. Through the server (``axislens.serving.engine``, loopback, official ``openai`` client) from
   ``--clients`` threads at once, without projections: the server batches concurrent requests.
   Its replies are checked to equal (1) (greedy).
3. Cancellation: the latency of one real request on the idle server, then again right after
   ``--hangups`` non-streaming clients asked for long replies and hung up after 0.3 s (the
   server must drop them, not generate their tokens first).
4. With ``--monitor``: (2) with per-request axis monitoring on (one teacher-forced pass each).

Prints absolute numbers and ratios from one run, with the machine. CPU timings on a shared
machine are indicative only.
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--hangups", type=int, default=10)
    parser.add_argument("--monitor", action="store_true", help="also time axis monitoring")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    args = parser.parse_args()

    import httpx
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

    prompts = [c.input_ids for c in convs]
    generate_tokens(model, prompts[: args.clients], sampling, batch_size=args.clients)  # warm-up
    t_bat, bat = timed(lambda: generate_tokens(model, prompts, sampling, batch_size=args.clients))
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

    print(f"in-process batch={args.clients}: {t_bat:.2f} s, {n_bat} tokens", file=sys.stderr)
    t_srv, srv = run_server(None)
    print(f"server: {t_srv:.2f} s", file=sys.stderr)
    n_srv = sum(r.usage.completion_tokens for r in srv)
    tok = model.tokenizer
    same = sum(
        r.choices[0].message.content == tok.decode(t, skip_special_tokens=True).strip()
        for r, t in zip(srv, bat, strict=True)
    )

    # Cancellation: one real request, idle vs right after clients that hung up.
    app = create_app(model, name="bench")
    with background_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

        def real_request() -> float:
            t, _ = timed(
                lambda: client.chat.completions.create(
                    model="bench", messages=messages[1], max_tokens=args.max_tokens, temperature=0
                )
            )
            return t

        real_request()  # warm-up
        t_idle = min(real_request() for _ in range(2))

        def hang_up(k: int) -> None:
            body = {"model": "bench", "messages": messages[k], "max_tokens": 512, "temperature": 0}
            with contextlib.suppress(httpx.TimeoutException):
                httpx.post(url + "/chat/completions", json=body, timeout=0.3)

        hangups = [threading.Thread(target=hang_up, args=(k,)) for k in range(args.hangups)]
        for t in hangups:
            t.start()
        for t in hangups:
            t.join()
        t_after = real_request()

    rows = [
        (f"in-process generate_tokens, batch_size={args.clients}", t_bat, n_bat),
        (f"server, {args.clients} concurrent clients", t_srv, n_srv),
    ]
    if args.monitor:
        g = torch.Generator().manual_seed(0)
        axis = Direction(
            torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="random"
        )
        t_mon, mon = run_server(axis)
        rows.append(
            (
                f"server + axis monitoring, {args.clients} clients",
                t_mon,
                sum(r.usage.completion_tokens for r in mon),
            )
        )

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; model "
        f"{args.model}; {args.requests} requests x <= {args.max_tokens} new tokens, greedy"
    )
    print(f"{'run':48s} {'seconds':>8s} {'tokens':>7s} {'tok/s':>8s} {'ratio':>6s}")
    ref = n_bat / t_bat
    for name, t, n in rows:
        print(f"{name:48s} {t:8.2f} {n:7d} {n / t:8.1f} {n / t / ref:6.2f}")
    print(f"server replies equal to in-process greedy replies: {same}/{len(srv)}")
    print(
        f"one request ({args.max_tokens} tokens): idle {t_idle:.2f} s; right after "
        f"{args.hangups} clients hung up after 0.3 s: {t_after:.2f} s "
        f"(ratio {t_after / t_idle:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
