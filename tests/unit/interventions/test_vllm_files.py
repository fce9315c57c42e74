"""to_vllm: every op's exported (u, a, b, lo, hi) reproduce the op's own kernel under the
plugin's formula (written out here in float64), and what vLLM cannot run is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

import axislens
from axislens.directions import CapConfig, Direction
from axislens.interventions.attach import Intervention, compile_kernels
from axislens.interventions.operations import (
    Ablate,
    Add,
    CapCeiling,
    CapFloor,
    ClampBand,
    Last,
    MeanAblate,
    Prompt,
    Response,
    Spans,
)
from axislens.interventions.vllm_files import VLLM_FORMAT, to_vllm

N_LAYERS, D = 6, 16


@pytest.fixture
def axis():
    g = torch.Generator().manual_seed(0)
    return Direction(torch.randn(N_LAYERS, D, generator=g, dtype=torch.float64) * 3, method="mean_diff",
                     provenance={"model": {"model_id": "tiny"}})  # fmt: skip


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).double() for k in f.keys()}, f.metadata()  # noqa: SIM118


def _plugin(h, t, layer):
    """The plugin's kernel (axislens_vllm.model.move) for one layer, in float64."""
    for k in range(t["u"].shape[0]):
        u = t["u"][k, layer]
        p = h @ u
        coef = t["a"][k, layer] * p + t["b"][k, layer]
        coef = coef + torch.relu(t["lo"][k, layer] - p) - torch.relu(p - t["hi"][k, layer])
        h = h + coef.unsqueeze(-1) * u
    return h


OPS = [
    Add(-2.5),
    Add((1.0, -1.0)),
    Ablate(0.0),
    Ablate(0.7),
    MeanAblate(1.5),
    CapFloor((0.5, -0.3)),
    CapCeiling(0.2),
    ClampBand(-0.4, 0.6),
]


@pytest.mark.parametrize("op", OPS, ids=lambda o: repr(o))
@pytest.mark.parametrize("norm_units", [False, True])
def test_each_op_exports_to_its_own_kernel(op, norm_units, axis, tmp_path):
    norms = torch.linspace(2.0, 7.0, N_LAYERS, dtype=torch.float64) if norm_units else None
    iv = Intervention(op, axis, layers=(2, 4), norm_units=norms)
    t, meta = _read(to_vllm(tmp_path / "x.safetensors", iv))
    assert meta["format"] == VLLM_FORMAT and meta["positions"] == "all"
    assert json.loads(meta["model"]) == {"model": {"model_id": "tiny"}}
    kernels = dict(compile_kernels(iv, N_LAYERS, D, torch.float64, lambda _: "cpu", "test"))
    h = torch.randn(20, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for layer in range(N_LAYERS):
        want = kernels[layer](h) if layer in kernels else h
        torch.testing.assert_close(_plugin(h, t, layer), want, rtol=1e-5, atol=1e-5)
    moved = (kernels[2](h) - h).abs().max()
    assert moved > 1e-2  # the check above would notice a no-op export


def test_entries_at_one_layer_run_in_the_given_order(axis, tmp_path):
    a = Intervention(CapCeiling(0.1), axis, layers=(3,))
    b = Intervention(Add(1.0), axis, layers=(3,))
    t, _ = _read(to_vllm(tmp_path / "x.safetensors", a, b))
    assert t["u"].shape == (2, N_LAYERS, D)
    h = torch.randn(9, D, dtype=torch.float64)
    ka = dict(compile_kernels(a, N_LAYERS, D, torch.float64, lambda _: "cpu", "a"))[3]
    kb = dict(compile_kernels(b, N_LAYERS, D, torch.float64, lambda _: "cpu", "b"))[3]
    torch.testing.assert_close(_plugin(h, t, 3), kb(ka(h)))


def test_a_cap_config_exports_as_cap_applies_it(axis, tmp_path):
    cap = CapConfig(axis, layers=(1, 5), thresholds=(0.4, -0.2))
    t, _ = _read(axislens.to_vllm(tmp_path / "cap.safetensors", cap))
    assert torch.equal(
        t["lo"][0, [1, 5]], torch.tensor([0.4, -0.2], dtype=torch.float64).float().double()
    )
    assert (t["u"][0, [0, 2, 3, 4]] == 0).all() and math.isinf(float(t["hi"][0, 1]))


def test_resid_pre_moves_to_the_layer_before(axis, tmp_path):
    iv = Intervention(Add(1.0), axis, layers=(3,), hook="resid_pre")
    t, _ = _read(to_vllm(tmp_path / "x.safetensors", iv))
    assert (t["u"][0, 2] != 0).any() and (t["u"][0, 3] == 0).all()
    torch.testing.assert_close(t["u"][0, 2], axis.unit(3).double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", [Prompt(), Response()])
def test_prompt_and_response_rules_are_recorded(rule, axis, tmp_path):
    iv = Intervention(Add(1.0), axis, layers=(1,), positions=rule)
    _, meta = _read(to_vllm(tmp_path / "x.safetensors", iv))
    assert meta["positions"] == type(rule).__name__.lower()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ax: Intervention(Add(1.0), ax, layers=(1,), positions=Last()), "positions Last()"),
        (lambda ax: Intervention(Add(1.0), ax, layers=(1,), positions=Spans(((0, 2),))), "cannot run in vLLM"),
        (lambda ax: Intervention(Add(1.0), ax, layers=(1,), hook="attn_out"), "hook 'attn_out'"),
        (lambda ax: Intervention(Add(1.0), ax, layers=(0,), hook="resid_pre"), "resid_pre of layer 0"),
        (lambda ax: Intervention(MeanAblate(torch.ones(D)), ax, layers=(1,)), "vector mu"),
    ],
)  # fmt: skip
def test_what_vllm_cannot_run_is_refused_with_the_reason(make, message, axis, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_vllm(tmp_path / "x.safetensors", make(axis))
    assert not (tmp_path / "x.safetensors").exists()


def test_mixed_position_rules_are_refused(axis, tmp_path):
    a = Intervention(Add(1.0), axis, layers=(1,), positions=Prompt())
    b = Intervention(Add(1.0), axis, layers=(2,), positions=Response())
    with pytest.raises(ValueError, match="one position rule per vLLM file"):
        to_vllm(tmp_path / "x.safetensors", a, b)
