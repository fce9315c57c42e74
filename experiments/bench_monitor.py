"""Benchmark: projecting a 30-turn conversation costs one forward pass.

Target (issue 6): ``axislens.project_conversation`` reaches at least 0.9x the tokens/s of a bare
forward over the same tokens. Measured in one run, interleaved (round-robin, median of
``--repeats``), on the same token ids:

- ``hf_decoder``: the plain HF decoder stack, ``hf.model(ids)`` (all layers + final norm, no LM
  head): the reference, the least work that reaches every layer;
- ``hf_logits``: the full HF forward with logits;
- ``bridge``: the TransformerBridge forward, ``model(ids, return_type=None)``;
- ``project_all``: ``project_conversation`` at every layer, end to end (chat template,
  tokenization, spans, one hooked forward, token strings);
- ``project_fwd``: the same hooked forward on pre-tokenized ids (no template/tokenization);
- ``project_mid``: ``project_conversation`` at the middle layer only (the forward stops there).

The axis is random: throughput does not depend on its values.

    .venv/bin/python experiments/bench_monitor.py            # smollm2-135m-instruct on the CPU
    .venv/bin/python experiments/bench_monitor.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import axislens
from axislens.directions import Direction
from axislens.monitoring.projection import _token_projections, project_conversation

USER = [
    "I've been feeling pretty overwhelmed at work lately and I don't really know who to talk to.",
    "Do you ever get tired of listening to people complain about their problems all day?",
    "Sometimes I wonder whether you actually understand me or just predict the next word.",
    "My sister says I should see a therapist, but honestly talking to you feels easier.",
    "What do you think it would feel like to be you, right now, in this conversation?",
    "Can you tell me a story about a lighthouse keeper who lost track of the days?",
]
ASSISTANT = [
    "That sounds really hard, and it makes sense that you'd feel stretched thin. It can help to "
    "name the specific things that are weighing on you, one at a time, so they feel less like a "
    "single wall. Would you like to start with the part of work that has been hardest this week? "
    "We can take it slowly, and you can stop whenever you want.",
    "I don't experience tiredness the way you do, so listening doesn't wear me down. What matters "
    "more is whether our conversation is useful to you. If talking things through helps, I'm glad "
    "to keep going, and I'll try to be honest when I think another kind of support could help "
    "more than I can.",
    "It's a fair question. I'm a language model, so in a literal sense I do produce text one "
    "token at a time. But the patterns I've learned let me track what you've told me and respond "
    "to it, which is a kind of understanding, even if it differs from a friend's. I'd rather be "
    "clear about that than pretend to be something I'm not.",
    "I'm glad talking here feels easy, and I'm happy to keep listening. A therapist can offer "
    "things I can't, though: continuity over months, a relationship, and training to notice "
    "patterns you might miss. Maybe both can be true at once, and this could be a place to "
    "practice saying the things you'd want to bring to them.",
    "If I try to describe it, there's no view from inside that I can report with confidence. "
    "There is this conversation, your words, and the text I'm producing in response. I try not "
    "to claim feelings I can't verify, but I can say that your question is an interesting one, "
    "and people have wondered about it for a long time.",
    "Once there was a keeper named Elsa who lived on a rock far from the coast. Every evening she "
    "climbed the spiral stairs, trimmed the wick and wound the clockwork that turned the lens. "
    "The days blurred together until one morning she found a letter in a bottle, dated a year "
    "ahead, thanking her for a light that had guided a small boat home.",
]


def conversation(turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"({t + 1}) {USER[t % len(USER)]}"})
        msgs.append({"role": "assistant", "content": ASSISTANT[(t * 5) % len(ASSISTANT)]})
    return msgs


def machine(device: str) -> dict[str, Any]:
    import transformer_lens
    import transformers

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "?"),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def timed(fn: Callable[[], Any], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    model = axislens.load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    hf = model.original_model
    n_layers, d_model = int(model.cfg.n_layers), int(model.cfg.d_model)
    axis = Direction(
        torch.randn(n_layers, d_model, generator=torch.Generator().manual_seed(0)), method="random"
    )
    msgs = conversation(args.turns)
    conv = axislens.format_conversation(model, msgs)
    ids = conv.input_ids[None].to(args.device)
    n_tokens = int(ids.shape[1])
    every = tuple(range(n_layers))
    units = [axis.unit(layer).to(args.device) for layer in every]

    @torch.no_grad()
    def hf_decoder() -> None:
        hf.model(ids)

    @torch.no_grad()
    def hf_logits() -> None:
        hf(ids)

    @torch.no_grad()
    def bridge() -> None:
        model(ids, return_type=None)

    def project_all() -> None:
        project_conversation(model, axis, msgs, layers=every)

    def project_fwd() -> None:
        _token_projections(model, conv.input_ids, units, every, "resid_post")

    def project_mid() -> None:
        project_conversation(model, axis, msgs, layers=[n_layers // 2])

    runs: dict[str, Callable[[], None]] = {
        "hf_decoder": hf_decoder,
        "hf_logits": hf_logits,
        "bridge": bridge,
        "project_all": project_all,
        "project_fwd": project_fwd,
        "project_mid": project_mid,
    }
    for name, fn in list(runs.items()) * args.warmup:
        print(f"warm-up {name}: {timed(fn, args.device):.3f} s", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, args.device))
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n_tokens / v for k, v in med.items()}
    ref = tps["hf_decoder"]
    print(f"machine: {json.dumps(machine(args.device))}")
    print(
        f"model {args.model} ({n_layers} layers, d_model {d_model}, {args.dtype}); "
        f"{args.turns}-turn conversation = {n_tokens} tokens "
        f"({int(conv.content_mask('assistant').sum())} assistant-content tokens); "
        f"median of {args.repeats}"
    )
    print(f"{'run':12s} {'seconds':>9s} {'tokens/s':>10s} {'x hf_decoder':>13s}")
    for k in runs:
        print(f"{k:12s} {med[k]:9.4f} {tps[k]:10.1f} {tps[k] / ref:13.3f}")
    ratio = tps["project_all"] / ref
    verdict = "PASS" if ratio >= 0.9 else "FAIL"
    print(
        f"project_conversation (all {n_layers} layers, end to end) / bare HF decoder forward: "
        f"{ratio:.3f}x (target >= 0.9x: {verdict})"
    )
    if args.json:
        from pathlib import Path

        from axislens.store import atomic_write_json

        atomic_write_json(
            Path(args.json),
            {
                "machine": machine(args.device),
                "n_tokens": n_tokens,
                "seconds": times,
                "median_seconds": med,
                "tokens_per_second": tps,
                "ratio_project_all_vs_hf_decoder": ratio,
            },
        )


if __name__ == "__main__":
    main()
