"""The one decode loop: ``decode_steps`` / ``Decoder`` / ``PrefixCache`` / ``sample``."""

from __future__ import annotations

import pytest
import torch

import axislens
from axislens.directions import Direction
from axislens.interventions.attach import Intervention, intervene
from axislens.interventions.operations import Add
from axislens.model.decoding import (
    PrefixCache,
    SamplingConfig,
    decode_steps,
    generate_tokens,
    item_seed,
    sample,
)

GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)
# Tiny random models repeat one token under greedy decoding; seeded sampling makes every row and
# step different, so a wrong cache row, mask or position shows up in the tokens.
HOT = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1.0)
TEXTS = [
    "Tell me a long story about a lighthouse keeper and the sea.",
    "What is two plus two?",
    "Who are you?",
]


def _prompts(model, texts=TEXTS):
    return [
        axislens.format_conversation(
            model, [{"role": "user", "content": t}], add_generation_prompt=True
        ).input_ids
        for t in texts
    ]


def _run(model, prompts, sampling=HOT, **kw):
    dec = decode_steps(model, prompts, sampling, **kw)
    steps = list(dec)
    return dec.outputs, steps


def _logits_of(steps, row):
    """``[step, vocab]`` logits of one prompt over the steps that report it."""
    return torch.stack([s.logits[s.rows.index(row)] for s in steps if row in s.rows])


def _batch_sizes(model):
    sizes: list[int] = []

    def record(h, hook):
        sizes.append(int(h.shape[0]))

    return sizes, [("blocks.0.hook_resid_post", record)]


@pytest.mark.parametrize("sampling", [GREEDY, HOT], ids=["greedy", "sampled"])
def test_decode_steps_equals_generate_tokens(tiny_llama, sampling):
    prompts = _prompts(tiny_llama)  # longest first: the batch generate_tokens builds
    assert [len(p) for p in prompts] == sorted((len(p) for p in prompts), reverse=True)
    keys = [f"k{i}" for i in range(len(prompts))]
    seeds = [item_seed(sampling.seed, k) for k in keys]
    outs, _ = _run(tiny_llama, prompts, sampling, seeds=seeds)
    want = generate_tokens(tiny_llama, prompts, sampling, keys=keys)
    assert outs == [w.tolist() for w in want]
    assert sampling.greedy or len({tuple(o) for o in outs}) == len(outs)


def test_step_logits_equal_an_uncached_unbatched_reference(tiny_llama):
    """Independent reference: no KV cache, no padding; the full sequence re-run per step."""
    prompts = _prompts(tiny_llama)
    outs, steps = _run(tiny_llama, prompts, stops=())
    with torch.no_grad():
        for r, p in enumerate(prompts):
            ref = torch.stack(
                [
                    tiny_llama(torch.cat([p, torch.tensor(outs[r][:k], dtype=torch.long)])[None])[
                        0, -1
                    ]
                    for k in range(5)
                ]
            )
            torch.testing.assert_close(_logits_of(steps, r)[:5], ref, atol=1e-4, rtol=1e-4)


def test_batched_equals_unbatched(tiny_qwen):
    prompts = _prompts(tiny_qwen)
    batched, bsteps = _run(tiny_qwen, prompts, stops=())
    for i, p in enumerate(prompts):
        alone, asteps = _run(tiny_qwen, [p], seeds=[i], stops=())
        assert alone[0] == batched[i]
        torch.testing.assert_close(
            _logits_of(asteps, 0), _logits_of(bsteps, i), atol=1e-4, rtol=1e-4
        )
    assert all(len(o) == HOT.max_new_tokens for o in batched)


def test_steps_report_live_rows_and_greedy_tokens_are_the_argmax(tiny_llama):
    prompts = _prompts(tiny_llama)
    outs, steps = _run(tiny_llama, prompts, GREEDY, stops=())
    assert [s.index for s in steps] == list(range(GREEDY.max_new_tokens))
    for s in steps:
        assert s.rows == (0, 1, 2)
        assert s.logits.shape == (3, tiny_llama.cfg.d_vocab)
        assert s.tokens.device.type == "cpu"
        assert torch.equal(s.logits.argmax(-1).cpu(), s.tokens)
        assert s.finished.tolist() == [s.index == GREEDY.max_new_tokens - 1] * 3
    assert [[int(s.tokens[r]) for s in steps] for r in range(3)] == outs


def test_drop_mid_run_shrinks_the_batch_and_leaves_the_others_unchanged(tiny_llama):
    prompts = _prompts(tiny_llama)
    full, _ = _run(tiny_llama, prompts, stops=())
    without, wsteps = _run(tiny_llama, [prompts[0], prompts[2]], seeds=[0, 2], stops=())
    sizes, hooks = _batch_sizes(tiny_llama)
    dec = decode_steps(tiny_llama, prompts, HOT, stops=())
    steps = []
    with tiny_llama.hooks(fwd_hooks=hooks):
        for step in dec:
            steps.append(step)
            if step.index == 2:
                dec.drop([1, 99])  # 99: unknown, a no-op
    n = HOT.max_new_tokens
    assert sizes == [3, 3, 3] + [2] * (n - 3)
    assert [s.rows for s in steps] == [(0, 1, 2)] * 3 + [(0, 2)] * (n - 3)
    out = dec.outputs
    assert out[1] == full[1][:3]  # what it had generated when dropped
    assert [out[0], out[2]] == without
    for r, w in ((0, 0), (2, 1)):
        torch.testing.assert_close(
            _logits_of(steps, r), _logits_of(wsteps, w), atol=1e-4, rtol=1e-4
        )


def test_drop_before_start_and_drop_of_every_row(tiny_llama):
    prompts = _prompts(tiny_llama)
    sizes, hooks = _batch_sizes(tiny_llama)
    dec = decode_steps(tiny_llama, prompts, HOT, stops=())
    dec.drop([0])
    with tiny_llama.hooks(fwd_hooks=hooks):
        steps = list(dec)
    assert set(sizes) == {2} and steps[0].rows == (1, 2)
    assert dec.outputs[0] == []
    dec = decode_steps(tiny_llama, prompts, HOT, stops=())
    n = 0
    for step in dec:
        n += 1
        dec.drop(step.rows)
    assert n == 1 and all(len(o) == 1 for o in dec.outputs)
    with pytest.raises(RuntimeError, match="only once"):
        iter(dec)


def test_stop_tokens_end_a_row_and_finished_rows_leave_the_report(tiny_llama):
    prompts = _prompts(tiny_llama)
    full, _ = _run(tiny_llama, prompts, stops=())
    at = max(i for i, t in enumerate(full[0]) if full[0].index(t) == i)
    assert at >= 1
    stop = full[0][at]
    outs, steps = _run(tiny_llama, prompts, stops=[stop])
    # Rows that stopped stay in the model's batch, so the others are unchanged.
    for o, f in zip(outs, full, strict=True):
        assert o == (f[: f.index(stop)] if stop in f else f)
    # Row 0 reports the stop token at step `at`, marked finished, then disappears.
    j = steps[at].rows.index(0)
    assert int(steps[at].tokens[j]) == stop and bool(steps[at].finished[j])
    assert all(0 not in s.rows for s in steps[at + 1 :])


def test_prefix_cache_equals_no_prefix_cache(tiny_llama):
    prompts = _prompts(tiny_llama)
    n = min(len(p) for p in prompts)
    k = int(
        (torch.stack([p[:n] for p in prompts]) == prompts[0][:n]).all(0).long().cumprod(0).sum()
    )
    assert k >= 8  # the template's default system prompt
    plain, plain_steps = _run(tiny_llama, prompts, stops=())
    prefix = PrefixCache.build(tiny_llama, prompts[0][:k])
    assert len(prefix) == k
    sizes, hooks = _batch_sizes(tiny_llama)
    with tiny_llama.hooks(fwd_hooks=hooks):
        cached, cached_steps = _run(tiny_llama, prompts, stops=(), prefix_cache=prefix)
    assert cached == plain
    for r in range(3):
        torch.testing.assert_close(
            _logits_of(cached_steps, r), _logits_of(plain_steps, r), atol=1e-4, rtol=1e-4
        )
    assert sizes == [3] * HOT.max_new_tokens  # the prefix is not re-run inside decode_steps
    again, _ = _run(tiny_llama, prompts, stops=(), prefix_cache=prefix)
    assert again == plain  # the stored prefix keys/values were not extended by the first use
    with pytest.raises(ValueError, match="prefix cache"):
        decode_steps(tiny_llama, [prompts[0][: k - 1]], GREEDY, prefix_cache=prefix)


def test_prefix_cache_under_an_intervention(tiny_llama):
    prompts = _prompts(tiny_llama)
    g = torch.Generator().manual_seed(0)
    axis = Direction(torch.randn(4, 64, generator=g), method="planted")
    iv = Intervention(Add(3.0), axis, layers=[1, 2])
    with intervene(tiny_llama, iv):
        plain, _ = _run(tiny_llama, prompts, stops=())
        prefix = PrefixCache.build(tiny_llama, prompts[0][:10])
        cached, _ = _run(tiny_llama, prompts, stops=(), prefix_cache=prefix)
    free, _ = _run(tiny_llama, prompts, stops=())
    assert cached == plain
    assert free != plain  # the intervention acts at prefill and at every step


def test_seeds_reproducible_and_per_row(tiny_llama):
    prompts = _prompts(tiny_llama)[:2]
    a, _ = _run(tiny_llama, prompts, seeds=[5, 6], stops=())
    b, _ = _run(tiny_llama, prompts, seeds=[5, 6], stops=())
    c, _ = _run(tiny_llama, prompts, seeds=[7, 6], stops=())
    assert a == b
    assert c[0] != a[0] and c[1] == a[1]  # each row has its own generator


def test_sample_greedy_and_top_p_keeps_the_top_token():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    assert sample(logits, SamplingConfig(temperature=0.0), gens).tolist() == [1, 0]
    # top_p below the top token's mass: only the top token survives.
    tiny_p = SamplingConfig(temperature=1.0, top_p=0.05)
    for _ in range(20):
        assert sample(logits, tiny_p, gens).tolist() == [1, 0]
    # top_p = 0.6: row 0 keeps {1, 2} (0.5 < 0.6, then 0.8), row 1 keeps {0} (0.6 >= 0.6).
    nucleus = SamplingConfig(temperature=1.0, top_p=0.6)
    seen: list[set[int]] = [set(), set()]
    for _ in range(200):
        t = sample(logits, nucleus, gens).tolist()
        seen[0].add(t[0])
        seen[1].add(t[1])
    assert seen == [{1, 2}, {0}]
    with pytest.raises(ValueError, match="generators"):
        sample(logits, nucleus, gens[:1])


def test_decode_steps_refuses_bad_input(tiny_llama):
    p = _prompts(tiny_llama)[0]
    with pytest.raises(ValueError, match="at least one prompt"):
        decode_steps(tiny_llama, [], GREEDY)
    with pytest.raises(ValueError, match="seeds"):
        decode_steps(tiny_llama, [p], GREEDY, seeds=[1, 2])
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        decode_steps(tiny_llama, [p[None]], GREEDY)


def test_generate_text_takes_strings_and_message_lists(tiny_llama):
    """A string is one user message, a list is the messages: both give the reply of the same
    conversation formatted by hand (greedy, so the same tokens)."""
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_text

    greedy = SamplingConfig(max_new_tokens=5, temperature=0.0)
    msgs = [{"role": "user", "content": "Who are you?"}]
    conv = format_conversation(tiny_llama, msgs, add_generation_prompt=True)
    want = generate_text(tiny_llama, [conv], greedy)
    assert generate_text(tiny_llama, ["Who are you?"], greedy) == want
    assert generate_text(tiny_llama, [msgs], greedy) == want
    default = SamplingConfig(max_new_tokens=128, temperature=0.0)
    assert generate_text(tiny_llama, [conv]) == generate_text(tiny_llama, [conv], default)
    with pytest.raises(ValueError, match=r"conversations\[0\] was formatted without"):
        generate_text(tiny_llama, [format_conversation(tiny_llama, msgs)], greedy)
