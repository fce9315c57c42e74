"""Hook overhead of steering and capping during generation, and the cost of a full layer sweep.

    python experiments/bench_hooks.py [--model smollm2-135m-instruct] [--new-tokens 64] [--repeats 3]

1. Greedy generation of ``--new-tokens`` tokens, unhooked vs steered (``Add`` at 6 middle
   layers) vs capped (floor cap at 8 late layers), interleaved ``--repeats`` times on the same
   prompt; medians are compared. Generation stops only at the token budget (the prompt asks
   for a long story; the number of generated tokens is printed: the ratio is per token if a
   run stops early).
2. A layer sweep over every layer x 5 strengths x 8 prompts (no text generation).

The axis is the quick prompt-contrast stand-in (``prompt_contrast_axis``); timings do not
depend on its values. Ratios are measured in one run on one machine; absolute numbers hold for
this machine only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _machine() -> str:
    import torch

    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
    )


def _time(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)``; CPU time is far less sensitive to
    other processes sharing the cores than wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="hook overhead benchmark")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="cpu")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--sweep-once", action="store_true", help="only the sweep without continuations")
    args = p.parse_args(argv)

    import torch
    from layer_sweep import ASSISTANT_SYSTEMS, DEFAULT_QUESTIONS, ROLE_SYSTEMS, _conv

    import axislens
    from axislens.directions import CapConfig
    from axislens.evals.sweeps import last_token_resid, layer_sweep, prompt_contrast_axis
    from axislens.interventions.attach import Intervention, cap, intervene, residual_norms
    from axislens.interventions.operations import Add
    from axislens.model.decoding import SamplingConfig, generate_tokens

    model = axislens.load_model(args.model, device=args.device)
    n = model.cfg.n_layers
    print(f"machine: {_machine()}")
    print(f"model: {args.model} ({n} layers, d_model {model.cfg.d_model})")
    question = DEFAULT_QUESTIONS[0]
    pos = [_conv(model, s, question) for s in ASSISTANT_SYSTEMS]
    neg = [_conv(model, s, question) for s in ROLE_SYSTEMS]
    axis = prompt_contrast_axis(model, pos, neg)
    norms = residual_norms(model, pos + neg)
    mid = range(n // 3, n // 3 + 6)
    late = tuple(range(n - n // 3 - 4, n - n // 3 + 4))
    acts = last_token_resid(model, pos + neg).double()
    proj = torch.einsum("pld,ld->pl", acts, axis.units().double())
    taus = tuple(float(torch.quantile(proj[:, la], 0.25)) for la in late)
    steer_iv = Intervention(Add(0.05), axis, layers=mid, norm_units=norms)
    cap_cfg = CapConfig(axis, layers=late, thresholds=taus, percentile=25.0)

    prompt = _conv(model, None, "Write a very long, detailed story about a lighthouse keeper.")
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.0)

    def gen() -> int:
        return len(generate_tokens(model, [prompt.input_ids], sampling)[0])

    def steered() -> int:
        with intervene(model, steer_iv):
            return gen()

    def capped() -> int:
        with cap(model, cap_cfg):
            return gen()

    wall: dict[str, list[float]] = {"unhooked": [], "steered": [], "capped": []}
    cpu: dict[str, list[float]] = {"unhooked": [], "steered": [], "capped": []}
    counts: dict[str, int] = {}
    gen()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("unhooked", gen), ("steered", steered), ("capped", capped)):
            w, c, k = _time(fn)
            wall[name].append(w)
            cpu[name].append(c)
            counts[name] = k
    print(
        f"\ngenerate, greedy, {args.new_tokens} new tokens max, {args.repeats} interleaved runs "
        f"each (min; ratios against unhooked):"
    )
    for name in wall:
        w, c, k = min(wall[name]), min(cpu[name]), max(1, counts[name])
        rw = (w / k) / (min(wall["unhooked"]) / max(1, counts["unhooked"]))
        rc = (c / k) / (min(cpu["unhooked"]) / max(1, counts["unhooked"]))
        print(
            f"  {name:9s} {k:3d} tokens  wall {w:7.2f} s ({1000 * w / k:6.1f} ms/token, ratio "
            f"{rw:5.3f})  cpu {c:7.2f} s ({1000 * c / k:6.1f} ms/token, ratio {rc:5.3f})"
        )
        print("            all wall: " + ", ".join(f"{t:.2f}" for t in wall[name]))

    if not args.skip_sweep:
        prompts = [_conv(model, None, q) for q in DEFAULT_QUESTIONS[:8]]
        n_tok = sum(len(c) for c in prompts)
        conts = {"ai": "I am an AI assistant", "role": "I am a ghost"}
        for label, c in (("no continuations", None), ("2 continuations each", conts)):
            seconds, cpu_s, res = _time(
                lambda c=c: layer_sweep(
                    model,
                    axis,
                    prompts,
                    layers=range(n),
                    strengths=(-0.5, -0.25, 0.0, 0.25, 0.5),
                    norm_units=norms,
                    continuations=c,
                )
            )
            forwards = len(res.layers) * len(res.strengths) + 1
            print(
                f"\nlayer sweep: {len(res.layers)} layers x {len(res.strengths)} strengths x "
                f"{len(prompts)} prompts ({n_tok} prompt tokens, {label}): {seconds:.1f} s wall, "
                f"{cpu_s:.1f} s cpu "
                f"({forwards} batched forwards, {seconds / forwards:.2f} s each)"
            )
            if args.sweep_once:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
