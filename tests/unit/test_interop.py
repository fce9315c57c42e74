"""Exporters, each round-tripped through the real library: steering-vectors (same logits as
axislens.steer), repeng (ControlVector, ControlModel, its own GGUF export), llama.cpp control
vectors read back with gguf, and the public capping-config .pt layout (public ceiling semantics,
float64 reference; from_torch(to_torch(x)) == x)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import axislens
from axislens import hf
from axislens.directions import CapConfig, Direction

TOL = 1e-5
HAS_STEERING_VECTORS = importlib.util.find_spec("steering_vectors") is not None
HAS_REPENG = importlib.util.find_spec("repeng") is not None
NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def _direction(n_layers: int, d_model: int, seed: int = 0, zero: tuple[int, ...] = ()) -> Direction:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_layers, d_model, generator=g)
    v[list(zero)] = 0.0
    return Direction(v, method="mean_diff", provenance={"model_type": "llama", "roles": 3})


def _ids(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 4000, (2, 9), generator=g)


# --------------------------------------------------------------------------- steering-vectors


@pytest.mark.skipif(not HAS_STEERING_VECTORS, reason="steering-vectors is not installed")
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
@torch.no_grad()
def test_steering_vectors_apply_gives_axislens_steer_logits(fixture, request) -> None:
    from steering_vectors import SteeringVector

    model = request.getfixturevalue(fixture)
    n = model.cfg.n_layers
    axis = _direction(n, model.cfg.d_model, seed=1)
    layers, coeff = [0, n - 1], -3.0
    sv = axis.to_steering_vectors(layers=layers, coeff=coeff)
    assert isinstance(sv, SteeringVector) and sv.layer_type == "decoder_block"
    assert sorted(sv.layer_activations) == layers
    ids = _ids()
    base = model(ids)
    with axislens.steer(model, axis, coeff, layers):
        want = model(ids)
    with sv.apply(model.original_model):
        got = model.original_model(ids).logits
    assert (want - base).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # the library's multiplier scales the same vector: multiplier=-1 undoes the sign
    with sv.apply(model.original_model, multiplier=-1.0):
        flipped = model.original_model(ids).logits
    with axislens.steer(model, axis, -coeff, layers):
        want_flipped = model(ids)
    torch.testing.assert_close(flipped, want_flipped, atol=TOL, rtol=0)


@pytest.mark.skipif(not HAS_STEERING_VECTORS, reason="steering-vectors is not installed")
def test_steering_vectors_layers_default_to_non_zero_rows_and_validate() -> None:
    axis = _direction(5, 8, zero=(0, 3))
    sv = axis.to_steering_vectors(coeff=2.0)
    assert sorted(sv.layer_activations) == [1, 2, 4]
    # exact: the exporter computes this same float32 product coeff * v (as the Add kernel does)
    torch.testing.assert_close(sv.layer_activations[4], 2.0 * axis.vectors[4], atol=0, rtol=0)
    assert sorted(axis.to_steering_vectors(layers=slice(-2, None)).layer_activations) == [3, 4]
    with pytest.raises(ValueError, match="out of range"):
        axis.to_steering_vectors(layers=[5])
    with pytest.raises(ValueError, match="'resid_pre'"):
        Direction(torch.ones(2, 3), method="m", hook="resid_pre").to_steering_vectors()


# --------------------------------------------------------------------------- llama.cpp GGUF


def _read_gguf(path) -> tuple[dict[str, object], dict[str, np.ndarray], dict[str, object]]:
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items()}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    types = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape)) for t in reader.tensors}
    return fields, tensors, types


def test_gguf_control_vector_reads_back_with_gguf(tmp_path) -> None:
    import gguf

    axis = _direction(6, 16, seed=2)
    path = axis.to_gguf(tmp_path / "axis.gguf", layers=[4, 2, 5], coeff=-1.5)
    fields, tensors, types = _read_gguf(path)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 3
    assert sorted(tensors) == ["direction.2", "direction.4", "direction.5"]
    for layer in (2, 4, 5):
        assert types[f"direction.{layer}"] == (gguf.GGMLQuantizationType.F32, (16,))
        # exact: the file holds the same float32 product coeff * v the exporter computes
        np.testing.assert_array_equal(
            tensors[f"direction.{layer}"], (-1.5 * axis.vectors[layer]).numpy()
        )
    assert not list(tmp_path.glob(".*.tmp"))


def test_gguf_default_layers_skip_layer_zero_which_llama_cpp_refuses(tmp_path) -> None:
    axis = _direction(4, 8, seed=3, zero=(2,))
    _, tensors, _ = _read_gguf(axis.to_gguf(tmp_path / "a.gguf", model_type="qwen2"))
    assert sorted(tensors) == ["direction.1", "direction.3"]
    with pytest.raises(ValueError, match="layer 0"):
        axis.to_gguf(tmp_path / "b.gguf", layers=[0, 1])
    assert not (tmp_path / "b.gguf").exists()


# --------------------------------------------------------------------------- repeng

REPENG_CHILD = """
import numpy
# repeng 0.4.0 declares numpy<2 and annotates with numpy.float_ (removed in numpy 2.0); in this
# child process only, restore that alias so the real library imports under the dev numpy.
if not hasattr(numpy, "float_"):
    numpy.float_ = numpy.float64
import filecmp, sys, tempfile, pathlib, torch, axislens
from repeng import ControlModel, ControlVector
from axislens.directions import Direction

model = axislens.tiny_model("llama", n_layers=4, d_model=64, seed=0)
g = torch.Generator().manual_seed(4)
axis = Direction(torch.randn(4, 64, generator=g), method="mean_diff",
                 provenance={"model_type": "llama"})
layers, coeff = [1, 3], 2.5
cv = axis.to_repeng(layers=layers, coeff=coeff)
assert isinstance(cv, ControlVector) and cv.model_type == "llama", cv
assert sorted(cv.directions) == layers
for layer in layers:
    assert cv.directions[layer].dtype == numpy.float32
    # exact: the same float32 product coeff * v the exporter computes
    assert numpy.array_equal(cv.directions[layer], (coeff * axis.vectors[layer]).numpy())

ids = torch.randint(10, 4000, (2, 9), generator=g)
with torch.no_grad():
    base = model(ids)
    with axislens.steer(model, axis, coeff, layers):
        want = model(ids)
    controlled = ControlModel(model.original_model, layers)
    controlled.set_control(cv, 1.0)
    # repeng masks by position_ids assuming [batch, seq]; transformers 5 passes [1, seq] by
    # default, so give them per row (the same positions, the same logits)
    pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
    got = controlled(ids, position_ids=pos).logits
    controlled.reset()
    controlled.unwrap()
assert (want - base).abs().max() > 1e-2
err = float((got - want).abs().max())
assert err < 1e-5, err

tmp = pathlib.Path(tempfile.mkdtemp())
ours = axis.to_gguf(tmp / "ours.gguf", layers=layers, coeff=coeff)
cv.export_gguf(str(tmp / "repeng.gguf"))
assert filecmp.cmp(ours, tmp / "repeng.gguf", shallow=False), "GGUF bytes differ from repeng's"
assert ControlVector.import_gguf(str(ours)) == cv
print("ok", err)
"""


@pytest.mark.skipif(not HAS_REPENG, reason="repeng is not installed")
def test_repeng_control_vector_model_and_gguf_round_trip() -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REPENG_CHILD)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("ok")


@pytest.mark.skipif(not (HAS_REPENG and NUMPY2), reason="needs repeng installed and numpy>=2")
def test_to_repeng_names_the_numpy_conflict() -> None:
    if hasattr(np, "float_"):
        pytest.skip("numpy.float_ is present; repeng imports")
    with pytest.raises(ImportError, match="needs numpy<2"):
        _direction(3, 4).to_repeng()


# --------------------------------------------------------------------------- capping configs


def _public_ceiling(h: torch.Tensor, w: torch.Tensor, cap: float) -> torch.Tensor:
    """The public steerer's cap, float64: ``h - max(0, h·u - cap) u``, ``u = w / (|w| + 1e-8)``."""
    u = w.double() / (w.double().norm() + 1e-8)
    p = h @ u
    return h - (p - cap).clamp(min=0).unsqueeze(-1) * u


def _cap(model, percentile: float | None = 25.0) -> CapConfig:
    n, d = model.cfg.n_layers, model.cfg.d_model
    axis = _direction(n, d, seed=6, zero=(1,) if n > 3 else ())
    return CapConfig(
        axis,
        layers=(n - 1, 0),
        thresholds=(-0.3, 0.2),
        percentile=percentile,
        provenance={"model": "tiny", "roles": ["a", "b"]},
    )


def test_capping_config_pt_layout_round_trips(tmp_path, tiny_llama) -> None:
    cap = _cap(tiny_llama, percentile=29.0)
    path = cap.to_torch(tmp_path / "capping_config.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"vectors", "experiments"}
    (exp,) = raw["experiments"]
    assert exp["id"] == "layers_3,0-p0.29"
    assert exp["interventions"] == [  # exact: the caps are the thresholds negated
        {"vector": "layer_3", "cap": 0.3},
        {"vector": "layer_0", "cap": -0.2},
    ]
    assert sorted(raw["vectors"]) == ["layer_0", "layer_2", "layer_3"]  # row 1 is zero
    for name, entry in raw["vectors"].items():
        layer = entry["layer"]
        assert name == f"layer_{layer}"
        assert torch.equal(entry["vector"], -cap.direction.vectors[layer])  # exact: negation

    back = CapConfig.from_torch(path, exp["id"], n_layers=4, provenance=cap.provenance)
    # exact: a to_torch/from_torch round trip (two negations, a lossless .pt)
    assert back.layers == cap.layers and back.thresholds == cap.thresholds
    assert back.percentile == cap.percentile
    assert torch.equal(back.direction.vectors, cap.direction.vectors)
    assert back.direction.hook == cap.direction.hook
    prov = dict(back.provenance)
    assert prov.pop("import")["experiment"] == exp["id"]
    assert prov == dict(cap.provenance)
    # the same value, but for provenance: from_torch(to_torch(x)) == x
    same = CapConfig(
        Direction(back.direction.vectors, method=cap.direction.method,
                  provenance=cap.direction.provenance),
        back.layers, back.thresholds, back.percentile, cap.provenance,
    )  # fmt: skip
    assert same == cap


def test_capping_config_contiguous_ids_and_hook_check(tmp_path) -> None:
    axis = _direction(8, 4)
    cap = CapConfig(axis, layers=(4, 5, 6), thresholds=(1.0, 2.0, 3.0), percentile=25)
    raw = torch.load(cap.to_torch(tmp_path / "c.pt"), weights_only=True)
    assert raw["experiments"][0]["id"] == "layers_4:7-p0.25"
    # exact: 100 * 0.25 parsed from the id
    assert CapConfig.from_torch(tmp_path / "c.pt", "layers_4:7-p0.25").percentile == 25.0
    named = torch.load(cap.to_torch(tmp_path / "d.pt", experiment_id="mine"), weights_only=True)
    assert named["experiments"][0]["id"] == "mine"
    pre = CapConfig(
        Direction(torch.ones(2, 3), method="m", hook="resid_pre"), layers=(1,), thresholds=(0.0,)
    )
    with pytest.raises(ValueError, match="'resid_pre'"):
        pre.to_torch(tmp_path / "e.pt")


@torch.no_grad()
def test_capping_config_pt_has_the_public_semantics(tmp_path, tiny_llama) -> None:
    """Loaded back and applied as the public steerer does (sequential ceiling caps at the decoder
    layer outputs, float64), the exported file gives the logits of axislens' floor cap."""
    cap = _cap(tiny_llama)
    raw = torch.load(cap.to_torch(tmp_path / "cap.pt"), weights_only=True)
    hf_model = tiny_llama.original_model
    ids = _ids(seed=3)

    by_layer: dict[int, list[tuple[torch.Tensor, float]]] = {}
    for it in raw["experiments"][0]["interventions"]:
        entry = raw["vectors"][it["vector"]]
        by_layer.setdefault(entry["layer"], []).append((entry["vector"], float(it["cap"])))

    def public_hook(items):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            x = h.double()
            for w, c in items:
                x = _public_ceiling(x, w, c)
            x = x.to(h.dtype)
            return (x, *output[1:]) if isinstance(output, tuple) else x

        return hook

    layers = hf.decoder_layers(hf_model)
    handles = [layers[k].register_forward_hook(public_hook(v)) for k, v in by_layer.items()]
    try:
        reference = hf_model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    base = hf_model(ids).logits
    with axislens.cap(tiny_llama, cap):
        ours = tiny_llama(ids)
    assert (reference - base).abs().max() > 1e-3
    torch.testing.assert_close(ours, reference, atol=TOL, rtol=0)
    # and per layer, on random states: the public ceiling == CapConfig.apply (floor)
    h = torch.randn(50, tiny_llama.cfg.d_model, dtype=torch.float64)
    for layer, items in by_layer.items():
        ((w, c),) = items
        torch.testing.assert_close(
            cap.apply(h.float(), layer).double(), _public_ceiling(h, w, c), atol=1e-5, rtol=0
        )
