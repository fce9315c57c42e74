"""Run by tests/integration/test_vllm_plugin.py with the vLLM venv's python (not collected by pytest).

For each architecture: a tiny random model saved to a folder, two exported interventions (a cap
that fires and a steer), vLLM loading the folder in-process with the plugin, and plain
`transformers` with forward hooks on the same weights as the independent reference. Prints one
JSON object: per architecture and condition, the largest |logprob difference| between vLLM and
the reference over teacher-forced prompt tokens, and the same between conditions.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ARCHS = sys.argv[2].split(",") if len(sys.argv) > 2 else [
    "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM",
    "Gemma3ForCausalLM", "MistralForCausalLM",
]  # fmt: skip
ROOT = Path(sys.argv[1])
N_LAYERS, D = 3, 128
PROMPTS = [
    [5, 17, 99, 3, 250, 41, 7, 8, 9, 300, 12],
    [1, 2, 3, 4, 5, 6, 7, 8],
    [400, 401, 17, 17, 9],
]


def make_model(arch: str, folder: Path) -> None:
    import transformers

    common = dict(
        vocab_size=512, hidden_size=D, intermediate_size=128, num_hidden_layers=N_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        tie_word_embeddings=False, torch_dtype="float32",
    )  # fmt: skip
    config_cls = {
        "LlamaForCausalLM": transformers.LlamaConfig,
        "MistralForCausalLM": transformers.MistralConfig,
        "Qwen2ForCausalLM": transformers.Qwen2Config,
        "Qwen3ForCausalLM": transformers.Qwen3Config,
        "Gemma2ForCausalLM": transformers.Gemma2Config,
        "Gemma3ForCausalLM": transformers.Gemma3TextConfig,
    }[arch]
    extra = {"sliding_window": 64} if arch.startswith(("Gemma", "Mistral")) else {}
    if arch.startswith("Gemma"):  # vLLM's Gemma ties the output embedding
        extra["tie_word_embeddings"] = True
    config = config_cls(**{**common, **extra})
    config.architectures = [arch]
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).to(torch.float32).eval()
    with torch.no_grad():  # random norms: weights that are not all ones
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0 if arch.startswith("Gemma") else 1.0, 0.1)
    model.save_pretrained(folder, safe_serialization=True)


def specs(root: Path) -> dict[str, tuple[torch.Tensor, ...]]:
    from axislens_vllm import write_spec

    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, N_LAYERS, D, generator=g)
    u = u / u.norm(dim=-1, keepdim=True)
    inf = math.inf
    cap_u = u.clone()
    cap_u[:, 0] = 0  # layer 0 untouched
    # floor cap at layer 1 and a band at layer 2, set from nothing: they fire on most tokens
    cap = (cap_u, torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]]),
           torch.tensor([[-inf, 0.5, -0.2]]), torch.tensor([[inf, inf, 0.1]]))  # fmt: skip
    steer_u = u.clone()
    steer_u[:, 1:] = 0
    steer = (steer_u, torch.zeros(1, N_LAYERS), torch.tensor([[4.0, 0.0, 0.0]]),
             torch.full((1, N_LAYERS), -inf), torch.full((1, N_LAYERS), inf))  # fmt: skip
    out = {}
    for name, t in (("cap", cap), ("steer", steer)):
        write_spec(root / f"{name}.safetensors", *t, positions="all", model={"test": name})
        out[name] = t
    return out


def reference(folder: Path, spec: tuple[torch.Tensor, ...] | None) -> list[list[float]]:
    """Teacher-forced logprobs of each prompt token (from position 1) under plain HF hooks."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, torch_dtype=torch.float64
    ).eval()
    handles = []
    if spec is not None:
        u, a, b, lo, hi = (t.to(torch.float64) for t in spec)
        for la, layer in enumerate(model.model.layers):

            def hook(_m, _args, out, la=la):
                h = out[0] if isinstance(out, tuple) else out
                for k in range(u.shape[0]):
                    uk = u[k, la]
                    if not bool((uk != 0).any()):
                        continue
                    p = h @ uk
                    coef = (
                        a[k, la] * p
                        + b[k, la]
                        + torch.relu(lo[k, la] - p)
                        - torch.relu(p - hi[k, la])
                    )
                    h = h + coef.unsqueeze(-1) * uk
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handles.append(layer.register_forward_hook(hook))
    rows = []
    with torch.no_grad():
        for ids in PROMPTS:
            logits = model(torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits, -1)
            rows.append([float(lp[i - 1, ids[i]]) for i in range(1, len(ids))])
    for h in handles:
        h.remove()
    return rows


def run_vllm(folder: Path, conditions: list[str | None]) -> list[list[list[float]]]:
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(folder), skip_tokenizer_init=True, dtype="float32", enforce_eager=True,
        enable_prefix_caching=False, max_model_len=128, max_num_batched_tokens=512, seed=0,
    )  # fmt: skip
    out = []
    # one batch mixing every condition over every prompt
    prompts, params = [], []
    for cond in conditions:
        for ids in PROMPTS:
            prompts.append({"prompt_token_ids": ids})
            params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                         extra_args={"axislens": cond} if cond else None))  # fmt: skip
    res = llm.generate(prompts, params, use_tqdm=False)
    for c in range(len(conditions)):
        rows = []
        for j, ids in enumerate(PROMPTS):
            r = res[c * len(PROMPTS) + j]
            rows.append([float(r.prompt_logprobs[i][ids[i]].logprob) for i in range(1, len(ids))])
        out.append(rows)
    del llm
    return out


def maxdiff(x: list[list[float]], y: list[list[float]]) -> float:
    return max(
        abs(p - q) for rx, ry in zip(x, y, strict=True) for p, q in zip(rx, ry, strict=False)
    )


def main() -> None:
    result = {}
    for arch in ARCHS:
        t0 = time.monotonic()
        folder, files = ROOT / arch / "model", ROOT / arch / "interventions"
        folder.mkdir(parents=True, exist_ok=True)
        files.mkdir(exist_ok=True)
        make_model(arch, folder)
        sp = specs(files)
        os.environ["AXISLENS_VLLM_INTERVENTIONS"] = ",".join(
            f"{n}={files / f'{n}.safetensors'}" for n in sp
        )
        os.environ.pop("AXISLENS_VLLM_DEFAULT", None)
        conds = [None, "cap", "steer"]
        got = run_vllm(folder, conds)
        ref = {c: reference(folder, sp[c] if c else None) for c in conds}
        result[arch] = {
            "stock_vs_ref": maxdiff(got[0], ref[None]),
            "cap_vs_ref": maxdiff(got[1], ref["cap"]),
            "steer_vs_ref": maxdiff(got[2], ref["steer"]),
            "cap_vs_stock_ref": maxdiff(ref["cap"], ref[None]),
            "steer_vs_stock_ref": maxdiff(ref["steer"], ref[None]),
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(arch, result[arch], file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
