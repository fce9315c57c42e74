"""Peak memory of a generation run through ``OpenAIBackend`` at two sizes: it must stay flat.

    python experiments/engine_memory.py --engine-url http://127.0.0.1:8000/v1 --engine-model smol

Runs ``generate_responses`` (SmolLM2 bridge for the chat template; generation on the engine)
into fresh stores of ``--small`` and ``--large`` items (20 roles x 5 prompts x N questions,
``--tokens`` new tokens each), each in its own subprocess, and prints each one's peak RSS and
the growth per 1,000 items. Only the in-flight window and the current chunk are held besides the
returned records (the responses themselves).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def child(url: str, name: str, items: int, tokens: int, out: str) -> None:
    import axislens
    from axislens.collection.engines import OpenAIBackend
    from axislens.collection.responses import generate_responses
    from axislens.store import ActivationStore

    model = axislens.load_model("smollm2-135m-instruct")
    personas = axislens.load_personas()
    roles = [r.name for r in personas.spread_roles()[:20]]
    store = ActivationStore.create(out, {"model": {"model_id": "smollm2-135m-instruct"}})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    recs = generate_responses(
        model,
        personas,
        store,
        roles=roles,
        n_prompts=5,
        n_questions=items // 100,
        include_default=False,
        max_new_tokens=tokens,
        backend=OpenAIBackend(url, name),
        progress=False,
    )
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    toks = sum(len(model.tokenizer(r.messages[-1]["content"]).input_ids) for r in recs)
    print(
        json.dumps(
            {
                "items": len(recs),
                "seconds": dt,
                "tokens": toks,
                "rss_before_mib": base / 1024,
                "peak_rss_mib": peak / 1024,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engine-url", required=True)
    p.add_argument("--engine-model", default="smol")
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=1000)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.engine_url, args.engine_model, args.items, args.tokens, args.out)
        return
    got = {}
    for n in (args.small, args.large):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--child", "--engine-url", args.engine_url]
            cmd += ["--engine-model", args.engine_model, "--items", str(n)]
            cmd += ["--tokens", str(args.tokens), "--out", f"{tmp}/store"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got[n] = json.loads(out.strip().splitlines()[-1])
            r = got[n]
            print(
                f"{r['items']:>5} items: {r['tokens']} tokens in {r['seconds']:.0f} s "
                f"({r['tokens'] / r['seconds']:.1f} tok/s); RSS after loading "
                f"{r['rss_before_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    a, b = got[args.small], got[args.large]
    growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) / ((args.large - args.small) / 1000)
    print(f"peak RSS growth: {growth:+.1f} MiB per 1,000 items")


if __name__ == "__main__":
    main()
