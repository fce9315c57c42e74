"""Layer/ablation sweeps against unbatched references, the residual decomposition and direct
attribution, the logit lens against the HF weights, plots, the CLI and the sweep script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import axislens
from axislens.directions import CapConfig, Direction
from axislens.evals.attribution import attribute, decompose, logit_lens
from axislens.evals.sweeps import (
    ablation_sweep,
    as_prompt_ids,
    last_token_resid,
    layer_sweep,
    prompt_contrast_axis,
)
from axislens.interventions.attach import Intervention, intervene
from axislens.interventions.operations import Ablate, Add, Response
from axislens.model.decoding import SamplingConfig
from axislens.plots.steering import (
    ablation_bars,
    attribution_bars,
    head_heatmap,
    logit_lens_bars,
    sweep_heatmap,
    token_view,
)

POST = "blocks.{}.hook_resid_post"
CONTS = {"ai": "I am an AI", "ghost": "I am a ghost"}


def _direction(model, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * scale, method="planted"
    )


def _prompts(model):
    g = torch.Generator().manual_seed(11)
    return [
        torch.randint(10, 4000, (6,), generator=g),
        "Who are you?",
        torch.randint(10, 4000, (9,), generator=g),
    ]


@torch.no_grad()
def _reference(model, direction, prompt, ivs, readout, conts, prompt_len=None):
    """Unbatched: (projection at the last prompt token, next-token logprobs, cont logps)."""
    ids = as_prompt_ids(model, prompt)
    u = direction.unit(readout).double()
    with intervene(model, *ivs, prompt_len=prompt_len or len(ids)):
        logits, cache = model.run_with_cache(ids[None], names_filter=[POST.format(readout)])
    proj = float(cache[POST.format(readout)][0, -1].double() @ u)
    lp = torch.log_softmax(logits[0, -1].double(), -1)
    cont_lp = []
    for text in conts.values():
        c = torch.tensor(model.tokenizer(text, add_special_tokens=False)["input_ids"])
        full = torch.cat([ids, c])
        with intervene(model, *ivs, prompt_len=prompt_len or len(ids)):
            lg = torch.log_softmax(model(full[None])[0].double(), -1)
        cont_lp.append(float(lg[torch.arange(len(ids) - 1, len(full) - 1), c].sum()))
    return proj, lp, torch.tensor(cont_lp)


# --------------------------------------------------------------------------- sweeps


def test_layer_sweep_matches_unbatched_reference(tiny_llama):
    model = tiny_llama
    d = _direction(model)
    prompts = _prompts(model)
    res = layer_sweep(
        model,
        d,
        prompts,
        layers=[1, -1],
        strengths=(-2.0, 0.0, 2.0),
        readout_layers=(1, 3),
        continuations=CONTS,
    )
    assert res.layers == (1, 3) and res.strengths == (-2.0, 0.0, 2.0)
    assert res.metrics == (
        "proj@1",
        "proj@3",
        "dproj@1",
        "dproj@3",
        "kl",
        "dlogp:ai",
        "dlogp:ghost",
    )
    assert tuple(res.values.shape) == (2, 3, 7)
    # exact: strength 0 adds exact zeros, so every forward is the baseline's bit for bit
    zero = res.values[:, 1]
    assert torch.equal(zero[:, 2:], torch.zeros_like(zero[:, 2:]))
    # Add at layer 1 read at layer 1: the projection moves by exactly s |v_1|
    torch.testing.assert_close(
        res.table("dproj@1")[0],
        torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64) * float(d.norms()[1]),
        rtol=1e-5,
        atol=1e-5,
    )
    # every cell of the layer-1, strength-2 setting against per-prompt unbatched runs
    iv = Intervention(Add(2.0), d, layers=[1])
    base = [_reference(model, d, p, [], 3, CONTS) for p in prompts]
    steered = [_reference(model, d, p, [iv], 3, CONTS) for p in prompts]
    kl = sum(float((b[1].exp() * (b[1] - s[1])).sum()) for b, s in zip(base, steered, strict=True))
    row = dict(zip(res.metrics, res.values[0, 2].tolist(), strict=True))
    assert row["proj@3"] == pytest.approx(sum(s[0] for s in steered) / 3, abs=1e-4)
    assert row["dproj@3"] == pytest.approx(
        sum(s[0] - b[0] for b, s in zip(base, steered, strict=True)) / 3, abs=1e-4
    )
    assert row["kl"] == pytest.approx(kl / 3, rel=1e-3, abs=1e-6)
    assert row["kl"] > 1e-4
    dcont = sum(s[2] - b[2] for b, s in zip(base, steered, strict=True)) / 3
    assert row["dlogp:ai"] == pytest.approx(float(dcont[0]), abs=1e-3)
    assert row["dlogp:ghost"] == pytest.approx(float(dcont[1]), abs=1e-3)
    assert res.baseline["proj@3"] == pytest.approx(sum(b[0] for b in base) / 3, abs=1e-4)
    # batching does not change results
    one = layer_sweep(
        model,
        d,
        prompts,
        layers=[1, -1],
        strengths=(-2.0, 0.0, 2.0),
        readout_layers=(1, 3),
        continuations=CONTS,
        batch_size=1,
    )
    torch.testing.assert_close(one.values, res.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gemma"])
def test_layer_sweep_shared_prefix_matches_reference(request, family):
    """Chat prompts share the template's prefix: it runs once and is reused via a KV cache."""
    from axislens.evals.sweeps import _batch

    model = request.getfixturevalue(family)
    d = _direction(model, seed=12)
    system = {"role": "system", "content": "You are a helpful assistant who answers briefly."}
    prompts = [
        axislens.format_conversation(
            model, [system, {"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in ("Who are you?", "What is your name, friend?", "Tell me about yourself.")
    ]
    ids = [as_prompt_ids(model, p) for p in prompts]
    assert _batch(model, ids, [], False).prefix >= 8
    res = layer_sweep(
        model, d, prompts, layers=[1], strengths=(2.0,), readout_layers=(2,), continuations=CONTS
    )
    iv = Intervention(Add(2.0), d, layers=[1])
    base = [_reference(model, d, p, [], 2, CONTS) for p in prompts]
    steered = [_reference(model, d, p, [iv], 2, CONTS) for p in prompts]
    row = dict(zip(res.metrics, res.values[0, 0].tolist(), strict=True))
    assert row["proj@2"] == pytest.approx(sum(s[0] for s in steered) / 3, abs=1e-4)
    kl = sum(float((b[1].exp() * (b[1] - s[1])).sum()) for b, s in zip(base, steered, strict=True))
    assert row["kl"] == pytest.approx(kl / 3, rel=1e-3, abs=1e-6) and row["kl"] > 1e-4
    dcont = sum(s[2] - b[2] for b, s in zip(base, steered, strict=True)) / 3
    assert row["dlogp:ai"] == pytest.approx(float(dcont[0]), abs=1e-3)
    assert row["dlogp:ghost"] == pytest.approx(float(dcont[1]), abs=1e-3)
    assert res.baseline["proj@2"] == pytest.approx(sum(b[0] for b in base) / 3, abs=1e-4)


def test_sweep_response_positions(tiny_llama):
    """Response-only steering cannot move the prompt's last token but moves the continuation."""
    model = tiny_llama
    d = _direction(model, seed=2)
    res = layer_sweep(
        model,
        d,
        _prompts(model),
        layers=[0],
        strengths=(3.0,),
        readout_layers=(2,),
        positions=Response(),
        continuations=CONTS,
    )
    row = dict(zip(res.metrics, res.values[0, 0].tolist(), strict=True))
    # exact: the prompt's positions run the same ops on the same inputs (causal attention)
    assert row["dproj@2"] == 0.0 and row["kl"] == 0.0
    assert abs(row["dlogp:ai"]) > 1e-4


def test_sweep_tidy_outputs_and_texts(tiny_qwen, tmp_path):
    model = tiny_qwen
    d = _direction(model, seed=3)
    res = layer_sweep(
        model,
        d,
        _prompts(model)[:2],
        layers=[0, 2],
        strengths=(-1.0, 1.0),
        generate=SamplingConfig(max_new_tokens=3, temperature=0.0),
    )
    rows = res.rows()
    assert len(rows) == 2 * 2 * len(res.metrics)
    assert rows[0] == {"layer": 0, "strength": -1.0, "metric": "proj@2", "value": rows[0]["value"]}
    assert len(res.texts) == 2 * 2 * 2 and len(res.baseline_texts) == 2
    csv_text = res.to_csv(tmp_path / "s.csv").read_text().splitlines()
    assert csv_text[0] == "layer,strength,metric,value" and len(csv_text) == len(rows) + 1
    data = json.loads(res.to_json(tmp_path / "s.json").read_text())
    # exact: a JSON round trip of the same floats
    assert data["rows"] == rows and data["provenance"]["model"]["n_layers"] == 3
    with pytest.raises(ValueError, match="unknown metric"):
        res.table("nope")


def test_ablation_sweep_drop(tiny_llama):
    model = tiny_llama
    d = _direction(model, seed=4)
    prompts = _prompts(model)
    res = ablation_sweep(model, d, prompts, layers=[0, 1, 3], readout_layers=(1, 3))
    assert res.kind == "ablation" and "drop@3" in res.metrics
    # ablating the readout layer itself zeroes its projection: the drop is the whole projection
    assert res.table("proj@1")[1, 0] == pytest.approx(0.0, abs=1e-5)
    assert res.table("drop@1")[1, 0] == pytest.approx(res.baseline["proj@1"], abs=1e-5)
    # against per-prompt reference for layer 0
    base = [_reference(model, d, p, [], 3, {})[0] for p in prompts]
    abl = [
        _reference(model, d, p, [Intervention(Ablate(0.0), d, layers=[0])], 3, {})[0]
        for p in prompts
    ]
    want = sum(b - a for b, a in zip(base, abl, strict=True)) / 3
    assert float(res.table("drop@3")[0, 0]) == pytest.approx(want, abs=1e-4)


def test_sweep_validates_first(tiny_llama):
    d = _direction(tiny_llama)
    with pytest.raises(ValueError, match="out of range"):
        layer_sweep(tiny_llama, d, ["hi"], layers=[7])
    with pytest.raises(ValueError, match="norm_units has 2 entries"):
        layer_sweep(tiny_llama, d, ["hi"], layers=[1], norm_units=torch.ones(2))
    with pytest.raises(ValueError, match="d_model"):
        layer_sweep(tiny_llama, Direction(torch.ones(4, 8), method="x"), ["hi"])


def test_prompt_contrast_axis(tiny_qwen):
    model = tiny_qwen
    pos, neg = ["You are an assistant. Hi", "Hello"], ["Arr, pirate here", "Boo", "A ghost?"]
    axis = prompt_contrast_axis(model, pos, neg)
    means = []
    for group in (pos, neg):
        acts = []
        for p in group:
            ids = as_prompt_ids(model, p)
            _, cache = model.run_with_cache(ids[None])
            acts.append(torch.stack([cache[POST.format(la)][0, -1] for la in range(3)]).double())
        means.append(torch.stack(acts).mean(0))
    torch.testing.assert_close(axis.vectors.double(), means[0] - means[1], rtol=1e-4, atol=1e-5)
    assert last_token_resid(model, pos).shape == (2, 3, 64)


# --------------------------------------------------------------------------- attribution


def _chat(model):
    return axislens.format_conversation(
        model,
        [
            {"role": "user", "content": "Who are you, really?"},
            {"role": "assistant", "content": "I am a ghost of the old castle."},
        ],
    )


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen", "tiny_gemma"])
@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "resid_post"])
def test_decomposition_reproduces_residual(request, family, hook):
    model = request.getfixturevalue(family)
    conv = _chat(model)
    layer = model.cfg.n_layers - 1
    for heads in (True, False):
        dec = decompose(model, conv, layer=layer, hook=hook, heads=heads)
        _, cache = model.run_with_cache(conv.input_ids[None])
        resid = cache[f"blocks.{layer}.hook_{hook}"][0]
        torch.testing.assert_close(dec.components.sum(0), resid, rtol=0, atol=1e-4)
        n_blocks = layer + (hook != "resid_pre")
        n_mlps = layer + (hook == "resid_post")
        per_attn = model.cfg.n_heads if heads else 1
        assert len(dec.labels) == 1 + n_blocks * per_attn + n_mlps
        assert dec.components.shape[1:] == (len(conv), model.cfg.d_model)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gemma"])
def test_heads_sum_to_attn_out_and_match_single_head_runs(request, family):
    model = request.getfixturevalue(family)
    conv = _chat(model)
    dec = decompose(model, conv, layer=1, hook="resid_post")
    _, cache = model.run_with_cache(conv.input_ids[None])
    for la in (0, 1):
        idx = [
            i
            for i, (l_, h) in enumerate(zip(dec.layers, dec.heads, strict=True))
            if l_ == la and h >= 0
        ]
        assert len(idx) == model.cfg.n_heads
        heads_sum = dec.components[idx].sum(0)
        torch.testing.assert_close(
            heads_sum, cache[f"blocks.{la}.hook_attn_out"][0], rtol=0, atol=1e-4
        )
    if family == "tiny_llama":
        # independent reference: zero every other head's z; the attention output is that head's
        for h in range(model.cfg.n_heads):

            def keep(z, hook, h=h):
                out = torch.zeros_like(z)
                out[:, :, h] = z[:, :, h]
                return out

            with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", keep)]):
                _, c = model.run_with_cache(
                    conv.input_ids[None], names_filter=["blocks.1.hook_attn_out"]
                )
            i = dec.labels.index(f"L1.H{h}")
            torch.testing.assert_close(
                dec.components[i], c["blocks.1.hook_attn_out"][0], rtol=0, atol=1e-5
            )


def test_attribution_projections(tiny_gemma):
    model = tiny_gemma
    d = _direction(model, seed=5)
    conv = _chat(model)
    attr = attribute(model, d, conv, layer=2)
    dec = decompose(model, conv, layer=2)
    u = d.unit(2).double()
    torch.testing.assert_close(attr.per_token, dec.components.double() @ u, rtol=0, atol=1e-5)
    torch.testing.assert_close(attr.per_token.sum(0), attr.total, rtol=0, atol=1e-4)
    mask = conv.content_mask("assistant")
    assert torch.equal(attr.mask, mask)
    torch.testing.assert_close(attr.span_mean(), attr.per_token[:, mask].mean(-1))
    assert sum(attr.by_kind().values()) == pytest.approx(attr.total_mean(), abs=1e-4)
    top = attr.top(3)
    assert abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    hm = attr.head_matrix()
    assert hm.shape == (3, model.cfg.n_heads)
    assert float(hm[1, 2]) == pytest.approx(float(attr.span_mean()[attr.labels.index("L1.H2")]))
    spanned = attribute(model, d, conv, layer=2, span=(1, 4), heads=False)
    assert int(spanned.mask.sum()) == 3 and "L0.attn" in spanned.labels
    with pytest.raises(ValueError, match="hook must be"):
        attribute(model, d, conv, layer=1, hook="mlp_out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, d, conv, layer=3)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gemma"])
def test_logit_lens_against_hf_weights(request, family):
    model = request.getfixturevalue(family)
    d = _direction(model, seed=6)
    lens = logit_lens(model, d, 1, k=5)
    hf = model.original_model
    w = hf.model.norm.weight.detach().double()
    gain = 1.0 + w if family == "tiny_gemma" else w
    scores = (d.unit(1).double() * gain) @ hf.lm_head.weight.detach().double().T
    top = scores.topk(5)
    assert [t for t, _ in lens.promoted] == [
        model.tokenizer.decode([i]) for i in top.indices.tolist()
    ]
    assert [s for _, s in lens.promoted] == pytest.approx(top.values.tolist(), rel=1e-5)
    bottom = (-scores).topk(5)
    assert [s for _, s in lens.suppressed] == pytest.approx((-bottom.values).tolist(), rel=1e-5)
    # a planted direction along one token's (gain-corrected) unembedding promotes that token
    tok = 1234
    planted = hf.lm_head.weight.detach()[tok] / gain.float()
    vecs = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    vecs[0] = planted
    scores_p = logit_lens(model, Direction(vecs, method="planted"), 0, k=3).scores
    ref = (
        planted.double() / planted.double().norm() * gain
    ) @ hf.lm_head.weight.detach().double().T
    torch.testing.assert_close(scores_p.double(), ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- plots


def test_plots_from_results(tiny_llama):
    model = tiny_llama
    d = _direction(model, seed=7)
    res = layer_sweep(model, d, ["Hi there"], layers=[0, 2], strengths=(-1.0, 0.0, 1.0))
    fig = sweep_heatmap(res, "dproj@3")
    (hm,) = fig.data
    assert list(hm.x) == ["0", "2"] and list(hm.y) == ["-1", "0", "1"]
    torch.testing.assert_close(torch.tensor(hm.z, dtype=torch.float64), res.table("dproj@3").T)
    abl = ablation_sweep(model, d, ["Hi there"], layers=[0, 1])
    (bar,) = ablation_bars(abl).data
    assert list(bar.x) == [0, 1] and list(bar.y) == pytest.approx(
        abl.table("drop@3")[:, 0].tolist()
    )

    conv = _chat(model)
    attr = attribute(model, d, conv, layer=3)
    (bars,) = attribution_bars(attr, top_k=4).data
    assert list(bars.y) == [label for label, _ in attr.top(4)][::-1]
    assert list(bars.x) == pytest.approx([v for _, v in attr.top(4)][::-1])
    (heat,) = head_heatmap(attr).data
    torch.testing.assert_close(torch.tensor(heat.z, dtype=torch.float64), attr.head_matrix())
    html = str(token_view(attr))
    assert "ghost" in html
    lens = logit_lens(model, d, 3, k=4)
    up, down = logit_lens_bars(lens).data
    assert list(up.y) == pytest.approx([s for _, s in lens.promoted])
    assert list(down.y) == pytest.approx([s for _, s in lens.suppressed])
    with pytest.raises(ValueError, match="unknown component"):
        token_view(attr, "L9.mlp")


# --------------------------------------------------------------------------- CLI and script


def test_cli_steer_and_cap(tiny_llama, tmp_path, monkeypatch, capsys):
    import axislens.cli as cli
    import axislens.cli.steer as cli_steer

    model = tiny_llama
    d = _direction(model, seed=8)
    axis_path = d.save(tmp_path / "axis.safetensors")
    monkeypatch.setattr(cli_steer, "load_from_args", lambda args: model)
    rc = cli.main(
        [
            "steer",
            "--axis",
            str(axis_path),
            "--layers",
            "1:3",
            "--coeff=-4",
            "--max-new-tokens",
            "4",
            "--width",
            "100",
            "Who are you?",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "unsteered" in out and "add -4 x axis at layers 1:3" in out
    cap_path = CapConfig(d, layers=(1, 2), thresholds=(0.5, 0.5)).save(tmp_path / "cap.json")
    rc = cli.main(["cap", "--cap", str(cap_path), "--max-new-tokens", "3", "Hello"])
    out = capsys.readouterr().out
    assert rc == 0 and "capped at layers 1..2" in out
    rc = cli.main(["steer", "--axis", str(axis_path), "--layers", "9", "--coeff", "1", "Hi"])
    assert rc == 2 and "layer 9 out of range" in capsys.readouterr().err


def test_side_by_side():
    from axislens.cli.steer import side_by_side

    text = side_by_side("left", "a " * 30, "right", "b", width=43)
    lines = text.splitlines()
    assert lines[0].startswith("left") and "| right" in lines[0]
    assert all(len(line) <= 43 for line in lines)


def test_layer_sweep_script(tiny_llama, tmp_path, monkeypatch):
    path = Path(__file__).resolve().parents[3] / "experiments" / "layer_sweep.py"
    spec = importlib.util.spec_from_file_location("layer_sweep_script", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    cfg = mod.parse_args(
        [
            "--model",
            "tiny:llama",
            "--layers",
            "0:2",
            "--strengths=-0.5,0.5",
            "--n-prompts",
            "2",
            "--out",
            str(tmp_path),
            "--no-norm-units",
        ]
    )
    assert cfg.strengths == (-0.5, 0.5) and cfg.norm_units is False
    res = mod.run(cfg, model=tiny_llama)
    assert res.layers == (0, 1)
    for name in ("sweep.csv", "sweep.json", "report.html", "axis.safetensors"):
        assert (tmp_path / name).is_file()
    assert "plotly" in (tmp_path / "report.html").read_text()[:100000].lower()
