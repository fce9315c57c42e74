"""calibrate_cap: every unit x pool against numpy percentiles on float64 references (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axislens.analysis.thresholds import (
    Pool,
    TokenProjections,
    calibrate_cap,
    direction_fingerprint,
    project_store,
)
from axislens.analysis.vectors import assistant_axis
from tests.unit.analysis.test_analysis import Planted

POOLS = {
    "all": (Pool(), lambda kind, score: kind in ("role", "default")),
    "all_min3": (Pool(min_score=3), lambda kind, score: kind == "default" or score == 3),
    "default": (Pool.default_only(), lambda kind, score: kind == "default"),
    "roles": (Pool.roles_only(), lambda kind, score: kind == "role"),
    "roles_min3": (Pool.roles_only(3), lambda kind, score: kind == "role" and score == 3),
}


@pytest.fixture
def planted(tmp_path):
    p = Planted(n_roles=6, per_role=4, n_default=7)
    return p, p.store(tmp_path / "a")


def _ref_response(p: Planted, axis, layer: int, keep) -> np.ndarray:
    v = axis.vectors[layer].double().numpy()
    u = v / np.linalg.norm(v)
    ids = sorted(rid for rid in p.acts if keep(p.kinds[rid], p.scores[rid]))
    return np.stack([p.acts[i][layer] for i in ids]) @ u


def _fake_tokens(p: Planted, axis, layers) -> tuple[TokenProjections, dict[str, np.ndarray]]:
    """Per-token projections: a varying number of tokens per item, spread around its mean."""
    rng = np.random.default_rng(3)
    ids = sorted(p.acts)
    vals = {rid: rng.normal(size=(1 + i % 5, len(layers))) * 3 for i, rid in enumerate(ids)}
    tok = TokenProjections(
        ids=tuple(ids),
        layers=tuple(layers),
        values=tuple(torch.from_numpy(vals[r]) for r in ids),
        fingerprint=direction_fingerprint(axis, layers),
    )
    return tok, vals


@pytest.mark.parametrize("name", list(POOLS))
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9])
def test_response_unit_each_pool_is_the_numpy_percentile(planted, name, q):
    p, store = planted
    axis = assistant_axis(store, min_count=1)
    pool, keep = POOLS[name]
    cap = calibrate_cap(store, axis, layers=[0, 2], percentile=q, pool=pool)
    for layer in (0, 2):
        ref = _ref_response(p, axis, layer, keep)
        assert cap.threshold(layer) == pytest.approx(np.percentile(ref, 100 * q), abs=1e-12)
    calib = cap.provenance["calibration"]
    assert calib["unit"] == "response" and calib["pool"] == pool.describe()
    n = sum(1 for rid in p.acts if keep(p.kinds[rid], p.scores[rid]))
    assert calib["n_items"] == n == calib["n_values"]


@pytest.mark.parametrize("name", list(POOLS))
def test_token_unit_each_pool_is_the_numpy_percentile(planted, name):
    p, store = planted
    axis = assistant_axis(store, min_count=1)
    pool, keep = POOLS[name]
    tok, vals = _fake_tokens(p, axis, (0, 1, 2))
    cap = calibrate_cap(
        store, axis, layers=[2, 0], percentile=0.25, unit="token", pool=pool, tokens=tok
    )
    ids = sorted(rid for rid in p.acts if keep(p.kinds[rid], p.scores[rid]))
    pooled = np.concatenate([vals[i] for i in ids])
    assert cap.layers == (2, 0)
    # calibrate_cap takes np.percentile(axis=0) of its own [value, layer] stack: a tolerance
    assert cap.threshold(2) == pytest.approx(np.percentile(pooled[:, 2], 25), abs=1e-12)
    assert cap.threshold(0) == pytest.approx(np.percentile(pooled[:, 0], 25), abs=1e-12)
    assert cap.provenance["calibration"]["n_values"] == len(pooled)
    assert cap.provenance["calibration"]["unit"] == "token"


def test_min_score_never_drops_default_items(planted):
    p, store = planted
    axis = assistant_axis(store, min_count=1)
    n_default = sum(1 for k in p.kinds.values() if k == "default")
    proj = project_store(store, axis, layers=[1], min_score=3)
    assert proj.kinds.count("default") == n_default
    assert all(p.scores[i] == 3 for i, k in zip(proj.ids, proj.kinds, strict=True) if k == "role")
    a = calibrate_cap(store, axis, layers=[1], min_score=3)
    b = calibrate_cap(store, axis, layers=[1], pool=Pool(min_score=3))
    assert a.thresholds == b.thresholds  # exact: min_score=3 resolves to this same Pool
    assert a.provenance["calibration"]["n_items"] == len(proj.ids)


def test_typed_errors(planted, tmp_path):
    p, store = planted
    axis = assistant_axis(store, min_count=1)
    with pytest.raises(ValueError, match="unknown unit 'tokens'"):
        calibrate_cap(store, axis, layers=[1], unit="tokens")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unit='token' needs tokens="):
        calibrate_cap(store, axis, layers=[1], unit="token")
    with pytest.raises(ValueError, match="either pool="):
        calibrate_cap(store, axis, layers=[1], pool=Pool(), min_score=3)
    with pytest.raises(ValueError, match="selects nothing"):
        Pool(default=False, roles=False)
    with pytest.raises(ValueError, match="filters role responses"):
        Pool(roles=False, min_score=3)
    tok, _ = _fake_tokens(p, axis, (1,))
    other = axis.negated()
    with pytest.raises(ValueError, match="another direction"):
        calibrate_cap(store, other, layers=[1], unit="token", tokens=tok)
    short = TokenProjections(tok.ids[:3], tok.layers, tok.values[:3], fingerprint=tok.fingerprint)
    with pytest.raises(ValueError, match="no token projections for"):
        calibrate_cap(store, axis, layers=[1], unit="token", tokens=short)
    unscored = p.store(tmp_path / "u", scores=False)
    with pytest.raises(ValueError, match="no role response has a judge score"):
        calibrate_cap(unscored, axis, layers=[1], min_score=3)
