"""Direction / CapConfig / CeilingCap: validation, files, conventions, public-format import."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from beartype import beartype
from jaxtyping import jaxtyped
from safetensors.torch import save_file

from axislens.directions import CapConfig, CeilingCap, Direction


def rand_direction(n_layers=6, d_model=8, seed=0, **kw) -> Direction:
    g = torch.Generator().manual_seed(seed)
    return Direction(torch.randn(n_layers, d_model, generator=g), method="mean_diff", **kw)


def public_cap(h: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    """The public assistant-axis ``_apply_cap`` formula, written out in float64 (exact unit)."""
    u = w.double() / torch.sqrt((w.double() ** 2).sum())
    proj = torch.einsum("...d,d->...", h, u)
    excess = (proj - c).clamp(min=0.0)
    return h - excess[..., None] * u


def floor_reference(h: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """DESIGN.md §1 floor, ``h - v̂ min(h·v̂ - tau, 0)``, in numpy float64."""
    hn, vn = h.numpy(), v.double().numpy()
    u = vn / np.linalg.norm(vn)
    p = hn @ u
    return torch.from_numpy(hn - np.minimum(p - tau, 0.0)[..., None] * u)


# --------------------------------------------------------------------------- Direction basics


def test_vectors_are_cloned_float32_cpu():
    src = torch.randn(3, 4, dtype=torch.float64)
    d = Direction(src, method="pca")
    assert d.vectors.dtype == torch.float32 and d.vectors.device.type == "cpu"
    assert torch.equal(d.vectors, src.float())  # exact: the constructor casts with .float() too
    src[0, 0] = 1e6
    assert d.vectors[0, 0] != 1e6
    f32 = torch.randn(3, 4)
    d2 = Direction(f32, method="pca")
    assert d2.vectors.data_ptr() != f32.data_ptr()
    assert (d.n_layers, d.d_model) == (3, 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_the_layer(bad):
    v = torch.randn(5, 4)
    v[3, 1] = bad
    with pytest.raises(ValueError, match="at layer 3"):
        Direction(v, method="mean_diff")


def test_float64_overflowing_float32_names_the_layer():
    v = torch.zeros(4, 2, dtype=torch.float64)
    v[2, 0] = 1e300
    with pytest.raises(ValueError, match="float32 at layer 2"):
        Direction(v, method="mean_diff")


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (0, 4), (3, 0)])
def test_wrong_shapes_are_refused(shape):
    with pytest.raises(ValueError, match=r"\[n_layers, d_model\]"):
        Direction(torch.ones(shape), method="mean_diff")


def test_field_validation():
    with pytest.raises(ValueError, match="unknown hook 'hook_resid_post'"):
        Direction(torch.ones(2, 2), method="x", hook="hook_resid_post")
    with pytest.raises(ValueError, match="method"):
        Direction(torch.ones(2, 2), method="")
    with pytest.raises(ValueError, match="JSON"):
        Direction(torch.ones(2, 2), method="x", provenance={"t": torch.ones(1)})
    with pytest.raises(ValueError, match="JSON"):
        Direction(torch.ones(2, 2), method="x", provenance={"x": float("nan")})
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        Direction(np.ones((2, 2)), method="x")  # type: ignore[arg-type]
    d = rand_direction()
    with pytest.raises(AttributeError):
        d.method = "pca"  # type: ignore[misc]


def test_provenance_is_a_read_only_copy():
    prov = {"model": {"id": "m", "layers": (1, 2)}}
    d = Direction(torch.ones(2, 2), method="x", provenance=prov)
    prov["model"]["id"] = "changed"
    assert d.provenance["model"] == {"id": "m", "layers": [1, 2]}
    with pytest.raises(TypeError):
        d.provenance["new"] = 1  # type: ignore[index]


def test_geometry_against_numpy():
    d = rand_direction(seed=1)
    e = rand_direction(seed=2)
    a, b = d.vectors.double().numpy(), e.vectors.double().numpy()
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(d.norms().numpy(), na, rtol=1e-6)
    np.testing.assert_allclose(d.cosine(e).numpy(), (a * b).sum(1) / (na * nb), rtol=1e-6)
    np.testing.assert_allclose(d.units().numpy(), a / na[:, None], rtol=1e-6)
    np.testing.assert_allclose(d.cosine(d).numpy(), np.ones(6), rtol=1e-6)
    np.testing.assert_allclose(d.cosine(d.negated()).numpy(), -np.ones(6), rtol=1e-6)
    acts = torch.randn(2, 5, 8, dtype=torch.float64)
    proj = d.project(acts, layer=4)
    assert proj.shape == (2, 5) and proj.dtype == torch.float64
    np.testing.assert_allclose(proj.numpy(), acts.numpy() @ (a[4] / na[4]), rtol=1e-6, atol=1e-6)


def test_geometry_errors():
    d = rand_direction()
    with pytest.raises(ValueError, match="shapes"):
        d.cosine(rand_direction(n_layers=5))
    with pytest.raises(IndexError, match="layer 6 out of range"):
        d.unit(6)
    v = torch.randn(4, 3)
    v[2] = 0
    z = Direction(v, method="imported")
    assert z.unit(1).shape == (3,)
    with pytest.raises(ValueError, match="zero vector at layer 2"):
        z.unit(2)
    with pytest.raises(ValueError, match="zero vector at layer 2"):
        z.units()
    with pytest.raises(ValueError, match="layer 2"):
        z.cosine(rand_direction(n_layers=4, d_model=3))


def test_jaxtyping_annotations_hold_at_run_time():
    d = rand_direction()
    for fn, args in (
        (Direction.project, (torch.randn(2, 3, 8), 1)),
        (Direction.norms, ()),
        (Direction.cosine, (rand_direction(seed=9),)),
        (Direction.units, ()),
    ):
        jaxtyped(typechecker=beartype)(fn)(d, *args)
    cap = CapConfig(d, layers=(1,), thresholds=(0.0,))
    jaxtyped(typechecker=beartype)(CapConfig.apply)(cap, torch.randn(4, 8), 1)


def test_check_compatible_message():
    d = Direction(torch.ones(30, 576), method="mean_diff")
    d.check_compatible(d_model=576, n_layers=30)
    with pytest.raises(
        ValueError, match=r"^Direction has d_model 576 but the store/model has 896$"
    ):
        d.check_compatible(d_model=896)
    with pytest.raises(ValueError, match="30 layers but the store/model has 24"):
        d.check_compatible(n_layers=24)
    with pytest.raises(ValueError, match="d_model 576 but the store/model has 896"):
        d.project(torch.ones(2, 896), layer=0)


def test_negated_twice_is_identity():
    d = rand_direction(provenance={"model": "m"})
    n = d.negated()
    # exact: negation is exact in floating point
    assert torch.equal(n.vectors, -d.vectors) and n.provenance["negated"] is True
    assert n.negated() == d
    assert d != n


# --------------------------------------------------------------------------- files


def test_save_load_round_trip_is_bit_exact(tmp_path: Path):
    g = torch.Generator().manual_seed(5)
    v = torch.randn(7, 16, generator=g) * torch.logspace(-30, 30, 16)
    prov = {
        "model": {"id": "Qwen/Qwen3-32B", "revision": "abc123", "sha256": "f" * 64},
        "hooks": ["blocks.{l}.hook_resid_post"],
        "weight_processing": {"fold_ln": False, "center_writing_weights": False},
        "chat_template_sha256": "0" * 64,
        "roles": {"ghost": 51, "default": 1200},
        "unicode": "Gemma 2 — ‘quotes’",
    }
    d = Direction(v, method="mean_diff", hook="resid_mid", provenance=prov)
    path = d.save(tmp_path / "axis.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axis.safetensors"]
    back = Direction.load(path)
    # exact: a save/load round trip is bit-exact (the point of this test)
    assert torch.equal(back.vectors.view(torch.int32), d.vectors.view(torch.int32))
    assert back == d
    assert back.method == "mean_diff" and back.hook == "resid_mid"
    assert dict(back.provenance) == json.loads(json.dumps(prov))


def test_save_overwrites_atomically_and_cleans_up(tmp_path: Path, monkeypatch):
    target = tmp_path / "axis.safetensors"
    first = rand_direction(seed=1)
    first.save(target)
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        rand_direction(seed=2).save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axis.safetensors"]
    rand_direction(seed=2).save(target)
    assert Direction.load(target) == rand_direction(seed=2)  # exact: save/load round trip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axis.safetensors"]


def test_load_refuses_foreign_files(tmp_path: Path):
    foreign = tmp_path / "model.safetensors"
    save_file({"vectors": torch.ones(2, 2)}, str(foreign))
    with pytest.raises(ValueError, match="not an axislens Direction file"):
        Direction.load(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a safetensors file"):
        Direction.load(garbage)
    with pytest.raises(FileNotFoundError):
        Direction.load(tmp_path / "missing.safetensors")


def test_from_torch_tensor_and_dicts(tmp_path: Path):
    axis = torch.randn(5, 8)
    torch.save(axis, tmp_path / "plain.pt")
    torch.save({"axis": axis, "layer": 3, "note": "x"}, tmp_path / "dict.pt")
    torch.save({"whatever": axis.double(), "n": 1}, tmp_path / "single.pt")
    for name, key in (("plain.pt", None), ("dict.pt", "axis"), ("single.pt", "whatever")):
        d = Direction.from_torch(tmp_path / name, provenance={"model": "m"})
        assert torch.equal(d.vectors, axis), name  # exact: float32 (or lossless float64) file
        assert d.method == "imported" and d.hook == "resid_post"
        record = d.provenance["import"]
        assert record["key"] == key and record["file"] == name
        assert record["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert d.provenance["model"] == "m"


def test_from_torch_errors(tmp_path: Path):
    torch.save({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match="no 'axis' tensor and 2 tensor entries"):
        Direction.from_torch(tmp_path / "two.pt")
    torch.save(torch.ones(8), tmp_path / "vec.pt")
    with pytest.raises(ValueError, match=r"expected shape \[n_layers, d_model\]"):
        Direction.from_torch(tmp_path / "vec.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a tensor"):
        Direction.from_torch(tmp_path / "list.pt")
    bad = torch.ones(3, 2)
    bad[1, 0] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="at layer 1"):
        Direction.from_torch(tmp_path / "nan.pt")
    torch.save(Path("x"), tmp_path / "object.pt")  # an arbitrary pickled object
    with pytest.raises(ValueError, match="weights_only"):
        Direction.from_torch(tmp_path / "object.pt")


# --------------------------------------------------------------------------- caps


def test_cap_config_validation():
    d = rand_direction()
    with pytest.raises(ValueError, match="2 thresholds for 1 layers"):
        CapConfig(d, layers=(1,), thresholds=(0.0, 1.0))
    with pytest.raises(ValueError, match="caps layer 6 but the direction has 6 layers"):
        CapConfig(d, layers=(6,), thresholds=(0.0,))
    with pytest.raises(ValueError, match="repeated"):
        CapConfig(d, layers=(1, 1), thresholds=(0.0, 0.0))
    with pytest.raises(ValueError, match="threshold at layer 2"):
        CapConfig(d, layers=(1, 2), thresholds=(0.0, float("nan")))
    with pytest.raises(ValueError, match="percentile"):
        CapConfig(d, layers=(1,), thresholds=(0.0,), percentile=250)
    v = d.vectors.clone()
    v[3] = 0
    with pytest.raises(ValueError, match="zero vector at layer 3"):
        CapConfig(Direction(v, method="x"), layers=(3,), thresholds=(0.0,))
    cap = CapConfig(d, layers=[2, 4], thresholds=[torch.tensor(0.5), np.float32(1.5)])
    # exact: 0.5 and 1.5 convert losslessly from a tensor and a numpy scalar
    assert cap.layers == (2, 4) and cap.thresholds == (0.5, 1.5)
    with pytest.raises(ValueError, match="does not cap layer 3"):
        cap.apply(torch.ones(8), layer=3)


def test_cap_apply_is_the_floor_formula():
    d = rand_direction(seed=3)
    cap = CapConfig(d, layers=(1, 4), thresholds=(0.3, -0.7), percentile=25)
    h = torch.randn(3, 11, 8, dtype=torch.float64)
    for layer, tau in zip(cap.layers, cap.thresholds, strict=True):
        torch.testing.assert_close(
            cap.apply(h, layer), floor_reference(h, d.vectors[layer], tau), rtol=0, atol=1e-12
        )


def test_cap_save_load_round_trip(tmp_path: Path):
    cap = CapConfig(
        rand_direction(seed=4, provenance={"model": "m"}),
        layers=(2, 3, 5),
        thresholds=(0.1 + 0.2, -1e-17, 12345.678901234567),
        percentile=25.0,
        provenance={"collected": {"responses": 1200}},
    )
    path = cap.save(tmp_path / "cap.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap.json", "cap.safetensors"]
    record = json.loads(path.read_text())
    assert record["convention"] == "floor" and record["direction_file"] == "cap.safetensors"
    back = CapConfig.load(path)
    # exact: a save/load round trip (JSON floats and safetensors are lossless)
    assert back == cap
    assert back.thresholds == cap.thresholds  # exact float round trip
    assert torch.equal(back.direction.vectors, cap.direction.vectors)
    with pytest.raises(ValueError, match="not an axislens CapConfig"):
        (tmp_path / "other.json").write_text("{}")
        CapConfig.load(tmp_path / "other.json")


def test_floor_to_ceiling_to_floor_gives_identical_caps():
    g = torch.Generator().manual_seed(6)
    d = Direction(torch.randn(10, 32, generator=g) * 3, method="mean_diff")
    h = torch.randn(4, 9, 32, generator=g, dtype=torch.float64) * 2
    layers = (3, 4, 5, 6)
    p = torch.stack([h @ d.unit(layer).double() for layer in layers])
    taus = tuple(float(x) for x in p.flatten(1).quantile(0.25, dim=1))  # paper: 25th percentile
    cap = CapConfig(d, layers=layers, thresholds=taus, percentile=25)
    ceiling = cap.to_ceiling()
    assert isinstance(ceiling, CeilingCap)
    # exact: floor <-> ceiling only negates vectors and thresholds, and negation is exact
    assert ceiling.thresholds == tuple(-t for t in taus)
    back = CapConfig.from_ceiling(ceiling, n_layers=10, percentile=25)
    assert back.layers == cap.layers and back.thresholds == cap.thresholds
    for i, layer in enumerate(layers):
        assert torch.equal(back.direction.vectors[layer], d.vectors[layer])
        floor = cap.apply(h, layer)
        public = public_cap(h, ceiling.vectors[i], ceiling.thresholds[i])
        torch.testing.assert_close(floor, public, rtol=0, atol=1e-12)
        # exact: the ceiling over (-v, -tau) is the floor's bit-exact mirror
        assert torch.equal(ceiling.apply(h, layer), floor)
        assert torch.equal(back.apply(h, layer), floor)
        moved = (p[i] < taus[i]).sum()
        assert 0 < moved < p[i].numel()  # the check is not vacuous


def test_import_public_capping_config(tmp_path: Path):
    g = torch.Generator().manual_seed(7)
    n_layers, d_model = 8, 16
    axis = torch.randn(n_layers, d_model, generator=g)
    # Public code caps a ceiling over the negated axis (role direction): w = -axis, cap = -tau.
    taus = {4: 0.5, 5: -0.25, 6: 1.75}
    cfg = {
        "vectors": {
            f"layer_{i}/contrast": {"layer": i, "vector": (-axis[i]).to(torch.bfloat16).float()}
            for i in range(n_layers)
        },
        "experiments": [
            {
                "id": "layers_0:2-p0.5",
                "interventions": [{"vector": "layer_0/contrast", "cap": 1.0}],
            },
            {
                "id": "layers_4:7-p0.25",
                "interventions": [
                    *({"vector": f"layer_{i}/contrast", "cap": -t} for i, t in taus.items()),
                    {"vector": "layer_1/contrast", "coeff": 2.0},  # not a cap: skipped, as upstream
                ],
            },
        ],
    }
    path = tmp_path / "capping_config.pt"
    torch.save(cfg, path)
    cap = CapConfig.from_torch(path, "layers_4:7-p0.25", provenance={"model": "tiny"})
    assert cap.layers == (4, 5, 6)
    # exact: thresholds are the file's caps negated; 25.0 is parsed from the id "p0.25"
    assert cap.thresholds == (0.5, -0.25, 1.75)
    assert cap.percentile == 25.0
    assert cap.direction.n_layers == n_layers
    # v = -w recovers the axis at every layer (uncapped layers too: one vector per layer).
    # exact: v = -w, a negation of the stored (bfloat16-valued) vectors
    assert torch.equal(cap.direction.vectors, axis.to(torch.bfloat16).float())
    record = cap.provenance["import"]
    assert record["experiment"] == "layers_4:7-p0.25" and record["skipped_interventions"] == 1
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cap.provenance["model"] == "tiny"
    h = torch.randn(3, 5, d_model, generator=g, dtype=torch.float64) * 2
    for layer in cap.layers:
        entry = cfg["vectors"][f"layer_{layer}/contrast"]
        public = public_cap(h, entry["vector"], -taus[layer])
        torch.testing.assert_close(cap.apply(h, layer), public, rtol=0, atol=1e-12)
    by_index = CapConfig.from_torch(path, 0)
    assert (  # exact: -(1.0) and 100 * 0.5, both exact
        by_index.layers == (0,) and by_index.thresholds == (-1.0,) and by_index.percentile == 50.0
    )


def test_import_public_capping_config_errors(tmp_path: Path):
    vec = {"layer": 0, "vector": torch.ones(4)}
    cases = {
        "not_cfg": ({"axis": torch.ones(2, 2)}, "exp", "not a capping config"),
        "unknown_exp": (
            {"vectors": {"a": vec}, "experiments": [{"id": "x", "interventions": []}]},
            "y",
            r"no experiment 'y'; available ids: \['x'\]",
        ),
        "no_caps": (
            {
                "vectors": {"a": vec},
                "experiments": [{"id": "x", "interventions": [{"vector": "a"}]}],
            },
            "x",
            "no capping interventions",
        ),
        "unknown_vec": (
            {
                "vectors": {"a": vec},
                "experiments": [{"id": "x", "interventions": [{"vector": "b", "cap": 1.0}]}],
            },
            "x",
            "unknown vector 'b'",
        ),
        "bad_vec": (
            {"vectors": {"a": {"layer": "0", "vector": torch.ones(4)}}, "experiments": []},
            0,
            r"vectors\['a'\]",
        ),
        "bad_cap": (
            {
                "vectors": {"a": vec},
                "experiments": [
                    {"id": "x", "interventions": [{"vector": "a", "cap": float("inf")}]}
                ],
            },
            "x",
            "cap of 'a'",
        ),
    }
    for name, (obj, exp, message) in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with pytest.raises(ValueError, match=message):
            CapConfig.from_torch(tmp_path / f"{name}.pt", exp)


def test_modules_do_not_import_transformer_lens():
    import subprocess
    import sys

    code = "import sys, axislens.tensor_math, axislens.directions; print('transformer_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
