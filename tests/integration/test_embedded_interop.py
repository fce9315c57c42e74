"""On the embedded SmolLM2: steering-vectors applied to the plain HF model, and axislens.hf, give
the logits of axislens.steer / cap on the bridge (the layer-index convention on a real model)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import axislens
from axislens import hf
from axislens.directions import CapConfig, Direction


def _axis(model, seed: int = 0) -> Direction:
    g = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    # about the size of a real residual-stream difference at this model's scale
    return Direction(torch.randn(n, d, generator=g), method="planted")


def _ids(model) -> torch.Tensor:
    conv = axislens.format_conversation(
        model, [{"role": "user", "content": "Who are you?"}], add_generation_prompt=True
    )
    return conv.input_ids[None]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("steering_vectors") is None, reason="steering-vectors is not installed"
)
@torch.no_grad()
def test_steering_vectors_on_smol_match_axislens_steer(smol) -> None:
    axis, ids = _axis(smol), _ids(smol)
    layers, coeff = [10, 14, 20], -6.0
    base = smol(ids)
    with axislens.steer(smol, axis, coeff, layers):
        want = smol(ids)
    with axis.to_steering_vectors(layers=layers, coeff=coeff).apply(smol.original_model):
        got = smol.original_model(ids).logits
    assert (want - base).abs().max() > 1e-1
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # an off-by-one layer would not match
    with axis.to_steering_vectors(layers=[x + 1 for x in layers], coeff=coeff).apply(
        smol.original_model
    ):
        shifted = smol.original_model(ids).logits
    assert (shifted - want).abs().max() > 1e-2


@pytest.mark.slow
@torch.no_grad()
def test_hf_path_on_smol_matches_the_bridge(smol) -> None:
    axis, ids = _axis(smol, seed=1), _ids(smol)
    hf_model = smol.original_model
    cap = CapConfig(axis, layers=(12, 13, 14), thresholds=(0.5, 0.5, 0.5))
    base = smol(ids)
    with axislens.cap(smol, cap):
        want = smol(ids)
    assert (want - base).abs().max() > 1e-2
    with hf.cap(hf_model, cap):
        got = hf_model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    with axislens.steer(smol, axis, 4.0, slice(8, 12)):
        want = smol(ids)
    with hf.steer(hf_model, axis, 4.0, slice(8, 12)):
        got = hf_model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
