"""Interventions at hook points: ops against float64 references, positions, KV-cache generation
against a full-recompute reference, bit-identical caps, validation, and hook cleanup."""

from __future__ import annotations

import math

import pytest
import torch

import axislens
from axislens import ops
from axislens.directions import CapConfig, Direction
from axislens.interventions.attach import (
    Intervention,
    ablate,
    cap,
    cap_intervention,
    intervene,
    residual_norms,
    steer,
)
from axislens.interventions.operations import (
    Ablate,
    Add,
    All,
    CapCeiling,
    CapFloor,
    ClampBand,
    Last,
    MeanAblate,
    Prompt,
    Response,
    Spans,
    _Ctx,
    parse_positions,
)
from axislens.model.decoding import SamplingConfig, generate_tokens, stop_token_ids
from axislens.model.layers import parse_layers

POST = "blocks.{}.hook_resid_post"
HOOK_SUFFIXES = ("resid_post", "resid_pre", "resid_mid", "attn_out", "mlp_out")


def _direction(model, seed: int = 0, scale: float = 1.0) -> Direction:
    g = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    return Direction(torch.randn(n, d, generator=g) * scale, method="planted")


def _tokens(n: int = 9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 4000, (n,), generator=g)


def _cache(model, toks, *ivs, prompt_len=None):
    def names(n: str) -> bool:
        return n.endswith(HOOK_SUFFIXES)

    with intervene(model, *ivs, prompt_len=prompt_len):
        logits, cache = model.run_with_cache(toks[None], names_filter=names)
    return logits, cache


def _no_hooks_left(model, pre_hooks: int = 0) -> bool:
    points = model.hook_dict.values()
    return all(not hp.fwd_hooks and not hp._forward_hooks for hp in points) and (
        len(model.original_model._forward_pre_hooks) == pre_hooks
    )


# --------------------------------------------------------------------------- ops as kernels

KERNEL_CASES = [
    (Add(1.5), lambda h, v: ops.add(h, v, 1.5)),
    (Ablate(0.0), lambda h, v: ops.project_out(h, v)),
    (Ablate(-2.0), lambda h, v: ops.ablate(h, v, -2.0)),
    (MeanAblate(0.7), lambda h, v: ops.mean_ablate(h, v, 0.7)),
    (CapFloor(0.2), lambda h, v: ops.cap_floor(h, v, 0.2)),
    (CapCeiling(-0.1), lambda h, v: ops.cap_ceiling(h, v, -0.1)),
    (ClampBand(-0.3, 0.4), lambda h, v: ops.clamp_band(h, v, -0.3, 0.4)),
]


@pytest.mark.parametrize(("op", "ref"), KERNEL_CASES, ids=lambda x: type(x).__name__)
def test_kernels_equal_ops_in_float64(op, ref):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 7, 16, generator=g, dtype=torch.float64)
    v = torch.randn(16, generator=g, dtype=torch.float64) * 3
    ctx = _Ctx(v, v / v.norm(), None)
    out = op.kernel(ctx, 0, 1)(h)
    torch.testing.assert_close(out, ref(h, v), rtol=0, atol=1e-12)


def test_kernels_norm_units_and_per_layer_values():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(5, 8, generator=g, dtype=torch.float64)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    u = v / v.norm()
    ctx = _Ctx(v, u, 2.5)
    out = Add((1.0, -3.0)).kernel(ctx, 1, 2)(h)
    torch.testing.assert_close(out, h + (-3.0 * 2.5) * u, rtol=0, atol=1e-12)
    out = CapFloor((0.1, 0.4)).kernel(ctx, 1, 2)(h)
    torch.testing.assert_close(out, ops.cap_floor(h, v, 0.4 * 2.5), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"Add.coeff has 2 values for 3 layers"):
        Add((1.0, 2.0)).kernel(ctx, 0, 3)


def test_caps_untouched_rows_are_bit_identical():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(50, 8, generator=g)
    v = torch.randn(8, generator=g)
    ctx = _Ctx(v, v / v.norm(), None)
    for op in (CapFloor(0.0), CapCeiling(0.0), ClampBand(-0.5, 0.5)):
        out = op.kernel(ctx, 0, 1)(h)
        p = h @ (v / v.norm())
        if isinstance(op, CapFloor):
            keep = p >= 0
        elif isinstance(op, CapCeiling):
            keep = p <= 0
        else:
            keep = (p >= -0.5) & (p <= 0.5)
        assert keep.any() and (~keep).any()
        assert torch.equal(out[keep], h[keep])  # exact: untouched rows are bit-identical


# --------------------------------------------------------------------------- hook points


@pytest.mark.parametrize("op_ref", KERNEL_CASES[:5], ids=lambda x: type(x[0]).__name__)
def test_intervention_at_resid_post_matches_ops(tiny_llama, op_ref):
    op, ref = op_ref
    d = _direction(tiny_llama, scale=0.1)
    toks = _tokens()
    _, c0 = _cache(tiny_llama, toks)
    _, c1 = _cache(tiny_llama, toks, Intervention(op, d, layers=[2]))
    want = ref(c0[POST.format(2)].double(), d.vectors[2].double()).float()
    torch.testing.assert_close(c1[POST.format(2)], want, rtol=1e-5, atol=1e-6)
    # layers before are untouched, layers after change
    # exact: layers before the intervention run the same ops on the same inputs
    assert torch.equal(c1[POST.format(1)], c0[POST.format(1)])
    assert not torch.equal(c1[POST.format(3)], c0[POST.format(3)])


@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "attn_out", "mlp_out"])
def test_intervention_at_each_hook(tiny_gemma, hook):
    model = tiny_gemma
    d = _direction(model, seed=4)
    toks = _tokens()
    _, c0 = _cache(model, toks)
    _, c1 = _cache(model, toks, Intervention(Add(0.5), d, layers=[1], hook=hook))
    name = f"blocks.1.hook_{hook}"
    want = ops.add(c0[name], d.vectors[1], 0.5)
    torch.testing.assert_close(c1[name], want, rtol=1e-5, atol=1e-5)
    if hook == "resid_mid":
        # the carried stream (not only the MLP's input) moved: resid_post - mlp_out == new mid
        carried = c1["blocks.1.hook_resid_post"] - c1["blocks.1.hook_mlp_out"]
        torch.testing.assert_close(carried, want, rtol=1e-5, atol=1e-5)
        # exact: upstream of the hook, the same ops on the same inputs
        assert torch.equal(c1["blocks.1.hook_resid_pre"], c0["blocks.1.hook_resid_pre"])


def test_layer_specs_resolve(tiny_llama):
    d = _direction(tiny_llama, scale=0.1)
    toks = _tokens()
    _, c0 = _cache(tiny_llama, toks)
    cases = [(slice(-2, None), 2), (range(1, 4, 2), 1), ([-1], 3), (2, 2), ("-2:", 2), ("3", 3)]
    for spec, want in cases:
        # the first touched layer is the first whose resid_post moves (exact: layers before it
        # run the same ops on the same inputs)
        _, c = _cache(tiny_llama, toks, Intervention(Add(1.0), d, layers=spec))
        moved = [not torch.equal(c[POST.format(la)], c0[POST.format(la)]) for la in range(4)]
        assert moved == [la >= want for la in range(4)], spec
    _, c = _cache(tiny_llama, toks, Intervention(Add((1.0, 2.0)), d, layers=[-1, 1]))
    delta = c[POST.format(1)] - c0[POST.format(1)]  # layer 1 got the second value
    torch.testing.assert_close(delta, (2.0 * d.vectors[1]).expand_as(delta), rtol=1e-5, atol=1e-5)
    assert Intervention(Add(1.0), d, layers="1:3").layers == slice(1, 3)  # the CLI's text
    with pytest.raises(ValueError, match=r"Intervention\.layers: cannot parse 'x'"):
        Intervention(Add(1.0), d, layers="x")


def test_norm_units(tiny_llama):
    d = _direction(tiny_llama, scale=0.1)
    toks = _tokens()
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0])
    _, c0 = _cache(tiny_llama, toks)
    _, c1 = _cache(tiny_llama, toks, Intervention(Add(-0.5), d, layers=[2], norm_units=norms))
    want = c0[POST.format(2)] + (-0.5 * 3.0) * d.unit(2)
    torch.testing.assert_close(c1[POST.format(2)], want, rtol=1e-6, atol=1e-6)
    added = c1[POST.format(2)] - c0[POST.format(2)]
    torch.testing.assert_close(
        added.norm(dim=-1), torch.full((1, len(toks)), 1.5), rtol=1e-5, atol=1e-5
    )


def test_residual_norms_match_manual(tiny_qwen):
    model = tiny_qwen
    convs = [
        axislens.format_conversation(
            model, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in ("Who are you?", "Tell me about the sea, please.")
    ]
    got = residual_norms(model, convs)
    sums = torch.zeros(model.cfg.n_layers, dtype=torch.float64)
    count = 0
    for conv in convs:
        mask = torch.zeros(len(conv), dtype=torch.bool)
        for s in conv.spans:
            mask[s.start : s.end] = True
        _, cache = model.run_with_cache(conv.input_ids[None])
        for layer in range(model.cfg.n_layers):
            sums[layer] += cache[POST.format(layer)][0][mask].double().norm(dim=-1).sum()
        count += int(mask.sum())
    torch.testing.assert_close(got.double(), sums / count, rtol=1e-5, atol=0)
    part = residual_norms(model, convs, layers=[1])
    assert math.isnan(float(part[0])) and float(part[1]) == pytest.approx(float(got[1]), rel=1e-6)


# --------------------------------------------------------------------------- positions


@pytest.mark.parametrize(
    ("positions", "want"),
    [
        (All(), list(range(9))),
        (Prompt(), [0, 1, 2, 3, 4]),
        (Response(), [5, 6, 7, 8]),
        (Last(), [4]),
        (Spans(((1, 3), (7, 8))), [1, 2, 7]),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, list) else "",
)
def test_positions_on_a_forward(tiny_llama, positions, want):
    d = _direction(tiny_llama, scale=0.1)
    toks = _tokens(9)
    _, c0 = _cache(tiny_llama, toks)
    iv = Intervention(Add(1.0), d, layers=[0], positions=positions)
    _, c1 = _cache(tiny_llama, toks, iv, prompt_len=5)
    moved = (c1[POST.format(0)] - c0[POST.format(0)]).abs().amax(-1)[0] > 0
    assert moved.nonzero().flatten().tolist() == want


def _reference_generate(model, prompt, ivs, n_new):
    """Greedy, no KV cache: recompute the whole sequence each step under the interventions."""
    stops = set(stop_token_ids(model.tokenizer))
    seq = prompt.clone()
    out = []
    with torch.no_grad():
        for _ in range(n_new):
            with intervene(model, *ivs, prompt_len=len(prompt)):
                logits = model(seq[None])
            tok = int(logits[0, -1].argmax())
            if tok in stops:
                break
            out.append(tok)
            seq = torch.cat([seq, torch.tensor([tok])])
    return out


def _cases(model):
    d = _direction(model, seed=5, scale=0.2)
    toks = _tokens(7, seed=1)
    _, c0 = _cache(model, toks)
    # floors at the largest prompt projection: every prompt token but one is raised
    taus = tuple(float((c0[POST.format(la)][0] @ d.unit(la)).max()) for la in (1, 2))
    return {
        "add-all": [Intervention(Add(3.0), d, layers=[1, 2])],
        "cap-floor": [Intervention(CapFloor(taus), d, layers=[1, 2])],
        "add-response": [Intervention(Add(-4.0), d, layers=[1], positions=Response())],
        "ablate-prompt+add-last": [
            Intervention(Ablate(1.0), d, layers=[0], positions=Prompt()),
            Intervention(Add(4.0), d, layers=[2], positions=Last()),
        ],
        "clamp-resid-mid": [Intervention(ClampBand(0.4, 0.6), d, layers=[1], hook="resid_mid")],
    }


@pytest.mark.parametrize(
    "case", ["add-all", "cap-floor", "add-response", "ablate-prompt+add-last", "clamp-resid-mid"]
)
def test_cached_generation_equals_full_recompute(tiny_llama, case):
    model = tiny_llama
    ivs = _cases(model)[case]
    prompts = [_tokens(7, seed=1), _tokens(4, seed=2)]
    sampling = SamplingConfig(max_new_tokens=6, temperature=0.0)
    plain = generate_tokens(model, prompts, sampling, batch_size=1)
    with intervene(model, *ivs):
        one = generate_tokens(model, prompts, sampling, batch_size=1)
        batched = generate_tokens(model, prompts, sampling, batch_size=2)
    for i, p in enumerate(prompts):
        ref = _reference_generate(model, p, ivs, 6)
        assert one[i].tolist() == ref, f"prompt {i}"
        assert batched[i].tolist() == ref, f"prompt {i} (left-padded batch)"
    assert any(a.tolist() != b.tolist() for a, b in zip(plain, one, strict=True)), "no effect"
    assert _no_hooks_left(model)


def test_response_positions_leave_prefill_untouched(tiny_llama):
    """Under generation, Response() must not act at prefill: the first token is unsteered."""
    model = tiny_llama
    d = _direction(model, seed=6, scale=0.3)
    p = _tokens(6, seed=3)
    sampling = SamplingConfig(max_new_tokens=5, temperature=0.0)
    plain = generate_tokens(model, [p], sampling)[0]
    with intervene(model, Intervention(Add(8.0), d, layers=[1, 2], positions=Response())):
        steered = generate_tokens(model, [p], sampling)[0]
    assert steered[0] == plain[0]
    assert steered.tolist() != plain.tolist()


# --------------------------------------------------------------------------- caps


def test_inactive_cap_is_bit_identical(tiny_qwen):
    model = tiny_qwen
    d = _direction(model, seed=7, scale=0.5)
    toks = _tokens(10, seed=4)
    base, c0 = _cache(model, toks)
    layers = [0, 1, 2]
    low = tuple(float((c0[POST.format(la)][0] @ d.unit(la)).min()) - 1e-3 for la in layers)
    high = tuple(float((c0[POST.format(la)][0] @ d.unit(la)).max()) + 1e-3 for la in layers)
    with cap(model, CapConfig(d, layers=tuple(layers), thresholds=low)):
        capped = model(toks[None])
    assert torch.equal(capped, base)  # exact: an inactive cap must be bit-identical (the claim)
    with intervene(model, Intervention(CapCeiling(high), d, layers=layers)):
        assert torch.equal(model(toks[None]), base)
    mid = tuple(float((c0[POST.format(la)][0] @ d.unit(la)).median()) for la in layers)
    with cap(model, CapConfig(d, layers=tuple(layers), thresholds=mid)):
        assert not torch.equal(model(toks[None]), base)


def test_cap_conventions_agree(tiny_llama):
    model = tiny_llama
    d = _direction(model, seed=8, scale=0.3)
    toks = _tokens(8, seed=5)
    _, c0 = _cache(model, toks)
    taus = tuple(float((c0[POST.format(la)][0] @ d.unit(la)).median()) for la in (1, 3))
    cfg = CapConfig(d, layers=(1, 3), thresholds=taus)
    with cap(model, cfg):
        floor = model(toks[None])
    with cap(model, cfg.to_ceiling()):
        ceiling = model(toks[None])
    with intervene(
        model, Intervention(CapCeiling(tuple(-t for t in taus)), d.negated(), layers=[1, 3])
    ):
        by_hand = model(toks[None])
    torch.testing.assert_close(floor, ceiling, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(floor, by_hand, rtol=1e-5, atol=1e-5)
    assert cap_intervention(cfg).op == CapFloor(taus)  # exact: the thresholds pass through


def test_conveniences_equal_explicit(tiny_llama):
    model = tiny_llama
    d = _direction(model, seed=9, scale=0.2)
    toks = _tokens()
    with steer(model, d, -2.0, slice(1, 3)):
        a = model(toks[None])
    with intervene(model, Intervention(Add(-2.0), d, layers=[1, 2])):
        b = model(toks[None])
    assert torch.equal(a, b)  # exact: the convenience builds this same intervention
    with ablate(model, d, [2], coeff=0.5):
        a = model(toks[None])
    with intervene(model, Intervention(Ablate(0.5), d, layers=[2])):
        b = model(toks[None])
    assert torch.equal(a, b)  # exact: the convenience builds this same intervention


def test_order_and_nesting(tiny_llama):
    model = tiny_llama
    d = _direction(model, seed=10, scale=0.2)
    toks = _tokens()
    first = Intervention(Add(2.0), d, layers=[1])
    second = Intervention(CapFloor(0.0), d, layers=[1])
    with intervene(model, first, second):
        together = model(toks[None])
    with intervene(model, first), intervene(model, second):
        nested = model(toks[None])
    with intervene(model, second, first):
        swapped = model(toks[None])
    assert torch.equal(together, nested)  # exact: the same ops in the same order
    assert not torch.equal(together, swapped)


# --------------------------------------------------------------------------- safety


def test_hooks_removed_after_exception(tiny_llama):
    model = tiny_llama
    d = _direction(model, scale=0.3)
    toks = _tokens()
    base = model(toks[None])
    iv = Intervention(Add(5.0), d, layers=[0, 1, 2, 3], positions=Response())
    with pytest.raises(RuntimeError, match="boom"), intervene(model, iv, prompt_len=3):
        assert not _no_hooks_left(model)
        model(toks[None])
        raise RuntimeError("boom")
    assert _no_hooks_left(model)
    assert torch.equal(model(toks[None]), base)  # exact: hooks gone, the same forward


class _WithoutResidMid:
    """A model view whose hook_dict lacks resid_mid (as in a parallel-attention model)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    @property
    def hook_dict(self):
        return {k: v for k, v in self._model.hook_dict.items() if "resid_mid" not in k}


def test_bad_input_raises_before_anything_runs(tiny_llama):
    model = tiny_llama
    d = _direction(model)
    called = []
    h = model.original_model.register_forward_pre_hook(lambda *a: called.append(1))
    try:
        cases = [
            (
                Intervention(Add(1.0), Direction(torch.ones(4, 32), method="x"), layers=[0]),
                "d_model 32",
            ),
            (Intervention(Add(1.0), d, layers=[4]), "layer 4 out of range"),
            (Intervention(Add(1.0), d, layers=[-5]), "layer -5 out of range"),
            (
                Intervention(Add(1.0), Direction(torch.ones(2, 64), method="x"), layers=[3]),
                "only 2 layers",
            ),
            (Intervention(Add((1.0, 2.0)), d, layers=[0, 1, 2]), "2 values for 3 layers"),
            (
                Intervention(Add(1.0), d, layers=[1], norm_units=torch.ones(3)),
                "3 entries for 4 layers",
            ),
            (
                Intervention(
                    Add(1.0), d, layers=[1], norm_units=torch.tensor([1.0, math.nan, 1, 1])
                ),
                r"norm_units\[1\]",
            ),
            (Intervention(ClampBand(1.0, -1.0), d, layers=[1]), "lo <= hi"),
            (Intervention(MeanAblate(torch.ones(8)), d, layers=[1]), "d_model 8"),
            (
                Intervention(Add(1.0), Direction(torch.zeros(4, 64), method="z"), layers=[2]),
                "zero vector at layer 2",
            ),
        ]
        for iv, msg in cases:
            with (
                pytest.raises(ValueError, match=msg),
                intervene(model, Intervention(Add(1.0), d, layers=[0]), iv),
            ):
                model(_tokens()[None])
            assert _no_hooks_left(model, pre_hooks=1)
        iv = Intervention(Add(1.0), d, layers=[1], hook="resid_mid")
        with (
            pytest.raises(ValueError, match=r"no hook 'blocks\.1\.hook_resid_mid'"),
            intervene(_WithoutResidMid(model), iv),
        ):
            pass
        assert called == []
    finally:
        h.remove()
    for bad, msg in [
        (lambda: Add(math.nan), "Add.coeff must be finite"),
        (lambda: Add((1.0, math.inf)), r"Add.coeff\[1\] must be finite"),
        (lambda: CapFloor(float("nan")), "CapFloor.thresholds must be finite"),
        (lambda: Intervention(Add(1.0), d, layers=[0], hook="resid_foo"), "resid_foo"),
        (lambda: Intervention(Add(1.0), d, layers=[0.5]), "must be ints"),
        (lambda: Intervention("add", d, layers=[0]), "Intervention.op"),
        (lambda: Spans(((3, 1),)), "start <= end"),
    ]:
        with pytest.raises(ValueError, match=msg):
            bad()


def test_parsers():
    assert parse_layers("12:16") == slice(12, 16)
    assert parse_layers("-4:") == slice(-4, None)
    assert parse_layers("3") == (3,)
    assert parse_layers("1,5,-1") == (1, 5, -1)
    assert parse_positions("Response") == Response()
    assert parse_positions("3:7,9:12") == Spans(((3, 7), (9, 12)))
    for bad in ("a:b", "x"):
        with pytest.raises(ValueError):
            parse_layers(bad) if bad == "a:b" else parse_positions(bad)


# --------------------------------------------------------------------------- embedded model
