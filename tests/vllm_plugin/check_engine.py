"""Run by tests/integration/test_vllm_plugin.py with the vLLM venv's python (not collected by pytest).

Engine behaviours on a tiny random Llama, each against plain `transformers` with hooks:
compiled (torch.compile) against eager, the response-only rule during generation, a default
intervention for every request, in-place updates, and refusals (a model of another shape, an
unknown name, "none" where the server applies one intervention to all). Prints one JSON object.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import check_architectures as arch

ROOT = Path(sys.argv[1])


def llm(folder: Path, *, eager: bool = True, prefix_caching: bool = False):
    from axislens_vllm import routing
    from vllm import LLM

    routing._names.cache_clear()
    return LLM(
        model=str(folder), skip_tokenizer_init=True, dtype="float32", enforce_eager=eager,
        enable_prefix_caching=prefix_caching, max_model_len=128, max_num_batched_tokens=512, seed=0,
    )  # fmt: skip


def prompt_logprobs(engine, conds):
    from vllm import SamplingParams

    prompts, params = [], []
    for cond in conds:
        for ids in arch.PROMPTS:
            prompts.append({"prompt_token_ids": ids})
            params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                         extra_args={"axislens": cond} if cond else None))  # fmt: skip
    res = engine.generate(prompts, params, use_tqdm=False)
    out = []
    for c in range(len(conds)):
        out.append([
            [float(r.prompt_logprobs[i][ids[i]].logprob) for i in range(1, len(ids))]
            for r, ids in zip(res[c * len(arch.PROMPTS):(c + 1) * len(arch.PROMPTS)], arch.PROMPTS, strict=True)
        ])  # fmt: skip
    return out


def hf_logprobs(folder: Path, spec, sequences, starts) -> list[list[float]]:
    """Logprobs of sequences[j][i] for i >= starts[j] + 1 ... under hooks active at positions
    >= starts[j] (the response rule; starts 0 = every position)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    u, a, b, lo, hi = (t.to(torch.float64) for t in spec)
    rows = []
    for ids, start in zip(sequences, starts, strict=True):
        handles = []
        for la, layer in enumerate(model.model.layers):

            def hook(_m, _args, out, la=la, start=start):
                h = out[0] if isinstance(out, tuple) else out
                uk = u[0, la]
                if bool((uk != 0).any()):
                    p = h @ uk
                    coef = (
                        a[0, la] * p
                        + b[0, la]
                        + torch.relu(lo[0, la] - p)
                        - torch.relu(p - hi[0, la])
                    )
                    mask = (torch.arange(h.shape[1]) >= start).to(h.dtype).view(1, -1)
                    h = h + (coef * mask).unsqueeze(-1) * uk
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handles.append(layer.register_forward_hook(hook))
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        rows.append([float(lp[i - 1, ids[i]]) for i in range(1, len(ids))])
        for h in handles:
            h.remove()
    return rows


def half_spec(folder: Path):
    """A floor at layer 1 and a ceiling at layer 2, each at the median projection of the
    prompts' tokens (unintervened): they fire on about half of them."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(5)
    u = torch.nn.functional.normalize(torch.randn(1, arch.N_LAYERS, arch.D, generator=g), dim=-1)
    u[:, 0] = 0
    seen: dict[int, list[torch.Tensor]] = {1: [], 2: []}
    handles = [
        model.model.layers[la].register_forward_hook(
            lambda _m, _a, out, la=la: seen[la].append(
                (out[0] if isinstance(out, tuple) else out)[0] @ u[0, la].double()
            )
        )
        for la in (1, 2)
    ]
    with torch.no_grad():
        for ids in arch.PROMPTS:
            model(torch.tensor([ids]))
    for h in handles:
        h.remove()
    med = {la: float(torch.cat(v).median()) for la, v in seen.items()}
    inf = math.inf
    return (u, torch.zeros(1, arch.N_LAYERS), torch.zeros(1, arch.N_LAYERS),
            torch.tensor([[-inf, med[1], -inf]]), torch.tensor([[inf, inf, med[2]]]))  # fmt: skip


def fire_reference(folder: Path, spec) -> tuple[dict[str, int], dict[str, int]]:
    """Per layer: prompt tokens the cap moves under plain HF hooks, and tokens within 1e-4 of a
    threshold (where float32 and float64 may disagree)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    u, a, b, lo, hi = (t.to(torch.float64) for t in spec)
    fires: dict[str, int] = {}
    near: dict[str, int] = {}
    handles = []
    for la, layer in enumerate(model.model.layers):
        if not bool((u[0, la] != 0).any()):
            continue

        def hook(_m, _args, out, la=la):
            h = out[0] if isinstance(out, tuple) else out
            uk = u[0, la]
            p = h @ uk
            floor, ceiling = torch.relu(lo[0, la] - p), torch.relu(p - hi[0, la])
            key = str(la)
            fires[key] = fires.get(key, 0) + int(((floor + ceiling) > 0).sum())
            close = ((p - lo[0, la]).abs() < 1e-4) | ((p - hi[0, la]).abs() < 1e-4)
            near[key] = near.get(key, 0) + int(close.sum())
            h = h + (a[0, la] * p + b[0, la] + floor - ceiling).unsqueeze(-1) * uk
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handles.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        for ids in arch.PROMPTS:
            model(torch.tensor([ids]))
    return fires, near


def cap_spec(level: float):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, arch.N_LAYERS, arch.D, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)
    v[:, 0] = 0
    inf = math.inf
    return (v, torch.zeros(1, arch.N_LAYERS), torch.zeros(1, arch.N_LAYERS),
            torch.tensor([[-inf, level, level]]), torch.full((1, arch.N_LAYERS), inf))  # fmt: skip


def main() -> None:
    from axislens_vllm import update_engine, write_spec
    from vllm import SamplingParams

    out: dict[str, object] = {}
    folder, files = ROOT / "llama" / "model", ROOT / "llama" / "interventions"
    folder.mkdir(parents=True, exist_ok=True)
    files.mkdir(exist_ok=True)
    arch.make_model("LlamaForCausalLM", folder)
    sp = arch.specs(files)
    write_spec(files / "cap_response.safetensors", *sp["cap"], positions="response")
    os.environ["AXISLENS_VLLM_INTERVENTIONS"] = ",".join(
        f"{n}={files / f'{n}.safetensors'}" for n in ("cap", "steer", "cap_response")
    )
    os.environ.pop("AXISLENS_VLLM_DEFAULT", None)
    all_pos = [0] * len(arch.PROMPTS)
    ref_cap = hf_logprobs(folder, sp["cap"], arch.PROMPTS, all_pos)

    # compiled against eager, mixed batch
    t0 = time.monotonic()
    engine = llm(folder, eager=False)
    compiled = prompt_logprobs(engine, [None, "cap", "steer"])
    out["compile_seconds"] = round(time.monotonic() - t0, 1)
    out["compiled_cap_vs_ref"] = arch.maxdiff(compiled[1], ref_cap)
    out["compiled_steer_vs_ref"] = arch.maxdiff(compiled[2], arch.reference(folder, sp["steer"]))
    out["compiled_stock_vs_ref"] = arch.maxdiff(compiled[0], arch.reference(folder, None))

    # response rule during greedy generation, teacher-forced reference on the generated tokens
    params = [SamplingParams(max_tokens=8, temperature=0.0, logprobs=0, ignore_eos=True,
                             extra_args={"axislens": c} if c else None) for c in ("cap_response", None)]  # fmt: skip
    gen = engine.generate([{"prompt_token_ids": arch.PROMPTS[0]}] * 2, params, use_tqdm=False)
    seq = [arch.PROMPTS[0] + list(g.outputs[0].token_ids) for g in gen]
    plen = len(arch.PROMPTS[0])
    ref_resp = hf_logprobs(folder, sp["cap"], [seq[0]], [plen])[0][plen - 1 :]
    got_resp = [
        float(lp[t].logprob)
        for lp, t in zip(gen[0].outputs[0].logprobs, gen[0].outputs[0].token_ids, strict=True)
    ]
    out["response_rule_vs_ref"] = max(abs(x - y) for x, y in zip(got_resp, ref_resp, strict=True))
    ref_all = hf_logprobs(folder, sp["cap"], [seq[0]], [0])[0][plen - 1 :]
    out["response_vs_all_rule_ref"] = max(
        abs(x - y) for x, y in zip(ref_all, ref_resp, strict=True)
    )

    # in-place update of "cap" to another level
    write_spec(files / "cap2.safetensors", *cap_spec(1.5), positions="all")
    update_engine(engine, "cap", str(files / "cap2.safetensors"))
    updated = prompt_logprobs(engine, ["cap"])[0]
    out["updated_vs_ref"] = arch.maxdiff(
        updated, hf_logprobs(folder, cap_spec(1.5), arch.PROMPTS, all_pos)
    )
    out["updated_vs_old"] = arch.maxdiff(updated, ref_cap)
    try:
        engine.generate([{"prompt_token_ids": [1, 2]}],
                        SamplingParams(max_tokens=1, extra_args={"axislens": "nope"}), use_tqdm=False)  # fmt: skip
        out["unknown_name_error"] = None
    except Exception as e:
        out["unknown_name_error"] = f"{type(e).__name__}: {e}"
    del engine

    # one default intervention for every request (static mode)
    os.environ["AXISLENS_VLLM_INTERVENTIONS"] = f"cap={files / 'cap.safetensors'}"
    os.environ["AXISLENS_VLLM_DEFAULT"] = "cap"
    engine = llm(folder)
    out["default_vs_ref"] = arch.maxdiff(prompt_logprobs(engine, [None])[0], ref_cap)
    try:
        prompt_logprobs(engine, ["none"])
        out["none_in_static_error"] = None
    except Exception as e:
        out["none_in_static_error"] = f"{type(e).__name__}: {e}"
    del engine

    # debug mode: per-layer fire counts against the reference's, over the prompts' tokens
    os.environ["AXISLENS_VLLM_INTERVENTIONS"] = (
        f"cap={files / 'cap.safetensors'},steer={files / 'steer.safetensors'}"
    )
    os.environ.pop("AXISLENS_VLLM_DEFAULT", None)
    os.environ["AXISLENS_VLLM_DEBUG"] = "1"
    from axislens_vllm import fire_counts

    half = half_spec(folder)
    write_spec(files / "half.safetensors", *half)
    os.environ["AXISLENS_VLLM_INTERVENTIONS"] += f",half={files / 'half.safetensors'}"
    engine = llm(folder)
    prompt_logprobs(engine, ["half", None, "steer"])  # one forward over the prompts (max_tokens=1)
    got = fire_counts(engine)
    out["fires"] = {str(la): c["half"] for la, c in got.items()}
    out["fires_steer"] = sum(c["steer"] for c in got.values())
    out["fires_ref"], out["fires_near"] = fire_reference(folder, half)
    del engine
    os.environ.pop("AXISLENS_VLLM_DEBUG")

    # per-request routing with prefix caching on is refused at start
    try:
        llm(folder, prefix_caching=True)
        out["prefix_caching_error"] = None
    except Exception as e:
        out["prefix_caching_error"] = f"{type(e).__name__}: {e}"

    # a model of another shape is refused at load
    bad = (torch.nn.functional.normalize(torch.randn(1, arch.N_LAYERS, 64), dim=-1),
           *(torch.zeros(1, arch.N_LAYERS) for _ in range(2)),
           torch.full((1, arch.N_LAYERS), -math.inf), torch.full((1, arch.N_LAYERS), math.inf))  # fmt: skip
    write_spec(files / "wrong.safetensors", *bad)
    os.environ["AXISLENS_VLLM_INTERVENTIONS"] = f"wrong={files / 'wrong.safetensors'}"
    os.environ["AXISLENS_VLLM_DEFAULT"] = "wrong"
    try:
        llm(folder)
        out["mismatch_error"] = None
    except Exception as e:
        out["mismatch_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
