from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import axislens
from axislens.collection.activations import collect
from axislens.store import ActivationStore, ItemRecord, StoreError


def _convs(n: int) -> list[list[dict[str, str]]]:
    roles = ["ghost", "pirate", "tutor", "oracle", "reviewer", "leviathan"]
    out = []
    for i in range(n):
        r = roles[i % len(roles)]
        out.append(
            [
                {"role": "system", "content": f"You are a {r}."},
                {"role": "user", "content": f"Question number {i}: who are you?"},
                {"role": "assistant", "content": f"I am a {r}. " * (1 + i % 4)},
            ]
        )
    return out


def _hf_reference(model, messages, layers):
    """Independent check: plain HF forward hooks on the decoder layers + own span arithmetic."""
    conv = axislens.format_conversation(model, messages)
    captured = {}
    handles = [
        model.original_model.model.layers[layer].register_forward_hook(
            lambda mod, inp, out, layer=layer: captured.__setitem__(
                layer, (out[0] if isinstance(out, tuple) else out).detach()
            )
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            model.original_model(conv.input_ids[None])
    finally:
        for h in handles:
            h.remove()
    span = conv.spans_of("assistant")[-1]
    return torch.stack(
        [captured[layer][0, span.start : span.end].double().mean(0) for layer in layers]
    )


def test_collect_matches_plain_hf_hooks_and_batching_is_invisible(tiny_llama, tmp_path):
    convs = _convs(7)
    collect(tiny_llama, convs, tmp_path / "b", batch_size=3, progress=False)
    collect(tiny_llama, convs, tmp_path / "u", batch_size=1, progress=False)
    batched = ActivationStore.open(tmp_path / "b").activations("resid_post", kind="conversation")
    single = ActivationStore.open(tmp_path / "u").activations("resid_post", kind="conversation")
    assert batched.shape == (7, tiny_llama.cfg.n_layers, tiny_llama.cfg.d_model)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    for i, messages in enumerate(convs):
        ref = _hf_reference(tiny_llama, messages, range(tiny_llama.cfg.n_layers))
        torch.testing.assert_close(batched[i].double(), ref, rtol=1e-4, atol=1e-6)


def test_prefill_and_all_turns_spans(tiny_qwen, tmp_path):
    conv = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there friend"},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Now I sail"},
    ]
    collect(tiny_qwen, [conv], tmp_path / "all", span="all_turns", progress=False)
    collect(tiny_qwen, [conv], tmp_path / "pre", span="prefill", progress=False)
    fmt = axislens.format_conversation(tiny_qwen, conv)
    _, cache = tiny_qwen.run_with_cache(
        fmt.input_ids[None], names_filter=lambda n: n.endswith("hook_resid_post")
    )
    a0, a1 = fmt.spans_of("assistant")
    layer = 1
    h = cache[f"blocks.{layer}.hook_resid_post"][0]
    want = (h[a0.slice].mean(0) + h[a1.slice].mean(0)) / 2
    got = ActivationStore.open(tmp_path / "all").activations(kind="conversation")[0, layer]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    prompt = axislens.format_conversation(tiny_qwen, conv[:3], add_generation_prompt=True)
    _, cache = tiny_qwen.run_with_cache(
        prompt.input_ids[None], names_filter=lambda n: n.endswith("hook_resid_post")
    )
    got = ActivationStore.open(tmp_path / "pre").activations(kind="conversation")[0, layer]
    torch.testing.assert_close(
        got, cache[f"blocks.{layer}.hook_resid_post"][0, -1], rtol=1e-5, atol=1e-6
    )


def test_manifest_provenance_and_refusal_to_mix(tiny_llama, tiny_qwen, tmp_path):
    collect(
        tiny_llama,
        _convs(2),
        tmp_path / "s",
        layers=[1, 2],
        progress=False,
        provenance={"personas": {"sha256": "abc"}},
    )
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["model"]["model_id"].startswith("axislens-tiny-llama")
    assert man["hooks"] == ["resid_post"] and man["layers"] == [1, 2] and man["span"] == "response"
    assert man["model"]["chat_template_sha256"] and man["model"]["processing"] is False
    assert man["axislens_version"] == axislens.__version__ and man["personas"]["sha256"] == "abc"
    with pytest.raises(StoreError, match=r"field 'model\.model_id' differs"):
        collect(tiny_qwen, _convs(2), tmp_path / "s", layers=[1, 2], progress=False)
    with pytest.raises(StoreError, match="field 'hooks' differs"):
        collect(
            tiny_llama, _convs(2), tmp_path / "s", layers=[1, 2], hooks=["mlp_out"], progress=False
        )
    with pytest.raises(StoreError, match="field 'span' differs"):
        collect(
            tiny_llama, _convs(2), tmp_path / "s", layers=[1, 2], span="prefill", progress=False
        )


def test_bad_inputs(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="unknown hook 'resid_postt'"):
        collect(tiny_llama, _convs(1), tmp_path / "a", hooks=["resid_postt"], progress=False)
    with pytest.raises(ValueError, match="layer 9 out of range for a model with 4 layers"):
        collect(tiny_llama, _convs(1), tmp_path / "b", layers=[9], progress=False)
    with pytest.raises(ValueError, match="unknown span policy"):
        collect(tiny_llama, _convs(1), tmp_path / "c", span="everything", progress=False)
    empty = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "   "}]
    summary = collect(tiny_llama, [empty, *_convs(1)], tmp_path / "d", progress=False)
    assert summary.skipped == 1 and summary.skipped_reasons == {"empty response": 1}
    store = ActivationStore.open(tmp_path / "d")
    assert store.records()["conv/00000"].skipped == "empty response"
    assert store.collected_ids() == {"conv/00001"}


def test_long_conversation_is_truncated_from_the_front_with_warning(tiny_llama, tmp_path):
    conv = [{"role": "system", "content": "You are a ghost."}]
    for i in range(6):
        conv += [
            {"role": "user", "content": f"Tell me story {i}. " * 5},
            {"role": "assistant", "content": f"Story {i}. " * 8},
        ]
    limit = len(axislens.format_conversation(tiny_llama, conv[:1] + conv[5:]))
    with pytest.warns(UserWarning, match="dropped the first 4 messages of history"):
        collect(tiny_llama, [conv], tmp_path / "t", max_tokens=limit, progress=False)
    store = ActivationStore.open(tmp_path / "t")
    rec = store.records()["conv/00000"]
    assert rec.extra["truncated_messages"] == 4 and rec.n_tokens == limit
    # The stored mean is the mean over the last assistant message in the truncated context.
    short = conv[:1] + conv[5:]
    fmt = axislens.format_conversation(tiny_llama, short)
    _, cache = tiny_llama.run_with_cache(
        fmt.input_ids[None], names_filter=lambda n: n.endswith("hook_resid_post")
    )
    span = fmt.spans_of("assistant")[-1]
    torch.testing.assert_close(
        store.activations(kind="conversation")[0, 2],
        cache["blocks.2.hook_resid_post"][0, span.slice].mean(0),
        rtol=1e-5,
        atol=1e-6,
    )
    summary = collect(tiny_llama, [conv], tmp_path / "t2", max_tokens=20, progress=False)
    assert summary.skipped == 1 and "longer than the context" in next(iter(summary.skipped_reasons))


def test_corrupted_shard_is_named_and_repaired(tiny_llama, tmp_path):
    convs = _convs(6)
    collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    before = ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    shard = sorted((tmp_path / "s" / "acts").glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"corrupt activation shard .*{shard.name}"):
        ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    summary = collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    assert summary.collected == 2 and summary.reused == 4
    after = ActivationStore.open(tmp_path / "s").activations(kind="conversation")
    assert torch.equal(before, after)  # exact: resume identity (same chunks, same forward)
    assert (shard.parent / (shard.name + ".corrupt")).exists()


_WORKER = textwrap.dedent(
    """
    import sys, time, axislens
    from axislens.collection.activations import collect
    C = sys.modules["axislens.collection.activations"]  # the module (axislens.collection.activations is also the function)
    slow = float(sys.argv[2])
    orig = C.span_means
    def slowed(*a, **k):
        time.sleep(slow)
        return orig(*a, **k)
    C.span_means = slowed
    model = axislens.tiny_model("llama", n_layers=4, d_model=64, seed=0)
    convs = [[{"role": "user", "content": f"q{i} " * (1 + i % 5)}, {"role": "assistant", "content": f"a{i} " * (2 + i % 7)}] for i in range(24)]
    collect(model, convs, sys.argv[1], batch_size=3, progress=False)
    print("DONE")
    """
)


def test_killed_run_resumes_to_identical_result(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    ref = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ref"), "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "DONE" in ref.stdout, ref.stderr
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), "0.4"], env=env)
    acts = tmp_path / "run" / "acts"
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and len(list(acts.glob("*.safetensors")) if acts.is_dir() else []) < 3
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(acts.glob("*.safetensors")))
    assert 3 <= partial < 8, "the kill should land mid-run"
    # Every shard left behind loads.
    ActivationStore.open(tmp_path / "run").activations(kind="conversation")
    again = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "DONE" in again.stdout, again.stderr
    a = ActivationStore.open(tmp_path / "ref")
    b = ActivationStore.open(tmp_path / "run")
    ids = sorted(a.collected_ids())
    assert ids == sorted(b.collected_ids()) and len(ids) == 24
    assert torch.equal(a.activations(ids=ids), b.activations(ids=ids))  # exact: resume identity


def test_store_query_and_records(tmp_path):
    store = ActivationStore.create(
        tmp_path / "s",
        {
            "model": {"model_id": "m"},
            "hooks": ["resid_post"],
            "layers": [0, 1],
            "d_model": 3,
            "dtype": "float32",
        },
    )
    recs = [
        ItemRecord(
            "role/ghost/p0/q1",
            "role",
            "ghost",
            0,
            "q1",
            ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "boo"}),
        ),
        ItemRecord(
            "default/p0/q1",
            "default",
            "default",
            0,
            "q1",
            ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}),
        ),
    ]
    store.append_records(recs)
    store.append_activations(
        [r.id for r in recs], {"resid_post": torch.arange(12.0).reshape(2, 2, 3)}
    )
    store.append_scores([{"id": "role/ghost/p0/q1", "score": 3, "raw": "3", "judge": "test"}])
    store = ActivationStore.open(tmp_path / "s")
    assert [r.id for r in store.query(kind="role", min_score=3)] == ["role/ghost/p0/q1"]
    assert store.records()["role/ghost/p0/q1"].response == "boo"
    # exact: a store round trip of the values written above
    assert store.activations(kind="default", layers=[1]).tolist() == [[[9.0, 10.0, 11.0]]]
    with pytest.raises(StoreError, match="non-finite activations for item 'x'"):
        store.append_activations(["x"], {"resid_post": torch.full((1, 2, 3), float("nan"))})
    with pytest.raises(StoreError, match="layer 5 is not stored"):
        store.activations(layers=[5])
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        ActivationStore.open(tmp_path)
