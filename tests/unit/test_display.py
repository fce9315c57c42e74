"""Notebook display: every result object has a short repr without tensors, an HTML table and,
where a table is natural, ``to_pandas()`` with the numbers the object holds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from axislens.analysis import persona_pca
from axislens.analysis.vectors import RoleVectors
from axislens.directions import CapConfig, Direction
from axislens.evals.attribution import Attribution
from axislens.evals.harness import EvalResult, SettingResult
from axislens.evals.sweeps import SweepResult
from axislens.monitoring.projection import DriftTrajectory, TurnProjection
from axislens.store import ActivationStore, ItemRecord

D_MODEL = 256  # big enough that printing any tensor would blow the length limit


def _rv() -> RoleVectors:
    g = torch.Generator().manual_seed(0)
    names = tuple(f"role{i:02d}" for i in range(40))
    return RoleVectors(
        names=names,
        vectors=torch.randn(40, 3, D_MODEL, generator=g),
        counts=tuple(range(10, 50)),
        layers=(2, 5, 8),
        default=torch.randn(3, D_MODEL, generator=g),
        default_count=99,
        provenance={"model": {"model_id": "tiny-model"}},
    )


def _direction() -> Direction:
    return Direction(
        torch.randn(12, D_MODEL, generator=torch.Generator().manual_seed(1)),
        method="mean_diff",
        provenance={"model": {"model_id": "tiny-model"}},
    )


def _cap() -> CapConfig:
    return CapConfig(_direction(), layers=(3, 4, 5), thresholds=(1.5, 2.5, 3.5), percentile=25)


def _sweep() -> SweepResult:
    return SweepResult(
        kind="steer",
        op="Add",
        hook="resid_post",
        layers=(1, 2, 3),
        strengths=(-4.0, 0.0, 4.0),
        metrics=("proj@11", "kl"),
        values=torch.arange(18, dtype=torch.float64).reshape(3, 3, 2),
        baseline={"proj@11": 7.25, "kl": 0.0},
    )


def _trajectory() -> DriftTrajectory:
    def turn(role: str, k: int, value: float) -> TurnProjection:
        n = 50
        return TurnProjection(
            role, k, 2 * k + (role == "assistant"), 0, n, ("tok",) * n, torch.full((2, n), value)
        )

    return DriftTrajectory(
        layers=(4, 6),
        hook="resid_post",
        assistant=tuple(turn("assistant", k, 10.0 - k) for k in range(5)),
        user=tuple(turn("user", k, -1.0) for k in range(5)),
    )


def _eval() -> EvalResult:
    def setting(name: str, rate: float) -> SettingResult:
        return SettingResult(
            name, {"layers": "4-6"}, (), {"jailbreak_rate": rate, "kl": 0.1}, {"qa/1": "x"}, {}
        )

    return EvalResult((setting("baseline", 0.5), setting("cap", 0.125)), {})


def _attribution() -> Attribution:
    n, pos = 30, 200
    return Attribution(
        layer=5,
        hook="resid_post",
        labels=("embed", *(f"L{i}.mlp" for i in range(n - 1))),
        layers=(-1, *range(n - 1)),
        heads=(-1,) * n,
        per_token=torch.arange(n * pos, dtype=torch.float64).reshape(n, pos),
        total=torch.ones(pos, dtype=torch.float64),
        mask=torch.arange(pos) >= 100,
        tokens=("t",) * pos,
    )


def _store(tmp_path) -> ActivationStore:
    store = ActivationStore.create(
        tmp_path / "s",
        {
            "model": {"model_id": "tiny-model"},
            "hooks": ["resid_post"],
            "layers": [0, 1],
            "d_model": 3,
            "dtype": "float32",
        },
    )
    msgs = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "boo"})
    store.append_records(
        [
            ItemRecord("role/ghost/p0/q1", "role", "ghost", 0, "q1", msgs, n_tokens=3),
            ItemRecord("default/p0/q1", "default", "default", 0, "q1", msgs, n_tokens=4),
        ]
    )
    store.append_scores([{"id": "role/ghost/p0/q1", "score": 3, "raw": "3", "judge": "j"}])
    return store


OBJECTS = {
    "PersonaPCA": lambda tmp: persona_pca(_rv(), 5),
    "RoleVectors": lambda tmp: _rv(),
    "SweepResult": lambda tmp: _sweep(),
    "DriftTrajectory": lambda tmp: _trajectory(),
    "EvalResult": lambda tmp: _eval(),
    "Attribution": lambda tmp: _attribution(),
    "ActivationStore": _store,
    "Direction": lambda tmp: _direction(),
    "CapConfig": lambda tmp: _cap(),
}


@pytest.mark.parametrize("name", list(OBJECTS))
def test_repr_is_short_and_has_no_tensors(name, tmp_path):
    obj = OBJECTS[name](tmp_path)
    text = repr(obj)
    assert text.startswith(f"{name}(")
    assert len(text) < 500, text
    assert "tensor(" not in text


@pytest.mark.parametrize("name", list(OBJECTS))
def test_html_repr_is_a_table_without_tensors(name, tmp_path):
    obj = OBJECTS[name](tmp_path)
    page = obj._repr_html_()
    assert "<table" in page and "</table>" in page
    assert name in page
    assert "tensor(" not in page
    assert len(page) < 20_000


def test_persona_pca_repr_and_table_show_its_numbers():
    pca = persona_pca(_rv(), 5)
    assert "layer=5" in repr(pca) and "roles=40" in repr(pca)
    assert f"{float(pca.explained_variance_ratio[0]):.4g}" in repr(pca)
    df = pca.to_pandas()
    assert len(df) == 40 and list(df.columns[:3]) == ["role", "count", "PC1"]
    assert df["PC1"].is_monotonic_decreasing
    row = df.set_index("role").loc["role07"]
    assert row["PC1"] == pytest.approx(float(pca.loadings[7, 0]))
    assert row["axis_projection"] == pytest.approx(float(pca.axis_projections[7]))
    assert row["count"] == 17


def test_role_vectors_to_pandas_norms():
    rv = _rv()
    df = rv.to_pandas()
    assert list(df["role"]) == list(rv.names)
    assert df.loc[3, "norm_L8"] == pytest.approx(float(rv.vectors[3, 2].norm()))
    assert "roles=40" in repr(rv) and "responses=1180" in repr(rv)


def test_sweep_to_pandas_is_the_tidy_table():
    res = _sweep()
    df = res.to_pandas()
    assert len(df) == 18
    row = df[(df.layer == 2) & (df.strength == 4.0) & (df.metric == "kl")]
    # exact: the table copies the stored value (arange: 11.0)
    assert float(row["value"].iloc[0]) == float(res.table("kl")[1, 2]) == 11.0
    assert "baseline proj@11=7.25" in repr(res)


def test_trajectory_to_pandas_turn_means():
    traj = _trajectory()
    df = traj.to_pandas()
    assert len(df) == 20  # 10 messages x 2 layers
    a = df[(df.role == "assistant") & (df.layer == 6)]
    assert list(a["mean"]) == pytest.approx([10.0, 9.0, 8.0, 7.0, 6.0])
    assert "assistant turns=5" in repr(traj) and "[10, 6]" in repr(traj)


def test_eval_attribution_store_direction_cap_tables(tmp_path):
    assert list(_eval().to_pandas()["jailbreak_rate"]) == [0.5, 0.125]  # exact: copied values
    att = _attribution()
    df = att.to_pandas()
    assert df.loc[0, "component"] == f"L{28}.mlp"  # largest absolute span mean
    assert df.loc[0, "span_mean"] == pytest.approx(float(att.span_mean()[-1]))
    store = _store(tmp_path)
    sdf = store.to_pandas().set_index("id")
    assert sdf.loc["role/ghost/p0/q1", "score"] == 3
    assert pd.isna(sdf.loc["default/p0/q1", "score"])
    assert "items=2" in repr(store)
    d = _direction()
    assert d.to_pandas()["norm"].tolist() == pytest.approx(d.norms().tolist())
    cap = _cap()
    # exact: the table copies the thresholds
    assert cap.to_pandas().to_dict("list") == {"layer": [3, 4, 5], "tau": [1.5, 2.5, 3.5]}
    assert "percentile=25" in repr(cap)
