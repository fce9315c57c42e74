"""Public artifacts: vector folders, multi-vector capping configs (sequential, float64
reference), numpy-scalar caps under weights_only=True, and the cap sign check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axislens.directions import CapConfig, Direction
from axislens.interventions.attach import ceiling_sequence_interventions, intervene
from axislens.paper_artifacts import (
    CeilingSequence,
    check_cap_sign,
    load_default_vector,
    load_role_vectors,
    load_trait_vectors,
)

D = 64


def _ref_public_cap(h: np.ndarray, entries) -> np.ndarray:
    """The public steerer's capping, in float64, one vector after the other."""
    out = h.astype(np.float64)
    for w, cap in entries:
        v = np.asarray(w, dtype=np.float64)
        v = v / np.linalg.norm(v)
        excess = np.clip(out @ v - cap, 0.0, None)
        out = out - excess[..., None] * v
    return out


@pytest.fixture
def config(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(D, generator=g) for _ in range(3))
    cfg = {
        "vectors": {
            "A": {"layer": 2, "vector": a},
            "B": {"layer": 2, "vector": b},
            "C": {"layer": 3, "vector": c},
        },
        "experiments": [
            {
                "id": "layers_2:4-p0.25",
                "interventions": [
                    {"vector": "B", "cap": np.float64(0.3)},
                    {"vector": "A", "cap": np.float32(-0.2)},
                    {"vector": "C", "cap": 0.1},
                    {"vector": "A"},  # no cap: skipped, as in the public code
                ],
            }
        ],
    }
    path = tmp_path / "capping_config.pt"
    torch.save(cfg, path)
    return path, (a, b, c)


def test_multi_vector_config_applies_in_order_like_the_public_steerer(config):
    path, (a, b, c) = config
    seq = CeilingSequence.from_torch(path, "layers_2:4-p0.25")
    assert [e.name for e in seq.entries] == ["B", "A", "C"] and seq.layers == (2, 3)
    # exact: 100 * 0.25 parsed from the id
    assert seq.percentile == 25.0 and seq.provenance["import"]["skipped_interventions"] == 1
    h = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(1)) * 2
    got = seq.apply(h, 2)
    ref = _ref_public_cap(h.numpy(), [(b.numpy(), 0.3), (a.numpy(), float(np.float32(-0.2)))])
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5)
    other_order = _ref_public_cap(h.numpy(), [(a.numpy(), -0.2), (b.numpy(), 0.3)])
    assert np.abs(other_order - ref).max() > 1e-3  # the order matters, and is kept
    np.testing.assert_allclose(
        seq.apply(h, 3).numpy(), _ref_public_cap(h.numpy(), [(c.numpy(), 0.1)]), atol=1e-5
    )
    with pytest.raises(ValueError, match="repeated layers"):
        CapConfig.from_torch(path, 0)  # one vector per layer: the single-vector form refuses


def test_multi_vector_caps_on_a_model_equal_the_float64_reference(tiny_llama, config):
    path, (a, b, c) = config
    seq = CeilingSequence.from_torch(path, 0)
    tokens = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])
    hf = tiny_llama.original_model

    def ref_hook(layer, entries):
        def fn(mod, inp, out):
            hs = out[0] if isinstance(out, tuple) else out
            new = torch.from_numpy(_ref_public_cap(hs.detach().numpy(), entries)).to(hs.dtype)
            return (new, *out[1:]) if isinstance(out, tuple) else new

        return fn

    handles = [
        hf.model.layers[2].register_forward_hook(
            ref_hook(2, [(b.numpy(), 0.3), (a.numpy(), float(np.float32(-0.2)))])
        ),
        hf.model.layers[3].register_forward_hook(ref_hook(3, [(c.numpy(), 0.1)])),
    ]
    try:
        with torch.no_grad():
            ref = hf(tokens).logits
    finally:
        for hd in handles:
            hd.remove()
    with torch.no_grad():
        base = tiny_llama(tokens)
        with intervene(tiny_llama, *ceiling_sequence_interventions(seq, n_layers=4)):
            got = tiny_llama(tokens)
    assert (got - base).abs().max() > 1e-3  # the caps act
    torch.testing.assert_close(got, ref.to(got.dtype), rtol=0, atol=1e-4)


def test_numpy_scalars_pass_but_other_globals_do_not(tmp_path, config):
    path, _ = config
    seq = CeilingSequence.from_torch(path, 0)
    assert seq.entries[0].threshold == 0.3  # exact: np.float64(0.3) converts losslessly

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"vectors": {}, "experiments": [], "x": Evil()}, bad)
    with pytest.raises(ValueError, match="weights_only=True"):
        CeilingSequence.from_torch(bad, 0)


def test_single_vector_config_with_numpy_caps(tmp_path):
    w = torch.randn(D, generator=torch.Generator().manual_seed(4))
    cfg = {
        "vectors": {"L1": {"layer": 1, "vector": w}},
        "experiments": [
            {"id": "x-p0.5", "interventions": [{"vector": "L1", "cap": np.float64(1.25)}]}
        ],
    }
    torch.save(cfg, tmp_path / "c.pt")
    cap = CapConfig.from_torch(tmp_path / "c.pt", 0)
    assert cap.thresholds == (-1.25,) and cap.percentile == 50.0  # exact: negation, 100 * 0.5


def test_sign_check(config):
    path, (a, b, c) = config
    seq = CeilingSequence.from_torch(path, 0)
    rows = torch.zeros(4, D)
    rows[2] = -(a + b)
    rows[3] = -c
    axis = Direction(rows, method="x")
    with pytest.raises(ValueError, match="wrong sign"):  # A or B may point either way vs -(a+b)
        check_cap_sign(seq, axis.negated())
    rows2 = torch.zeros(4, D)
    rows2[2] = -a
    rows2[3] = -c
    only = CeilingSequence(tuple(e for e in seq.entries if e.name != "B"))
    cos = check_cap_sign(only, Direction(rows2, method="x"))
    assert cos["A@2"] == pytest.approx(-1.0) and cos["C@3"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"A@2 \(\+1.000\)"):
        check_cap_sign(only, Direction(-rows2, method="x"))
    assert check_cap_sign(only, Direction(-rows2, method="x"), expected="positive")["A@2"] > 0.99


def test_vector_folders(tmp_path):
    g = torch.Generator().manual_seed(5)
    rv = tmp_path / "role_vectors"
    rv.mkdir()
    pirate, ghost = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g)
    torch.save({"vector": pirate, "type": "pos_3", "role": "pirate"}, rv / "pirate.pt")
    torch.save(ghost, rv / "ghost.pt")
    roles = load_role_vectors(rv)
    assert roles.names == ("ghost", "pirate")
    # exact: torch.save/load round trips
    assert torch.equal(roles.vectors[1], pirate) and torch.equal(roles.vectors[0], ghost)
    assert set(roles.provenance["import"]["sha256"]) == {"ghost.pt", "pirate.pt"}
    torch.testing.assert_close(roles.mean(), (pirate.double() + ghost.double()) / 2)
    assert torch.equal(roles.direction("pirate").vectors, pirate)
    default = torch.randn(4, D, generator=g)
    torch.save(default, tmp_path / "default_vector.pt")
    d = load_default_vector(tmp_path / "default_vector.pt")
    assert torch.equal(d.vectors, default) and d.provenance["import"]["file"] == "default_vector.pt"
    tv = tmp_path / "trait_vectors"
    tv.mkdir()
    torch.save({"vector": pirate[:, :]}, tv / "calm.pt")
    assert load_trait_vectors(tv).names == ("calm",)
    torch.save(torch.randn(3, D), tv / "odd.pt")
    with pytest.raises(ValueError, match=r"differs from calm\.pt"):
        load_trait_vectors(tv)
    with pytest.raises(ValueError, match=r"no \*\.pt files"):
        load_role_vectors(tmp_path / "nothing")
