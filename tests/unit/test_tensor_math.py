"""axislens.tensor_math against float64 numpy references written independently of the implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from beartype import beartype
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jaxtyping import TypeCheckError, jaxtyped

from axislens import ops

# --------------------------------------------------------------------------- references (numpy)


def _u(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(np.sum(v * v))


def ref_projection(h, v):
    return np.einsum("...d,d->...", h, _u(v))


def ref_add(h, v, c):
    return h + c * v


def ref_project_out(h, v):
    u = _u(v)
    return h - np.einsum("...d,d->...", h, u)[..., None] * u


def ref_ablate(h, v, c):
    return ref_project_out(h, v) + c * v


def ref_mean_ablate_scalar(h, v, mu):
    return ref_project_out(h, v) + mu * _u(v)


def ref_floor(h, v, tau):
    u = _u(v)
    p = np.einsum("...d,d->...", h, u)
    return h + np.maximum(tau - p, 0.0)[..., None] * u


def ref_ceiling(h, v, tau):
    u = _u(v)
    p = np.einsum("...d,d->...", h, u)
    return h - np.maximum(p - tau, 0.0)[..., None] * u


def ref_band(h, v, lo, hi):
    u = _u(v)
    p = np.einsum("...d,d->...", h, u)
    return h + (np.clip(p, lo, hi) - p)[..., None] * u


# --------------------------------------------------------------------------- strategies

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def cases(draw):
    d = draw(st.integers(1, 12))
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    h = draw(hnp.arrays(np.float64, (*lead, d), elements=finite))
    v = draw(hnp.arrays(np.float64, (d,), elements=finite).filter(lambda a: np.abs(a).max() > 1e-2))
    a = draw(st.floats(-30, 30, allow_subnormal=False))
    b = draw(st.floats(-30, 30, allow_subnormal=False))
    return h, v, a, b


def T(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float64))


def close(out: torch.Tensor, ref: np.ndarray, h: np.ndarray, v: np.ndarray) -> None:
    assert out.dtype == torch.float64
    scale = 1.0 + np.abs(h).max(initial=0) + np.abs(v).max() * 30 + 30
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12 * scale)


# --------------------------------------------------------------------------- exactness


@settings(max_examples=60, deadline=None)
@given(cases())
def test_matches_float64_references(case):
    h, v, a, b = case
    lo, hi = min(a, b), max(a, b)
    ht, vt = T(h), T(v)
    close(ops.projection(ht, vt), ref_projection(h, v), h, v)
    close(ops.add(ht, vt, a), ref_add(h, v, a), h, v)
    close(ops.project_out(ht, vt), ref_project_out(h, v), h, v)
    close(ops.ablate(ht, vt, a), ref_ablate(h, v, a), h, v)
    close(ops.mean_ablate(ht, vt, a), ref_mean_ablate_scalar(h, v, a), h, v)
    close(ops.mean_ablate(ht, vt, T(v * b)), ref_project_out(h, v) + v * b, h, v)
    close(ops.cap_floor(ht, vt, a), ref_floor(h, v, a), h, v)
    close(ops.cap_ceiling(ht, vt, a), ref_ceiling(h, v, a), h, v)
    close(ops.clamp_band(ht, vt, lo, hi), ref_band(h, v, lo, hi), h, v)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_resulting_projections(case):
    h, v, a, b = case
    lo, hi = min(a, b), max(a, b)
    ht, vt = T(h), T(v)
    p = ref_projection(h, v)
    tol = 1e-9 * (1 + np.abs(h).max(initial=0) + 30)
    np.testing.assert_allclose(
        ops.projection(ops.cap_floor(ht, vt, a), vt).numpy(), np.maximum(p, a), atol=tol
    )
    np.testing.assert_allclose(
        ops.projection(ops.cap_ceiling(ht, vt, a), vt).numpy(), np.minimum(p, a), atol=tol
    )
    np.testing.assert_allclose(
        ops.projection(ops.clamp_band(ht, vt, lo, hi), vt).numpy(), np.clip(p, lo, hi), atol=tol
    )
    np.testing.assert_allclose(ops.projection(ops.project_out(ht, vt), vt).numpy(), 0 * p, atol=tol)
    np.testing.assert_allclose(
        ops.projection(ops.mean_ablate(ht, vt, a), vt).numpy(), 0 * p + a, atol=tol
    )
    norm_v = np.sqrt(np.sum(v * v))
    np.testing.assert_allclose(
        ops.projection(ops.ablate(ht, vt, a), vt).numpy(),
        0 * p + a * norm_v,
        atol=tol * (1 + norm_v),
    )


def test_add_uses_the_raw_vector_not_the_unit():
    h = torch.zeros(3)
    v = torch.tensor([3.0, 0.0, 4.0])
    torch.testing.assert_close(ops.add(h, v, 2.0), torch.tensor([6.0, 0.0, 8.0]))
    torch.testing.assert_close(
        ops.ablate(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 2.0, 0.0]), 3.0),
        torch.tensor([1.0, 6.0, 1.0]),
    )


# --------------------------------------------------------------------------- invariants


@settings(max_examples=40, deadline=None)
@given(cases())
def test_idempotence(case):
    h, v, a, b = case
    lo, hi = min(a, b), max(a, b)
    ht, vt = T(h), T(v)
    tol = 1e-12 * (1 + np.abs(h).max(initial=0) + 30)
    for once in (
        lambda x: ops.cap_floor(x, vt, a),
        lambda x: ops.cap_ceiling(x, vt, a),
        lambda x: ops.project_out(x, vt),
        lambda x: ops.clamp_band(x, vt, lo, hi),
        lambda x: ops.mean_ablate(x, vt, a),
    ):
        first = once(ht)
        np.testing.assert_allclose(once(first).numpy(), first.numpy(), rtol=0, atol=tol)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from([torch.float64, torch.float32]))
def test_floor_is_ceiling_over_negated_vector_exactly(case, dtype):
    h, v, a, _ = case
    ht, vt = T(h).to(dtype), T(v).to(dtype)
    floor = ops.cap_floor(ht, vt, a)
    # exact: negation is exact, so the mirrored computation rounds identically (the point here)
    assert torch.equal(floor, ops.cap_ceiling(ht, -vt, -a))
    assert torch.equal(floor, -ops.cap_ceiling(-ht, vt, -a))


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of a float tensor (so -0.0 != 0.0)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.dtype.itemsize])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_caps_leave_untouched_positions_bit_identical(dtype):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(16, generator=g)
    h = torch.randn(4, 7, 16, generator=g).to(dtype)
    h[..., :3] = -0.0  # signed zeros must survive untouched too
    p = (h.double() @ (v.double() / v.double().norm())).float()
    tau = float(p.median())
    margin = 1e-2  # keep clear of rounding at the threshold in half precision
    for op, untouched, moved in (
        (ops.cap_floor, p >= tau + margin, p < tau - margin),
        (ops.cap_ceiling, p <= tau - margin, p > tau + margin),
    ):
        out = op(h, v, tau)
        assert out.dtype == dtype and out.shape == h.shape
        assert untouched.any() and moved.any()
        # exact: untouched positions are returned bit-identical by contract
        assert torch.equal(bits(out[untouched]), bits(h[untouched]))
        assert (out[moved] != h[moved]).any(dim=-1).all()
    inside = (p > tau - 0.5 + margin) & (p < tau + 0.5 - margin)
    band = ops.clamp_band(h, v, tau - 0.5, tau + 0.5)
    # exact: positions inside the band are returned bit-identical by contract
    assert inside.any() and torch.equal(bits(band[inside]), bits(h[inside]))


def test_bfloat16_input_is_computed_in_float32_and_cast_back():
    g = torch.Generator().manual_seed(1)
    h32 = torch.randn(3, 5, 64, generator=g) * 4
    hb = h32.to(torch.bfloat16)
    v = torch.randn(64, generator=g)
    for name, args in (
        ("cap_floor", (0.3,)),
        ("cap_ceiling", (0.3,)),
        ("clamp_band", (-0.5, 0.5)),
        ("project_out", ()),
        ("ablate", (2.0,)),
        ("mean_ablate", (1.0,)),
        ("add", (0.7,)),
    ):
        fn = getattr(ops, name)
        out = fn(hb, v, *args)
        assert out.dtype == torch.bfloat16, name
        expected = fn(hb.float(), v, *args).to(torch.bfloat16)
        # exact: the bf16 path is this very float32 computation followed by the same cast
        assert torch.equal(out, expected), name
    proj = ops.projection(hb, v.to(torch.bfloat16))
    assert proj.dtype == torch.bfloat16 and proj.shape == (3, 5)
    ref = ref_projection(hb.double().numpy(), v.to(torch.bfloat16).double().numpy())
    np.testing.assert_allclose(proj.double().numpy(), ref, rtol=1e-2, atol=0.05)


def test_inputs_are_never_mutated():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 3, 8, generator=g)
    v = torch.randn(8, generator=g)
    mu = torch.randn(8, generator=g)
    h0, v0, mu0 = h.clone(), v.clone(), mu.clone()
    for out in (
        ops.add(h, v, 1.0),
        ops.project_out(h, v),
        ops.ablate(h, v, 1.0),
        ops.mean_ablate(h, v, mu),
        ops.cap_floor(h, v, 100.0),
        ops.cap_ceiling(h, v, -100.0),
        ops.clamp_band(h, v, -0.1, 0.1),
    ):
        assert out.data_ptr() != h.data_ptr()
    # exact: inputs equal their untouched clones
    assert torch.equal(h, h0) and torch.equal(v, v0) and torch.equal(mu, mu0)


def test_scalars_may_be_zero_dim_tensors():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 8, generator=g, dtype=torch.float64)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    # exact: both scalar forms become the same 0-d tensor, then run the same kernel
    assert torch.equal(ops.cap_floor(h, v, torch.tensor(0.25)), ops.cap_floor(h, v, 0.25))
    assert torch.equal(ops.add(h, v, torch.tensor(2.0)), ops.add(h, v, 2.0))
    assert torch.equal(
        ops.clamp_band(h, v, torch.tensor(-0.5), 0.5), ops.clamp_band(h, v, -0.5, 0.5)
    )


def test_gradients_flow_through_h():
    h = torch.randn(3, 4, requires_grad=True)
    ops.cap_floor(h, torch.ones(4), 0.0).sum().backward()
    assert h.grad is not None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda h, z: ops.cap_floor(h, z, 0.0),
        lambda h, z: ops.cap_ceiling(h, z, 0.0),
        lambda h, z: ops.project_out(h, z),
        lambda h, z: ops.projection(h, z),
        lambda h, z: ops.clamp_band(h, z, 0.0, 1.0),
        lambda h, z: ops.mean_ablate(h, z, 1.0),
        lambda h, z: ops.ablate(h, z, 1.0),
        lambda h, z: ops.unit(z),
    ],
)
def test_zero_vector_raises(call):
    with pytest.raises(ValueError, match="non-zero"):
        call(torch.ones(2, 4), torch.zeros(4))


def test_clear_errors():
    h = torch.ones(2, 4)
    with pytest.raises(ValueError, match=r"shape \[d_model\]=\[4\]"):
        ops.cap_floor(h, torch.ones(5), 0.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        ops.clamp_band(h, torch.ones(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="0-d tensor"):
        ops.cap_floor(h, torch.ones(4), torch.ones(2))
    with pytest.raises(ValueError, match="tau must be finite"):
        ops.cap_floor(h, torch.ones(4), float("nan"))
    with pytest.raises(TypeError, match="floating-point"):
        ops.project_out(torch.ones(2, 4, dtype=torch.int64), torch.ones(4))


def test_jaxtyping_annotations_are_checked_at_run_time():
    checked = jaxtyped(typechecker=beartype)(ops.cap_floor)
    out = checked(torch.randn(2, 3, 8), torch.randn(8), 0.5)
    assert out.shape == (2, 3, 8)
    with pytest.raises(TypeCheckError):
        checked(torch.randn(2, 3, 8), torch.randn(2, 8), 0.5)
    proj = jaxtyped(typechecker=beartype)(ops.projection)
    assert proj(torch.randn(5, 8), torch.randn(8)).shape == (5,)


def test_integer_scalars_pass_the_runtime_type_check():
    checked = jaxtyped(typechecker=beartype)(ops.add)
    torch.testing.assert_close(checked(torch.zeros(2), torch.ones(2), 2), torch.full((2,), 2.0))
