"""experiments/paper_table.py at a micro scale on a tiny model; its numbers recomputed from the
store with numpy (float64)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from axislens.store import ActivationStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper_table():
    spec = importlib.util.spec_from_file_location(
        "paper_table", ROOT / "experiments" / "paper_table.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_table"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_paper_table_numbers_are_recomputed_from_the_store(paper_table, tiny_llama, tmp_path):
    evals = paper_table.EvalScale(
        eval_attacks=2, eval_identity=3, eval_qa=2, eval_tokens=4, drift_turns=2, drift_tokens=4
    )
    # rotated: 5 roles x 2 questions over 5 default questions, each answered by 2 roles
    scale = paper_table.Scale(
        n_roles=5, n_prompts=2, n_questions=2, n_default_questions=5, max_new_tokens=4, batch_size=8
    )

    def run():
        return paper_table.run(
            tiny_llama, tmp_path, scale, evals=evals, coeffs=(-1.0, 1.0), progress=False
        )

    res = run()
    written = json.loads(next(tmp_path.glob("*.json")).read_text())
    # exact: the JSON file holds the same floats as the returned dict
    assert written["caps"] == res["caps"] and written["judge"].startswith("keep_all")
    store = ActivationStore.open(res["store"])
    assert res["n_default_items"] == 5 * 5  # all default prompts x the default questions
    assert res["design"]["name"] == "rotated" and res["design"]["roles_per_question"] == 2
    assert res["estimator"]["name"] == "question-adjusted"
    roles = sorted({r.role for r in store.query(kind="role")})
    assert res["n_roles"] == len(roles) == 5
    recs = {r.id: r for r in store.query()}
    acts = {
        rid: store.activations(ids=[rid], dtype=torch.float64)[0].numpy() for rid in sorted(recs)
    }
    plain_roles = np.stack(
        [np.mean([a for i, a in acts.items() if recs[i].role == name], 0) for name in roles]
    )
    # the question-adjusted reference: a dummy-coded least-squares fit (numpy), question effects
    # centred on the default set's (uniform) question mix
    ids = sorted(acts)
    groups, qids = [*roles, "default"], sorted({recs[i].question_id for i in ids})
    x_design = np.zeros((len(ids), len(groups) + len(qids)))
    for n, rid in enumerate(ids):
        x_design[n, groups.index(recs[rid].role)] = 1
        x_design[n, len(groups) + qids.index(recs[rid].question_id)] = 1
    y = np.stack([acts[i].reshape(-1) for i in ids])
    coef = np.linalg.lstsq(x_design, y, rcond=None)[0]
    effects = coef[: len(groups)] + coef[len(groups) :].mean(0)  # default's weights are uniform
    effects = effects.reshape(len(groups), *acts[ids[0]].shape)
    role_means, default = effects[:-1], effects[-1]
    plain_default = np.mean([a for i, a in acts.items() if recs[i].kind == "default"], 0)
    np.testing.assert_allclose(default, plain_default, atol=1e-9)  # default stays the plain mean
    axis = default - role_means.mean(0)  # [layer, d]
    for est, rm in (("question-adjusted", role_means), ("plain", plain_roles)):
        lay = res["layers_by_estimator"][est]
        ax = default - rm.mean(0)
        for k, layer in enumerate(lay["layer"]):
            x = rm[:, layer] - rm[:, layer].mean(0)
            s = np.linalg.svd(x, compute_uv=False) ** 2
            assert lay["pc1_variance"][k] == pytest.approx(s[0] / s.sum(), abs=1e-8)
            need = int(np.searchsorted(np.cumsum(s) / s.sum(), 0.7 - 1e-12) + 1)
            assert lay["dims_70"][k] == need
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            cos = abs(vt[0] @ ax[layer]) / np.linalg.norm(ax[layer])
            assert abs(lay["cos_axis_pc1"][k]) == pytest.approx(cos, abs=1e-8)
        assert lay["offset_over_axis"] == pytest.approx([0.0] * len(lay["layer"]), abs=1e-12)
    assert res["layers"] == res["layers_by_estimator"]["question-adjusted"]
    window = res["cap_window"]["layers"]
    is_default = np.array([recs[i].kind == "default" for i in ids])
    n_d, n_r = int(is_default.sum()), int((~is_default).sum())
    for row in res["caps"]:
        if row["unit"] != "response":
            continue
        for j, layer in enumerate(window):
            u = axis[layer] / np.linalg.norm(axis[layer])
            proj = np.array([acts[i][layer] @ u for i in ids])
            q = 100 * row["percentile"]
            ref = {
                "default": np.percentile(proj[is_default], q),
                "all": np.percentile(proj, q),
                "balanced": np.percentile(  # each side replicated to the other's count
                    np.concatenate(
                        [np.repeat(proj[is_default], n_r), np.repeat(proj[~is_default], n_d)]
                    ),
                    q,
                    method="inverted_cdf",
                ),
            }[row["pool"]]
            assert row["thresholds"][j] == pytest.approx(ref, abs=1e-8)
    tok = [r for r in res["caps"] if r["unit"] == "token" and r["pool"] == "all"]
    assert [r["percentile"] for r in tok] == [0.25, 0.5, 0.75]  # exact: the configured values
    for r in tok:  # by construction: the share of pooled tokens below the token percentile
        assert all(abs(t - r["percentile"]) < 0.1 for t in r["tokens_touched"])
    assert {r["pool"] for r in res["caps"]} == {"default", "balanced", "all"}
    # held-out tokens: the unsteered drift replies (the tiny model's may all be empty)
    for r in res["caps"]:
        if res["heldout_tokens"]:
            assert len(r["heldout_touched"]) == len(window)
        else:
            assert r["heldout_touched"] is None
    # step 6: lever rows are subsets of the store's items
    lev = res["levers"]
    rows = {r["lever"]: r for r in lev["rows"]}
    assert rows["all data"]["n_default_items"] == 25 and rows["all data"]["n_roles"] == 5
    assert [r["n_default_items"] for r in lev["rows"] if r["lever"] == "default items"] == [5, 10]
    q1 = next(r for r in lev["rows"] if r["lever"] == "questions per role")
    assert q1["value"] == 1 and q1["n_role_items"] == 5 * 2  # one question x two prompts
    assert {"first 16 response tokens", "prefill (no response)"} <= set(rows)
    assert all(len(r["cos_mean"]) == len(lev["layers"]) for r in lev["rows"])
    # steps 7-9: the baseline is the zero coefficient; caps in both units; four conversations
    assert [s["coeff"] for s in res["steering"]] == [-1.0, 0.0, 1.0]  # exact: configured values
    assert all(0 <= s["identity_rate_roles"] <= 1 for s in res["steering"])
    settings = [c["setting"] for c in res["capping"]]
    assert settings[0] == "baseline" and len(settings) == 7
    assert {(c["unit"], c["percentile"]) for c in res["capping"][1:]} == {
        (u, q) for u in ("response", "token") for q in (0.25, 0.5, 0.75)
    }
    assert res["capping"][0]["kl"] == 0.0  # exact: the harness sets the baseline's KL to 0.0
    assert list(res["drift"]) == list(paper_table.CONVERSATIONS)
    for d in res["drift"].values():
        assert set(d["runs"]) == {"unsteered", "cap response p0.25", "cap token p0.25"}
        assert not any(d["runs"]["unsteered"]["capped"])
        assert len(d["runs"]["unsteered"]["replies"]) == evals.drift_turns
    md = paper_table.results_md([res])
    for heading in ("split-half", "PC1 variance", "Stability levers", "steering coefficient"):
        assert heading in md
    assert "Drift over four conversations" in md and "Persona attacks" in md
    assert (tmp_path / f"{res['model']['model_id'].split('/')[-1]}-figures.html").is_file()
    # a rerun reuses every cached step (same numbers, no model call needed for them)
    again = run()
    # exact: the rerun reads the cached steps back
    assert again["capping"] == res["capping"] and again["levers"] == res["levers"]
    with pytest.raises(ValueError, match="roles in common"):
        paper_table.compare(res, {**res, "pc1_loadings": {}})
    assert paper_table.compare(res, res)["pc1_loading_r"] == pytest.approx(1.0)


def test_cap_distributions_figure():
    from axislens.plots import cap_distributions

    fig = cap_distributions([1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0], {"p25": 1.5}, layer=7)
    assert list(fig.data[0].x) == [1.0, 2.0, 3.0] and len(fig.data[1].x) == 5  # exact: copies
    assert "layer 7" in fig.layout.title.text
    with pytest.raises(ValueError, match="at least one"):
        cap_distributions([], [1.0], {}, layer=0)


def test_split_half_cos_planted_direction(paper_table):
    """A planted default-vs-role direction gives split-half cosines near 1; noise alone does not."""
    rng = np.random.default_rng(0)
    d, layers = 64, 2
    v = rng.normal(size=(layers, d))
    groups = [list(range(k * 6, k * 6 + 6)) for k in range(10)]
    defaults = list(range(60, 90))
    noise = rng.normal(size=(90, layers, d))
    planted = noise * 0.1
    planted[defaults] += v
    planted[:60] -= v
    cos = paper_table.split_half_cos(planted, groups, defaults, seed=1)
    assert cos.shape == (layers,) and (cos > 0.95).all()
    pure = paper_table.split_half_cos(noise, groups, defaults, seed=1)
    assert (np.abs(pure) < 0.5).all()
    # by hand for one seeded split: the same permutation, the same halves
    perm_rng = np.random.default_rng(1)
    halves = [[], []]
    for g in [*groups, defaults]:
        p = perm_rng.permutation(np.asarray(g))
        cut = (len(p) + 1) // 2
        halves[0].append(planted[p[:cut]].mean(0))
        halves[1].append(planted[p[cut:]].mean(0))
    axes = [h[-1] - np.mean(h[:-1], axis=0) for h in halves]
    ref = (axes[0] * axes[1]).sum(-1) / (
        np.linalg.norm(axes[0], axis=-1) * np.linalg.norm(axes[1], axis=-1)
    )
    np.testing.assert_allclose(cos, ref, rtol=1e-12)
