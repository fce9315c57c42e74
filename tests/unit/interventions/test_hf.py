"""The plain-HF path (axislens.hf): same logits as the bridge path on tiny llama and gemma2, same
position rules under a KV cache, hooks removed, no TransformerLens imported."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import axislens
from axislens import hf
from axislens.directions import CapConfig, Direction
from axislens.interventions import Intervention, MeanAblate, Response
from axislens.interventions.hf import decoder_layers

TOL = 1e-5


def _direction(n_layers: int, d_model: int, seed: int = 0, scale: float = 1.0) -> Direction:
    g = torch.Generator().manual_seed(seed)
    return Direction(torch.randn(n_layers, d_model, generator=g) * scale, method="planted")


def _ids(n: int = 11, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 4000, (2, n), generator=g)


def _hook_count(hf_model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf_model.modules())


_BASELINE: dict[int, int] = {}


def _no_hooks(hf_model: torch.nn.Module) -> bool:
    """No hook beyond those the model had before axislens.hf touched it (a bridge's wrapped
    ``original_model`` carries the bridge's own, added at its first forward)."""
    if id(hf_model) not in _BASELINE:
        with torch.no_grad():
            hf_model(torch.tensor([[1, 2, 3]]))
        _BASELINE[id(hf_model)] = _hook_count(hf_model)
    return _hook_count(hf_model) == _BASELINE[id(hf_model)]


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def bridge(request):
    return request.getfixturevalue(request.param)


def _cases(model):
    n, d = model.cfg.n_layers, model.cfg.d_model
    axis = _direction(n, d, seed=3)
    # thresholds near the typical projection so some positions are capped and some are not
    cap = CapConfig(axis, layers=(0, n - 1), thresholds=(0.1, -0.2))
    return [
        ("steer", lambda m: axislens.steer(m, axis, 2.5, [0, n - 1]),
         lambda h: hf.steer(h, axis, 2.5, [0, n - 1])),
        ("steer per-layer coeffs", lambda m: axislens.steer(m, axis, (1.0, -3.0), slice(0, 2)),
         lambda h: hf.steer(h, axis, (1.0, -3.0), slice(0, 2))),
        ("steer resid_pre", lambda m: axislens.steer(m, axis, -2.0, [1], hook="resid_pre"),
         lambda h: hf.steer(h, axis, -2.0, [1], hook="resid_pre")),
        ("ablate", lambda m: axislens.ablate(m, axis, [1]), lambda h: hf.ablate(h, axis, [1])),
        ("ablate add-back", lambda m: axislens.ablate(m, axis, [0, 1], coeff=1.5),
         lambda h: hf.ablate(h, axis, [0, 1], coeff=1.5)),
        ("cap", lambda m: axislens.cap(m, cap), lambda h: hf.cap(h, cap)),
        ("public ceiling cap", lambda m: axislens.cap(m, cap.to_ceiling()),
         lambda h: hf.cap(h, cap.to_ceiling())),
    ]  # fmt: skip


@torch.no_grad()
def test_hf_path_matches_bridge_logits(bridge) -> None:
    hf_model = bridge.original_model
    assert _no_hooks(hf_model)
    ids = _ids()
    base = hf_model(ids).logits
    assert torch.equal(base, bridge(ids))  # exact: the same weights and the same forward
    for name, on_bridge, on_hf in _cases(bridge):
        with on_bridge(bridge):
            want = bridge(ids)
        with on_hf(hf_model) as yielded:
            assert yielded is hf_model
            got = hf_model(ids).logits
        assert (want - base).abs().max() > 1e-3, f"{name}: the intervention did nothing"
        torch.testing.assert_close(got, want, atol=TOL, rtol=0, msg=name)
        assert _no_hooks(hf_model), name
    assert torch.equal(hf_model(ids).logits, base)  # exact: hooks gone, the same forward


@torch.no_grad()
def test_hf_intervene_mean_ablate_and_norm_units_match_bridge(tiny_llama) -> None:
    hf_model, n = tiny_llama.original_model, tiny_llama.cfg.n_layers
    axis = _direction(n, tiny_llama.cfg.d_model, seed=5)
    norms = torch.linspace(1.0, 3.0, n)
    ivs = (
        Intervention(MeanAblate(0.4), axis, layers=[2]),
        Intervention(axislens.Add(0.5), axis, layers=[0, 3], norm_units=norms),
    )
    ids = _ids(seed=1)
    with axislens.intervene(tiny_llama, *ivs):
        want = tiny_llama(ids)
    with hf.intervene(hf_model, *ivs):
        got = hf_model(ids).logits
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@torch.no_grad()
def test_hf_positions_under_a_kv_cache_match_the_full_forward(tiny_llama) -> None:
    """Response positions: a prefill then a cached step give the logits of one full forward with
    ``prompt_len`` fixed, and the bridge's."""
    hf_model, n = tiny_llama.original_model, tiny_llama.cfg.n_layers
    assert _no_hooks(hf_model)
    axis = _direction(n, tiny_llama.cfg.d_model, seed=7, scale=3.0)
    ids = _ids(n=10, seed=2)[:1]
    with hf.steer(hf_model, axis, 2.0, [1, 2], positions=Response(), prompt_len=6):
        full = hf_model(ids).logits
    with axislens.steer(tiny_llama, axis, 2.0, [1, 2], positions=Response(), prompt_len=6):
        bridge_full = tiny_llama(ids)
    torch.testing.assert_close(full, bridge_full, atol=TOL, rtol=0)
    with hf.steer(hf_model, axis, 2.0, [1, 2], positions=Response()):
        first = hf_model(ids[:, :6], use_cache=True)
        second = hf_model(ids[:, 6:], past_key_values=first.past_key_values, use_cache=True)
    stepped = torch.cat([first.logits, second.logits], dim=1)
    torch.testing.assert_close(stepped, full, atol=TOL, rtol=0)
    base = hf_model(ids).logits
    # exact: the prompt is untouched (causal attention; its positions run the same ops)
    assert torch.equal(full[:, :6], base[:, :6])
    assert (full[:, 6:] - base[:, 6:]).abs().max() > 1e-3
    assert _no_hooks(hf_model)


def test_hf_hooks_are_removed_when_the_body_raises(tiny_llama) -> None:
    hf_model = tiny_llama.original_model
    assert _no_hooks(hf_model)
    axis = _direction(tiny_llama.cfg.n_layers, tiny_llama.cfg.d_model)
    with pytest.raises(RuntimeError, match="boom"), hf.steer(hf_model, axis, 1.0, [0]):
        assert not _no_hooks(hf_model)
        raise RuntimeError("boom")
    assert _no_hooks(hf_model)


def test_hf_rejects_what_it_cannot_do(tiny_llama) -> None:
    hf_model, n = tiny_llama.original_model, tiny_llama.cfg.n_layers
    assert _no_hooks(hf_model)
    axis = _direction(n, tiny_llama.cfg.d_model)
    with pytest.raises(ValueError, match="TransformerBridge"), hf.steer(tiny_llama, axis, 1.0, [0]):
        pass
    with (
        pytest.raises(ValueError, match="supports hooks"),
        hf.steer(hf_model, axis, 1.0, [0], hook="attn_out"),
    ):
        pass
    with (
        pytest.raises(ValueError, match="d_model 8 but the model has 64"),
        hf.steer(hf_model, _direction(n, 8), 1.0, [0]),
    ):
        pass
    with pytest.raises(ValueError, match="out of range"), hf.steer(hf_model, axis, 1.0, [n]):
        pass
    # a wrong second intervention attaches nothing
    good = Intervention(axislens.Add(1.0), axis, layers=[0])
    bad = Intervention(axislens.Add((1.0, 2.0)), axis, layers=[0, 1, 2])
    with pytest.raises(ValueError, match="3 layers"), hf.intervene(hf_model, good, bad):
        pass
    assert _no_hooks(hf_model)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen", "tiny_gemma"])
def test_decoder_layers_found_per_family(fixture, request) -> None:
    model = request.getfixturevalue(fixture)
    layers = decoder_layers(model.original_model)
    assert layers is model.original_model.model.layers
    assert len(layers) == model.cfg.n_layers


def test_decoder_layers_search_skips_other_module_lists() -> None:
    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 3)
            self.decoder = torch.nn.Module()
            self.decoder.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 3, "hidden_size": 2})()
            self.backbone = Inner()

    m = Wrapped()
    assert decoder_layers(m) is m.backbone.decoder.layers
    m.config.num_hidden_layers = 5
    with pytest.raises(ValueError, match="cannot find the decoder layers of Wrapped"):
        decoder_layers(m)


def test_hf_path_never_imports_transformer_lens() -> None:
    code = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from axislens import hf
from axislens.directions import CapConfig, Direction
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).eval()
axis = Direction(torch.randn(3, 32), method="planted")
ids = torch.randint(0, 64, (1, 7))
with torch.no_grad():
    base = model(ids).logits
    with hf.steer(model, axis, 3.0, layers=[1]):
        steered = model(ids).logits
    with hf.ablate(model, axis, layers=[0, 2]):
        ablated = model(ids).logits
    with hf.cap(model, CapConfig(axis, layers=(2,), thresholds=(5.0,))):
        capped = model(ids).logits
assert (steered - base).abs().max() > 1e-3 and (ablated - base).abs().max() > 1e-3
assert (capped - base).abs().max() > 1e-3
print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformer_lens'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
