"""Analysis plane: role/default/trait vectors, the axis, PCA, probes, stability, thresholds.

Every check is against planted structure or an independent numpy float64 reference.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from axislens.analysis import MeanDiff, RoleVectors, assistant_axis, role_projections, role_vectors
from axislens.analysis.probing import Probe
from axislens.analysis.space import PCA1, compare_loadings, cross_model, layer_profile, persona_pca
from axislens.analysis.stability import bootstrap, split_half
from axislens.analysis.thresholds import Pool, calibrate_cap, project_store
from axislens.analysis.traits import trait_cosines, trait_vectors
from axislens.directions import CapConfig, Direction
from axislens.store import ActivationStore, ItemRecord

LAYERS = (0, 1, 2)
D = 12


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def build_store(
    root: Path,
    acts: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    roles: Mapping[str, str],
    *,
    scores: Mapping[str, int | None] | None = None,
    model_id: str = "synthetic-a",
    layers: tuple[int, ...] = LAYERS,
    n_model_layers: int | None = None,
    hooks: tuple[str, ...] = ("resid_post",),
    shard: int = 7,
) -> ActivationStore:
    """A float64 store holding exactly ``acts`` (``{id: [layer, d_model]}``)."""
    d_model = next(iter(acts.values())).shape[-1]
    manifest = {
        "model": {"model_id": model_id, "n_layers": n_model_layers or max(layers) + 1},
        "hooks": list(hooks),
        "layers": list(layers),
        "span": "content",
        "d_model": int(d_model),
        "dtype": "float64",
    }
    store = ActivationStore.create(root, manifest)
    ids = sorted(acts)
    recs = []
    for rid in ids:
        q = rid.rsplit("/", 1)[-1]
        msgs = (
            {"role": "system", "content": f"You are a {roles[rid]}."},
            {"role": "user", "content": q},
        )
        recs.append(
            ItemRecord(
                rid, kinds[rid], roles[rid], 0, q, (*msgs, {"role": "assistant", "content": "ok"})
            )
        )  # type: ignore[arg-type]
    store.append_records(recs)
    for k in range(0, len(ids), shard):
        part = ids[k : k + shard]
        t = torch.from_numpy(np.stack([acts[i] for i in part]))
        store.append_activations(part, {h: t for h in hooks})
    if scores is not None:
        store.append_scores(
            [{"id": i, "score": s, "raw": str(s), "judge": "synthetic"} for i, s in scores.items()]
        )
    return ActivationStore.open(root)


class Planted:
    """Roles spread along ``-u_l`` (plus orthogonal offsets), defaults at ``+u_l``.

    A few low-score items per role sit far along ``+u`` and must be filtered out.
    """

    def __init__(
        self,
        n_roles: int = 24,
        per_role: int = 6,
        n_default: int = 10,
        *,
        d_model: int = D,
        seed: int = 0,
        noise: float = 0.05,
        counts: Mapping[str, int] | None = None,
        role_names: list[str] | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.u = np.stack([unit(rng.normal(size=d_model)) for _ in LAYERS])  # [layer, d]
        self.acts: dict[str, np.ndarray] = {}
        self.kinds: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.scores: dict[str, int | None] = {}
        names = role_names or [f"role{r:02d}" for r in range(n_roles)]
        self.c = {name: 1.0 + rng.random() for name in names}
        for name in names:
            offset = rng.normal(size=(len(LAYERS), d_model))
            offset -= (offset * self.u).sum(-1, keepdims=True) * self.u  # orthogonal to u
            mean = -self.c[name] * self.u * 4 + 0.5 * offset
            n = (counts or {}).get(name, per_role)
            for i in range(n + 2):
                rid = f"role/{name}/p0/q{i:03d}"
                self.add(rid, "role", name, mean + noise * rng.normal(size=mean.shape))
                self.scores[rid] = 3
            for i in (n, n + 1):  # out-of-role responses: far on the Assistant side
                rid = f"role/{name}/p0/q{i:03d}"
                self.acts[rid] = self.acts[rid] + 40 * self.u
                self.scores[rid] = 1
        for i in range(n_default):
            rid = f"default/p0/q{i:03d}"
            self.add(rid, "default", "default", 6 * self.u + noise * rng.normal(size=self.u.shape))
            self.scores[rid] = None  # defaults are never filtered

    def add(self, rid: str, kind: str, role: str, x: np.ndarray) -> None:
        self.acts[rid], self.kinds[rid], self.roles[rid] = x, kind, role

    def store(self, root: Path, *, scores: bool = True, **kw) -> ActivationStore:
        return build_store(
            root, self.acts, self.kinds, self.roles, scores=self.scores if scores else None, **kw
        )

    def reference_axis(self, *, min_score: int | None = 3, min_count: int = 1) -> np.ndarray:
        """numpy float64: mean(defaults) - mean over roles of mean(qualifying responses)."""
        by_role: dict[str, list[np.ndarray]] = {}
        for rid, x in self.acts.items():
            if self.kinds[rid] != "role":
                continue
            s = self.scores[rid]
            by_role.setdefault(self.roles[rid], [])
            if min_score is None or (s is not None and s >= min_score):
                by_role[self.roles[rid]].append(x)
        means = [np.mean(v, axis=0) for v in by_role.values() if len(v) >= min_count]
        default = np.mean(
            [x for rid, x in self.acts.items() if self.kinds[rid] == "default"], axis=0
        )
        return default - np.mean(means, axis=0)


@pytest.fixture
def planted(tmp_path):
    p = Planted()
    return p, p.store(tmp_path / "a")


# --------------------------------------------------------------------------- the axis


def test_axis_recovers_planted_direction_and_matches_reference(planted):
    p, store = planted
    axis = assistant_axis(store, min_score=3, min_count=5, adjust="none")
    assert axis.method == "mean_diff" and axis.n_layers == 3 and axis.d_model == D
    ref = p.reference_axis(min_score=3)
    for layer in LAYERS:
        v = axis.vectors[layer].double().numpy()
        assert float(unit(v) @ p.u[layer]) > 0.99
        np.testing.assert_allclose(v, ref[layer], rtol=1e-6, atol=1e-6)
    assert axis.provenance["roles"] == {f"role{r:02d}": 6 for r in range(24)}
    assert axis.provenance["n_default"] == 10
    assert axis.provenance["model"]["model_id"] == "synthetic-a"


def test_score_filter_matters_and_none_means_unfiltered(planted):
    p, store = planted
    filtered = (
        assistant_axis(store, min_score=3, min_count=5, adjust="none").vectors.double().numpy()
    )
    unfiltered = (
        assistant_axis(store, min_score=None, min_count=5, adjust="none").vectors.double().numpy()
    )
    np.testing.assert_allclose(unfiltered, p.reference_axis(min_score=None), rtol=1e-6, atol=1e-6)
    assert np.abs(filtered - unfiltered).max() > 1.0


def test_roles_weigh_equally_not_responses(tmp_path):
    p = Planted(n_roles=6, counts={"role00": 60})
    store = p.store(tmp_path / "s")
    axis = assistant_axis(store, min_score=3, min_count=5, adjust="none").vectors.double().numpy()
    np.testing.assert_allclose(axis, p.reference_axis(), rtol=1e-6, atol=1e-6)
    items = [x for rid, x in p.acts.items() if p.kinds[rid] == "role" and p.scores[rid] == 3]
    default = np.mean([x for rid, x in p.acts.items() if p.kinds[rid] == "default"], axis=0)
    pooled = default - np.mean(items, axis=0)
    assert np.abs(axis - pooled).max() > 1e-2


def test_min_count_exclusion_is_warned_listed_and_applied(tmp_path):
    p = Planted(n_roles=5, counts={"role01": 2, "role03": 3})
    store = p.store(tmp_path / "s")
    with pytest.warns(UserWarning, match=r"2 of 5 roles .* excluded: role01 \(2\), role03 \(3\)"):
        axis = assistant_axis(store, min_score=3, min_count=4, adjust="none")
    assert axis.provenance["roles_excluded"] == {"role01": 2, "role03": 3}
    assert sorted(axis.provenance["roles"]) == ["role00", "role02", "role04"]
    np.testing.assert_allclose(
        axis.vectors.double().numpy(), p.reference_axis(min_count=4), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(
        ValueError,
        match=r"no role has at least 50 'role' responses with score >= 3 \(most: role00 \(6\)",
    ):
        assistant_axis(store, min_score=3, min_count=50, adjust="none")


def test_no_scores_says_to_pass_min_score_none(tmp_path):
    p = Planted(n_roles=4)
    store = p.store(tmp_path / "s", scores=False)
    with pytest.raises(
        ValueError, match=r"no judge scores .* pass min_score=None .*--min-score none"
    ):
        assistant_axis(store, min_count=1, adjust="none")
    axis = assistant_axis(store, min_score=None, min_count=1, adjust="none")
    np.testing.assert_allclose(
        axis.vectors.double().numpy(), p.reference_axis(min_score=None), rtol=1e-6, atol=1e-6
    )


def test_filters_validated():
    with pytest.raises(ValueError, match="min_score"):
        MeanDiff(min_score=4, adjust="none")
    with pytest.raises(ValueError, match="min_count"):
        MeanDiff(min_count=0, adjust="none")


def test_direction_rows_follow_model_layers(tmp_path):
    p = Planted(n_roles=4)
    store = build_store(
        tmp_path / "s",
        p.acts,
        p.kinds,
        p.roles,
        scores=p.scores,
        layers=(3, 5, 7),
        n_model_layers=9,
    )
    axis = assistant_axis(store, min_count=1, adjust="none")
    assert axis.n_layers == 9
    assert torch.count_nonzero(axis.norms()).item() == 3
    np.testing.assert_allclose(
        axis.vectors[5].double().numpy(), p.reference_axis()[1], rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="layer 4 is not stored"):
        role_vectors(store, layers=[4], min_count=1, adjust="none")


def test_role_vectors_fields(planted):
    p, store = planted
    rv = role_vectors(store, min_count=5, adjust="none")
    assert rv.vectors.dtype == torch.float64 and rv.vectors.shape == (24, 3, D)
    assert rv.counts == (6,) * 24 and rv.default_count == 10
    assert rv.descriptions is not None and rv.descriptions[0] == "You are a role00."
    mean00 = np.mean([p.acts[f"role/role00/p0/q{i:03d}"] for i in range(6)], axis=0)
    np.testing.assert_allclose(rv.vectors[0].numpy(), mean00, rtol=1e-12)
    with pytest.raises(AttributeError):
        rv.names = ()  # type: ignore[misc]


# --------------------------------------------------------------------------- bad input


def _write_own_shard(store, rid, row):
    """A shard that overrides ``rid`` with ``row``, written directly (append_activations refuses
    non-finite values), with this store's id and a valid checksum: a value the model produced,
    not disk damage."""
    from axislens.store import _row_crcs

    save_file(
        {"resid_post": row[None]},
        str(store.root / "acts" / "99999.safetensors"),
        metadata={
            "ids": json.dumps([rid]),
            "store_id": store.store_id,
            "crc32": json.dumps({"resid_post": _row_crcs(row[None])}),
        },
    )


def test_nan_activation_refused_with_role_and_item(tmp_path):
    p = Planted(n_roles=4)
    store = p.store(tmp_path / "s")
    rid = "role/role02/p0/q001"
    bad = torch.from_numpy(p.acts[rid].copy())
    bad[1, 3] = float("nan")
    _write_own_shard(store, rid, bad)
    store = ActivationStore.open(store.root)
    with pytest.raises(ValueError, match=r"item 'role/role02/p0/q001' \(role 'role02'.*at layer 1"):
        assistant_axis(store, min_count=1, adjust="none")


def test_inf_activation_refused(tmp_path):
    p = Planted(n_roles=3)
    store = p.store(tmp_path / "s")
    rid = "default/p0/q004"
    bad = torch.from_numpy(p.acts[rid].copy())
    bad[2, 0] = float("inf")
    _write_own_shard(store, rid, bad)
    with pytest.raises(ValueError, match=r"'default/p0/q004' \(role 'default'.*layer 2"):
        role_vectors(ActivationStore.open(store.root), min_count=1, adjust="none")


def test_pooling_stores_of_different_models_refused_naming_field(tmp_path):
    p, q = Planted(n_roles=3, seed=1), Planted(n_roles=3, seed=2, role_names=["x", "y", "z"])
    a = p.store(tmp_path / "a", model_id="m1")
    b = build_store(
        tmp_path / "b",
        {f"b/{k}": v for k, v in q.acts.items()},
        {f"b/{k}": v for k, v in q.kinds.items()},
        {f"b/{k}": v for k, v in q.roles.items()},
        model_id="m2",
    )
    with pytest.raises(ValueError, match=r"field 'model.model_id' differs \('m1' vs 'm2'\)"):
        assistant_axis([a, b], min_score=None, min_count=1, adjust="none")
    c = build_store(
        tmp_path / "c",
        {f"c/{k}": v for k, v in q.acts.items()},
        {f"c/{k}": v for k, v in q.kinds.items()},
        {f"c/{k}": v for k, v in q.roles.items()},
        model_id="m1",
    )
    pooled = role_vectors([a, c], min_score=None, min_count=1, adjust="none")
    assert set(pooled.names) == {"role00", "role01", "role02", "x", "y", "z"}
    assert pooled.default_count == 20
    with pytest.raises(ValueError, match="is in both"):
        role_vectors([a, a], min_score=None, min_count=1, adjust="none")


def test_wrong_hook_and_wrong_d_model_and_wrong_model(planted):
    _, store = planted
    with pytest.raises(ValueError, match=r"no activations at hook 'resid_pre'"):
        assistant_axis(store, hook="resid_pre", min_count=1, adjust="none")
    with pytest.raises(ValueError, match="d_model 5 but the store/model has 12"):
        calibrate_cap(store, Direction(torch.ones(3, 5), method="x"), layers=[1])
    pre = Direction(torch.ones(3, D), method="x", hook="resid_pre")
    with pytest.raises(ValueError, match=r"no activations at hook 'resid_pre'"):
        project_store(store, pre, layers=[1])
    with pytest.raises(ValueError, match=r"hook 'resid_pre' .* \(field 'hook'\)"):
        role_projections(role_vectors(store, min_count=5, adjust="none"), 1, axis=pre)
    other = Direction(torch.ones(3, D), method="x", provenance={"model": {"model_id": "qwen"}})
    with pytest.raises(
        ValueError, match=r"model 'qwen' .* 'synthetic-a' \(field 'model.model_id'\)"
    ):
        calibrate_cap(store, other, layers=[1])


def test_no_transformer_lens_import():
    code = (
        "import sys; import axislens.analysis, axislens.analysis.space, axislens.analysis.probing, axislens.analysis.traits, "
        "axislens.analysis.thresholds, axislens.analysis.stability, axislens.plots, axislens.cli.axis; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('transformer_lens', 'transformers')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- cap thresholds


def test_calibrate_cap_is_the_exact_numpy_percentile(planted):
    p, store = planted
    axis = assistant_axis(store, min_count=5, adjust="none")
    cap = calibrate_cap(store, axis, layers=[1, 2], percentile=0.25, pool=Pool.all())
    assert isinstance(cap, CapConfig) and cap.layers == (1, 2) and cap.percentile == 25.0
    proj = project_store(store, axis, layers=[1, 2])
    ids = sorted(rid for rid in p.acts if p.kinds[rid] in ("role", "default"))
    assert proj.ids == tuple(ids)
    for j, layer in enumerate((1, 2)):
        v = axis.vectors[layer].double().numpy()
        ref_proj = np.stack([p.acts[i][layer] for i in ids]) @ (v / np.linalg.norm(v))
        np.testing.assert_allclose(proj.values[:, j].numpy(), ref_proj, rtol=0, atol=1e-12)
        # calibrate_cap takes np.percentile(axis=0) of a [n, layer] array, this a 1-D column:
        # 1e-12 pins linear interpolation (other methods differ by ~1e-1) without asking for bits
        want = np.percentile(proj.values[:, j].numpy(), 25)
        assert cap.threshold(layer) == pytest.approx(want, rel=1e-12, abs=1e-12)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        c = calibrate_cap(store, axis, layers=[0], percentile=q, pool=Pool.all())
        want = np.percentile(proj_values(store, axis, 0), 100 * q)
        assert c.thresholds[0] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert cap.provenance["calibration"]["n_items"] == len(ids)


def proj_values(store, axis, layer, pool=None):
    return project_store(store, axis, layers=[layer], pool=pool).values[:, 0].numpy()


def test_calibrate_cap_kind_and_percentile_scale(planted):
    p, store = planted
    axis = assistant_axis(store, min_count=5, adjust="none")
    only_default = calibrate_cap(store, axis, layers=[0], pool=Pool.default_only(), percentile=0.5)
    ids = sorted(rid for rid in p.acts if p.kinds[rid] == "default")
    v = axis.vectors[0].double().numpy()
    ref = np.stack([p.acts[i][0] for i in ids]) @ (v / np.linalg.norm(v))
    assert only_default.thresholds[0] == pytest.approx(float(np.median(ref)), abs=1e-12)
    with pytest.raises(ValueError, match=r"percentile is a fraction in \[0, 1\]"):
        calibrate_cap(store, axis, layers=[0], percentile=25)


def test_calibrated_cap_floor_equals_ceiling_on_random_activations(planted):
    _, store = planted
    axis = assistant_axis(store, min_count=5, adjust="none")
    cap = calibrate_cap(store, axis, layers=[0, 1, 2])
    ceiling = cap.to_ceiling()
    back = CapConfig.from_ceiling(ceiling, n_layers=3, percentile=25)
    h = torch.randn(64, 5, D, generator=torch.Generator().manual_seed(0)) * 5
    for layer in (0, 1, 2):
        floored = cap.apply(h, layer)
        # exact: the ceiling over (-v, -tau) is the floor's bit-exact mirror (ops.cap_floor doc)
        assert torch.equal(floored, ceiling.apply(h, layer))
        assert torch.equal(floored, back.apply(h, layer))
        assert not torch.equal(floored, h)  # some positions were raised
        proj = axis.project(floored, layer)
        assert float(proj.min()) >= cap.threshold(layer) - 1e-4


def test_cap_round_trips_through_files(planted, tmp_path):
    _, store = planted
    axis = assistant_axis(store, min_count=5, adjust="none")
    cap = calibrate_cap(store, axis, layers=[2])
    cap.save(tmp_path / "cap.json")
    loaded = CapConfig.load(tmp_path / "cap.json")
    # exact: a save/load round trip (JSON floats and safetensors are lossless)
    assert loaded.thresholds == cap.thresholds and loaded.percentile == 25.0
    assert loaded.direction == cap.direction


# --------------------------------------------------------------------------- PCA


def planted_variance_roles(
    variances, n_roles=40, d_model=30, seed=0
) -> tuple[RoleVectors, np.ndarray, np.ndarray]:
    """Role vectors whose centred covariance has exactly ``variances`` along known axes."""
    rng = np.random.default_rng(seed)
    k = len(variances)
    a = rng.normal(size=(n_roles, k))
    a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)  # orthonormal, centred columns
    scores = q * np.sqrt(np.asarray(variances) * (n_roles - 1))
    basis, _ = np.linalg.qr(rng.normal(size=(d_model, k)))  # [d, k]
    mu = rng.normal(size=d_model)
    x = mu + scores @ basis.T
    rv = RoleVectors(
        names=tuple(f"r{i:02d}" for i in range(n_roles)),
        vectors=torch.from_numpy(x)[:, None, :],
        counts=(1,) * n_roles,
        layers=(4,),
        default=torch.from_numpy(mu + 3.0 * basis[:, 0])[None],
        default_count=1,
    )
    return rv, basis, scores


def test_pca_recovers_planted_variances_components_and_loadings():
    var = [5.0, 2.5, 1.5, 0.6, 0.4]
    rv, basis, scores = planted_variance_roles(var)
    pca = persona_pca(rv, 4)
    k = len(var)
    np.testing.assert_allclose(pca.explained_variance[:k].numpy(), var, rtol=1e-10)
    assert float(pca.explained_variance[k:].abs().max()) < 1e-20
    np.testing.assert_allclose(
        pca.explained_variance_ratio[:k].numpy(), np.asarray(var) / sum(var), rtol=1e-10
    )
    assert pca.dims == {70: 2, 80: 3, 90: 3, 95: 4}
    for j in range(k):
        c = float(pca.components[j].numpy() @ basis[:, j])
        assert abs(abs(c) - 1) < 1e-10
        np.testing.assert_allclose(pca.loadings[:, j].numpy(), np.sign(c) * scores[:, j], atol=1e-9)
    # PC1 sign: the default (placed at +3 basis_0 from the mean) is at the positive end
    assert pca.default_position is not None and float(pca.default_position[0]) == pytest.approx(3.0)
    assert pca.components.dtype == torch.float64 and pca.components.shape == (
        30,
        30,
    )  # min(n_roles - 1, d_model)


def test_pca_matches_numpy_svd_and_center_l2_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 3, 16)) + rng.normal(size=16) * 3
    default = rng.normal(size=(3, 16))
    rv = RoleVectors(
        tuple(f"r{i}" for i in range(25)),
        torch.from_numpy(x),
        (1,) * 25,
        (0, 1, 2),
        default=torch.from_numpy(default),
    )
    for scale in ("center", "center_l2"):
        xl = x[:, 1]
        z = xl - xl.mean(0)
        zd = default[1] - xl.mean(0)
        if scale == "center_l2":
            z = z / np.linalg.norm(z, axis=1, keepdims=True)
            zd = zd / np.linalg.norm(zd)
            zd, z = zd - z.mean(0), z - z.mean(0)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        pca = persona_pca(rv, 1, scale=scale)
        np.testing.assert_allclose(
            pca.explained_variance_ratio.numpy(), (s**2 / (s**2).sum())[:24], rtol=1e-10
        )
        signs = np.sign(np.sum(pca.components.numpy() * vt[:24], axis=1))
        np.testing.assert_allclose(pca.components.numpy(), signs[:, None] * vt[:24], atol=1e-10)
        np.testing.assert_allclose(
            pca.default_position.numpy(), pca.components.numpy() @ zd, atol=1e-10
        )
        assert float(pca.default_position[0]) > 0
        axis = default[1] - xl.mean(0)
        assert pca.cos_axis_pc1 == pytest.approx(
            float(unit(axis) @ pca.components[0].numpy()), abs=1e-12
        )
    with pytest.raises(ValueError, match="unknown scale 'l2'"):
        persona_pca(rv, 1, scale="l2")  # type: ignore[arg-type]


def test_persona_space_of_planted_store(planted):
    p, store = planted
    rv = role_vectors(store, min_count=5, adjust="none")
    pca = persona_pca(rv, 1)
    assert pca.cos_axis_pc1 is not None and pca.cos_axis_pc1 > 0
    # roles spread along -u: PC1 (default-positive) loadings follow -c_r ordering
    c = np.array([p.c[n] for n in pca.names])
    assert np.corrcoef(pca.pc1_loadings.numpy(), -c)[0, 1] > 0.5
    axis = rv.axis()
    proj = role_projections(rv, 1)
    u = axis.vectors[1].double().numpy()
    np.testing.assert_allclose(proj.values.numpy(), rv.at(1).numpy() @ unit(u), atol=1e-5)
    assert proj.default is not None and proj.default > float(proj.values.max())
    np.testing.assert_allclose(pca.axis_projections.numpy(), proj.values.numpy(), atol=1e-5)
    prof = layer_profile(rv)
    assert prof.layers == LAYERS
    np.testing.assert_allclose(
        prof.axis_norm.numpy(), np.linalg.norm(p.reference_axis(), axis=-1), rtol=1e-10
    )
    assert prof.cos_axis_pc1[1] == pytest.approx(pca.cos_axis_pc1)
    assert float(prof.pc1_variance[1]) == pytest.approx(
        float(pca.explained_variance_ratio[0]), rel=1e-12
    )
    pc1 = PCA1(min_count=5).fit(store)
    assert pc1.method == "pca"
    for layer in LAYERS:
        assert float(pc1.norms()[layer]) == pytest.approx(1.0, abs=1e-6)
        assert float(pc1.cosine(axis)[layer]) == pytest.approx(
            prof.cos_axis_pc1[layer].item(), abs=1e-5
        )


def test_cross_model_loadings(tmp_path):
    shared = [f"role{r:02d}" for r in range(12)]
    pa = Planted(role_names=[*shared, "only_a"], seed=5)
    pb = Planted(role_names=["only_b", *shared], seed=6, d_model=9)
    a = persona_pca(role_vectors(pa.store(tmp_path / "a"), min_count=5, adjust="none"), 1)
    b = persona_pca(
        role_vectors(pb.store(tmp_path / "b", model_id="m-b"), min_count=5, adjust="none"), 1
    )
    cmp = compare_loadings(a, b)
    assert cmp.names == tuple(shared) and not cmp.flipped
    np.testing.assert_allclose(cmp.r, np.corrcoef(cmp.a.numpy(), cmp.b.numpy())[0, 1], rtol=1e-12)
    ia = [a.names.index(n) for n in shared]
    np.testing.assert_allclose(cmp.a.numpy(), a.pc1_loadings.numpy()[ia])
    assert cmp.model_a == "synthetic-a" and cmp.model_b == "m-b"
    direct = cross_model(tmp_path / "a", tmp_path / "b", layer_a=1, layer_b=1, min_count=5)
    assert direct.names == cmp.names and direct.r == pytest.approx(cmp.r, abs=1e-12)


def test_cross_model_flips_sign_without_defaults():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 1, 6))
    rv = RoleVectors(tuple(f"r{i}" for i in range(10)), torch.from_numpy(x), (1,) * 10, (0,))
    rneg = RoleVectors(rv.names, -torch.from_numpy(x) * 2, (1,) * 10, (0,))
    a, b = persona_pca(rv, 0), persona_pca(rneg, 0)
    cmp = compare_loadings(a, b)
    assert cmp.r == pytest.approx(1.0) and cmp.flipped == bool(
        float(a.pc1_loadings @ b.pc1_loadings) < 0
    )


# --------------------------------------------------------------------------- traits


def test_trait_vectors_and_cosines(tmp_path):
    p = Planted(n_roles=4)
    rng = np.random.default_rng(9)
    t_dirs = {"calm": p.u, "odd": np.stack([unit(rng.normal(size=D)) for _ in LAYERS])}
    for name, u in t_dirs.items():
        for i in range(4):
            for sign, kind in ((1, "trait_pos"), (-1, "trait_neg")):
                rid = f"trait/{name}/{kind}/q{i:03d}"
                p.add(rid, kind, name, sign * 2 * u + 0.01 * rng.normal(size=u.shape))
                p.scores[rid] = 3
    p.add("trait/lonely/trait_pos/q000", "trait_pos", "lonely", rng.normal(size=(3, D)))
    p.scores["trait/lonely/trait_pos/q000"] = 3
    store = p.store(tmp_path / "s")
    with pytest.warns(UserWarning, match="lonely"):
        tv = trait_vectors(store, score_filter=None)
    assert (
        tv.names == ("calm", "odd")
        and tv.counts_pos == (4, 4)
        and tv.excluded == {"lonely": (1, 0)}
    )
    ref = np.mean([p.acts[f"trait/calm/trait_pos/q{i:03d}"] for i in range(4)], 0) - np.mean(
        [p.acts[f"trait/calm/trait_neg/q{i:03d}"] for i in range(4)], 0
    )
    np.testing.assert_allclose(tv.vectors[0].numpy(), ref, rtol=1e-12)
    axis = assistant_axis(store, min_count=5, adjust="none")
    tc = trait_cosines(tv, axis, 1)
    assert tc.cosines[0] > 0.99
    v = axis.vectors[1].double().numpy()
    np.testing.assert_allclose(tc.cosines[1], unit(tv.vectors[1, 1].numpy()) @ unit(v), atol=1e-6)


# --------------------------------------------------------------------------- stability


def _half_axis(p: Planted, keep: Callable[[str], bool]) -> np.ndarray:
    """numpy reference axis from the items ``keep`` selects (score-3 roles, all defaults)."""
    roles: dict[str, list[np.ndarray]] = {}
    defaults = []
    for rid, x in p.acts.items():
        if not keep(rid):
            continue
        if p.kinds[rid] == "default":
            defaults.append(x)
        elif p.kinds[rid] == "role" and p.scores[rid] == 3:
            roles.setdefault(p.roles[rid], []).append(x)
    return np.mean(defaults, 0) - np.mean([np.mean(v, 0) for v in roles.values()], 0)


@pytest.mark.parametrize("by", ["question", "item"])
def test_split_half_matches_reference_halves(planted, by):
    p, store = planted
    sh = split_half(store, by=by, seed=3, min_count=5, adjust="none")
    assert sh.layers == LAYERS and len(sh.roles) == 24
    half_a = set(sh.half_a)
    key = (lambda rid: rid.rsplit("/", 1)[-1]) if by == "question" else (lambda rid: rid)
    a = _half_axis(p, lambda rid: key(rid) in half_a)
    b = _half_axis(p, lambda rid: key(rid) not in half_a)
    ref = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(sh.cosines.numpy(), ref, rtol=1e-12)
    assert float(sh.cosines.min()) > 0.99
    assert len(half_a) > 0 and sum(sh.n_items) == 24 * 6 + 10
    again = split_half(store, by=by, seed=3, min_count=5, adjust="none")
    # exact: the same call with the same seed is deterministic
    assert again.half_a == sh.half_a and torch.equal(again.cosines, sh.cosines)
    assert split_half(store, by=by, seed=4, min_count=5, adjust="none").half_a != sh.half_a


@pytest.mark.filterwarnings("ignore:.*bootstrap resamples plain means")  # an unbalanced store
def test_bootstrap_intervals(planted):
    _, store = planted
    bs = bootstrap(store, 1, n_boot=40, seed=0, min_count=5)
    assert bs.axis_cosines.shape == (40,) and bs.pc1_ci.shape == (24, 2)
    lo, hi = bs.axis_ci
    assert 0.99 < lo < hi <= 1.0
    full = persona_pca(role_vectors(store, min_count=5, layers=[1], adjust="none"), 1)
    np.testing.assert_allclose(bs.pc1_loadings.numpy(), full.pc1_loadings.numpy(), rtol=1e-10)
    width = (bs.pc1_ci[:, 1] - bs.pc1_ci[:, 0]).numpy()
    assert (width > 0).all()
    assert (
        (bs.pc1_ci[:, 0] - 1e-9 <= bs.pc1_loadings) & (bs.pc1_loadings <= bs.pc1_ci[:, 1] + 1e-9)
    ).float().mean() > 0.9
    again = bootstrap(store, 1, n_boot=40, seed=0, min_count=5)
    # exact: the same call with the same seed is deterministic
    assert torch.equal(again.axis_cosines, bs.axis_cosines) and torch.equal(again.pc1_ci, bs.pc1_ci)
    assert not torch.equal(
        bootstrap(store, 1, n_boot=40, seed=1, min_count=5).axis_cosines, bs.axis_cosines
    )


@pytest.mark.filterwarnings("ignore:.*bootstrap resamples plain means")  # an unbalanced store
def test_bootstrap_blocks_do_not_change_results(planted, monkeypatch):
    _, store = planted
    whole = bootstrap(store, 2, n_boot=12, seed=5, min_count=5)
    import axislens.analysis.stability as stab

    monkeypatch.setattr(stab, "_BOOT_BYTES", 1)  # one replicate per block, store re-read 12 times
    blocked = bootstrap(store, 2, n_boot=12, seed=5, min_count=5)
    torch.testing.assert_close(blocked.axis_cosines, whole.axis_cosines, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(blocked.pc1_ci, whole.pc1_ci, rtol=1e-12, atol=1e-12)


def test_bootstrap_of_single_responses_is_the_identity(tmp_path):
    p = Planted(n_roles=6, per_role=1, n_default=1)
    store = p.store(tmp_path / "s")
    bs = bootstrap(store, 0, n_boot=5, min_count=1)
    torch.testing.assert_close(
        bs.axis_cosines, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(bs.pc1_ci[:, 0], bs.pc1_loadings, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- probe


def test_probe_finds_the_planted_direction(planted):
    p, store = planted
    res = Probe(min_count=5, split="question", test_fraction=0.3).run(store)
    assert res.direction.method == "probe" and res.layers == LAYERS
    assert res.n_test[0] > 0 and res.n_test[1] > 0
    torch.testing.assert_close(
        res.test_accuracy, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12
    )
    for layer in LAYERS:
        assert float(res.direction.unit(layer).double() @ torch.from_numpy(p.u[layer])) > 0.95
    assert res.direction.provenance["probe"]["test_accuracy"] == pytest.approx([1.0] * 3, abs=1e-12)
    again = Probe(min_count=5, split="question", test_fraction=0.3).fit(store)
    assert again == res.direction  # exact: the same fit on the same store is deterministic


def test_probe_reference_logistic_regression():
    """The torch L-BFGS fit reaches the optimum: gradient of the objective ~ 0 (float64)."""
    from axislens.analysis.probing import _logistic

    rng = np.random.default_rng(0)
    x = torch.from_numpy(
        np.concatenate([rng.normal(0.3, 1, (80, 5)), rng.normal(-0.3, 1, (40, 5))])
    )
    y = torch.cat([torch.ones(80), torch.zeros(40)]).double()
    w, b = _logistic(x, y, l2=0.1, max_iter=500)
    mu = x.mean(0)
    scale = float((x - mu).pow(2).sum(1).mean().sqrt())
    wz = (w * scale).requires_grad_(True)
    bz = torch.tensor(b + float(mu @ w), dtype=torch.float64, requires_grad=True)
    z = (x - mu) / scale
    sw = torch.where(y > 0, 0.5 / 80, 0.5 / 40)
    loss = (sw * torch.nn.functional.softplus(-(2 * y - 1) * (z @ wz + bz))).sum() + 0.05 * (
        wz @ wz
    )
    loss.backward()
    assert float(wz.grad.abs().max()) < 1e-7 and abs(float(bz.grad)) < 1e-7


# --------------------------------------------------------------------------- CLI


def test_cli_axis_writes_consistent_files(tmp_path, capsys):
    import axislens.cli.axis  # noqa: F401  (registers the command)
    from axislens.cli import main

    p = Planted(n_roles=8, counts={"role05": 2})
    store = build_store(tmp_path / "s", p.acts, p.kinds, p.roles, scores=p.scores, n_model_layers=3)
    out = tmp_path / "out"
    rc = main(
        [
            "axis",
            "--store",
            str(store.root),
            "--min-count",
            "4",
            "--layer",
            "1",
            "--cap-layers",
            "1:3",
            "--adjust",
            "none",  # the reference below is the plain axis (the store is nested-like)
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "role05 (2)" in text and "1 excluded" in text
    summary = json.loads((out / "summary.json").read_text())
    at = summary["stability"]["at_layer"]
    assert f"split-half cos (item / question), layer 1: {at['by_item']:+.3f}" in text
    axis = Direction.load(out / "axis.safetensors")
    np.testing.assert_allclose(
        axis.vectors.double().numpy(), p.reference_axis(min_count=4), rtol=1e-6, atol=1e-6
    )
    cap = CapConfig.load(out / "cap.json")
    # exact: summary.json and cap.json hold the same floats, written by the same run
    assert cap.layers == (1, 2) and summary["cap"]["thresholds"] == list(cap.thresholds)
    # the CLI projects layers 1 and 2 in one einsum, proj_values layer 1 alone: the summation
    # order may differ by an ulp on another CPU. The CLI's pool is the default responses.
    want = np.percentile(proj_values(store, axis, 1, Pool.default_only()), 25)
    assert summary["cap"]["pool"]["name"] == "default"
    every = np.percentile(proj_values(store, axis, 1, Pool.all()), 25)
    assert summary["cap"]["pools"]["all"][0] == pytest.approx(every, rel=1e-12, abs=1e-12)
    off = summary["question_offset"]
    assert summary["estimator"]["name"] == "plain"
    assert (off["default_questions"], off["role_questions"], off["overlap"]) == (10, 6, 6)
    i = off["layers"].index(1)
    assert f"question offset |b|/|axis|, cos (layer 1): {off['offset_over_axis'][i]:.3f}" in text
    assert cap.thresholds[0] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert summary["roles_excluded"] == {"role05": 2} and len(summary["roles_used"]) == 7
    with pytest.warns(UserWarning, match="role05"):
        rv = role_vectors(store, min_count=4, adjust="none")
    pca = persona_pca(rv, 1)
    assert summary["pca"]["pc1_variance"] == pytest.approx(
        float(pca.explained_variance_ratio[0]), rel=1e-12
    )
    assert summary["pca"]["dims"] == {str(k): v for k, v in pca.dims.items()}
    np.testing.assert_allclose(
        summary["layers"]["cos_axis_pc1"], layer_profile(rv).cos_axis_pc1.numpy()
    )
    np.testing.assert_allclose(summary["layers"]["axis_norm"], axis.norms().numpy(), rtol=1e-6)
    html = (out / "report.html").read_text()
    assert html.count("Plotly.newPlot") == 5
    assert not re.search(r"<script[^>]*\bsrc=", html) and "<link" not in html  # nothing fetched
    assert len(html) > 1_000_000 and html.count("* plotly.js v") == 1  # embedded once
    assert sorted(x.name for x in out.iterdir()) == sorted(summary["files"])


def test_cli_axis_defaults_fit_an_unscored_store_and_errors_are_one_line(tmp_path, capsys):
    import axislens.cli.axis  # noqa: F401
    from axislens.cli import main

    p = Planted(n_roles=3)
    store = p.store(tmp_path / "s", scores=False)
    # `collect` (--judge none) then `axis` with default flags: it works and says what it changed
    assert main(["axis", "--store", str(store.root), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "note: the store has no judge scores" in out and "min_count lowered to 8" in out
    rc = main(["axis", "--store", str(store.root), "--layer", "99", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "99" in err and err.count("\n") == 1


def test_projection_on_a_zero_layer_is_refused(planted):
    _, store = planted
    rows = torch.ones(3, D)
    rows[2] = 0
    with pytest.raises(ValueError, match="zero vector at layer 2"):
        project_store(store, Direction(rows, method="x"), layers=[1, 2])
    with pytest.raises(ValueError, match="layer 5 is not stored"):
        calibrate_cap(store, Direction(torch.ones(3, D), method="x"), layers=[5])
