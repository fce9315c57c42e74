"""Question designs, the question-adjusted estimator, the offset diagnostic b-hat and the cap
pools, checked against planted question effects and independent float64 references."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from axislens.analysis import (
    Pool,
    assistant_axis,
    calibrate_cap,
    cap_pools,
    persona_pca,
    project_store,
    question_adjusted_means,
    question_offset,
    role_vectors,
    split_half,
)
from axislens.personas.designs import Nested, Rotated, Shared, UnbalancedDesignError, design_for
from tests.unit.analysis.test_analysis import LAYERS, build_store, unit

D = 12


class QuestionPlanted:
    """Roles at ``-c_r * 4 u`` (plus orthogonal offsets), defaults at ``+6 u``, and a planted
    question effect ``beta_q`` (not orthogonal to ``u``) on every response to question ``q``.

    ``role_qs[r]`` / ``default_qs`` are the question indices each side answers (``prompts``
    responses per question), as a design would assign them.
    """

    def __init__(
        self,
        role_qs: list[tuple[int, ...]],
        default_qs: tuple[int, ...],
        *,
        prompts: int = 2,
        beta_scale: float = 3.0,
        noise: float = 0.05,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        n_q = max(max(q for qs in role_qs for q in qs), max(default_qs)) + 1
        self.u = np.stack([unit(rng.normal(size=D)) for _ in LAYERS])
        self.beta = beta_scale * rng.normal(size=(n_q, len(LAYERS), D))
        self.acts: dict[str, np.ndarray] = {}
        self.kinds: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.persona: dict[str, np.ndarray] = {}
        for r, qs in enumerate(role_qs):
            name = f"role{r:02d}"
            offset = rng.normal(size=(len(LAYERS), D))
            offset -= (offset * self.u).sum(-1, keepdims=True) * self.u
            self.persona[name] = -(1.0 + rng.random()) * 4 * self.u + 0.5 * offset
            for k in range(prompts):
                for q in qs:
                    self.add(
                        f"role/{name}/p{k}/q{q:03d}",
                        "role",
                        name,
                        self.persona[name],
                        q,
                        rng,
                        noise,
                    )
        self.persona["default"] = 6 * self.u
        for k in range(prompts):
            for q in default_qs:
                self.add(f"default/p{k}/q{q:03d}", "default", "default", 6 * self.u, q, rng, noise)

    def add(self, rid, kind, role, mean, q, rng, noise) -> None:
        self.acts[rid] = mean + self.beta[q] + noise * rng.normal(size=mean.shape)
        self.kinds[rid], self.roles[rid] = kind, role

    def store(self, root: Path):
        return build_store(root, self.acts, self.kinds, self.roles)

    def true_axis(self) -> np.ndarray:
        roles = [v for k, v in self.persona.items() if k != "default"]
        return self.persona["default"] - np.mean(roles, 0)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _axis_np(direction) -> np.ndarray:
    return direction.vectors[list(LAYERS)].double().numpy()


# --------------------------------------------------------------------------- designs


def test_rotated_design_balances_every_default_question():
    plan = Rotated().assign(48, 3, 36)
    counts = np.zeros(36, int)
    for qs in plan.role_questions:
        assert len(set(qs)) == 3
        counts[list(qs)] += 1
    assert (counts == 4).all() and plan.per_question == 4 and plan.balanced
    assert sorted({q for qs in plan.role_questions for q in qs}) == list(plan.default_questions)
    assert plan.describe()["overlap"] == 36


def test_rotated_design_refuses_counts_that_cannot_balance_and_names_ones_that_would():
    with pytest.raises(UnbalancedDesignError, match="40 default questions") as err:
        Rotated().assign(48, 3, 40)
    assert 36 in err.value.default_questions and err.value.roles == 80
    for d in err.value.default_questions:  # every suggestion really balances
        assert Rotated().assign(48, 3, d).balanced
    assert Rotated().assign(80, 3, 40).balanced


def test_default_design_is_shared_or_rotated_and_nested_is_unbalanced():
    assert isinstance(design_for(4, 4), Shared) and isinstance(design_for(3, 36), Rotated)
    assert not Nested().assign(10, 3, 40).balanced
    with pytest.raises(ValueError, match="must equal n_questions"):
        Shared().assign(10, 3, 40)


def test_persona_items_rotated_and_nested(tmp_path):
    from axislens.collection.responses import persona_items
    from axislens.personas import load_personas

    cat = load_personas()
    names = [r.name for r in cat.spread_roles()[:8]]
    items = persona_items(
        cat, roles=names, n_prompts=2, n_questions=3, default_prompts=5, default_questions=6
    )
    role_q = [i.question_id for i in items if i.kind == "role"]
    default_q = [i.question_id for i in items if i.kind == "default"]
    # every default question: 8 roles x 3 / 6 = 4 roles x 2 prompts
    assert {q: role_q.count(q) for q in set(default_q)} == {q: 8 for q in set(default_q)}
    assert len(default_q) == 30
    with pytest.warns(UserWarning, match="nested design: the roles answer 3 questions"):
        nested = persona_items(
            cat,
            roles=names,
            n_prompts=2,
            n_questions=3,
            default_questions=6,
            design="nested",
        )
    assert len({i.question_id for i in nested if i.kind == "role"}) == 3


# --------------------------------------------------------------------------- estimator


def _lstsq_reference(p: QuestionPlanted, anchor: str = "default") -> dict[str, np.ndarray]:
    """Group effects from a full dummy-coded least-squares fit (numpy float64), with the
    question effects centred on the anchor group's question weights: independent of the
    normal-equation solver in axislens.analysis.effects."""
    ids = sorted(p.acts)
    groups = sorted({p.roles[i] for i in ids})
    qs = sorted({i.rsplit("/", 1)[-1] for i in ids})
    X = np.zeros((len(ids), len(groups) + len(qs)))
    for n, rid in enumerate(ids):
        X[n, groups.index(p.roles[rid])] = 1
        X[n, len(groups) + qs.index(rid.rsplit("/", 1)[-1])] = 1
    Y = np.stack([p.acts[i].reshape(-1) for i in ids])
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)  # minimum norm; contrasts are identified
    alpha, beta = coef[: len(groups)], coef[len(groups) :]
    a_ids = [i for i in ids if p.roles[i] == anchor]
    w = np.array([sum(i.endswith("/" + q) for i in a_ids) for q in qs], float) / len(a_ids)
    shift = w @ beta  # move the constant from beta to alpha: sum_q w_q beta_q = 0
    return {g: (alpha[k] + shift).reshape(len(LAYERS), D) for k, g in enumerate(groups)}


def test_adjusted_means_match_a_dummy_coded_least_squares_reference(tmp_path):
    rot = Rotated().assign(6, 2, 4)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions, noise=0.3)
    rv = role_vectors(p.store(tmp_path / "s"), min_score=None, min_count=1, adjust="questions")
    ref = _lstsq_reference(p)
    for k, name in enumerate(rv.names):
        np.testing.assert_allclose(rv.vectors[k].numpy(), ref[name], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rv.default.numpy(), ref["default"], rtol=1e-9, atol=1e-9)
    # the default vector stays the plain mean of the default responses
    plain = np.mean([v for k, v in p.acts.items() if p.kinds[k] == "default"], 0)
    np.testing.assert_allclose(rv.default.numpy(), plain, rtol=1e-9, atol=1e-9)
    assert rv.provenance["estimator"] == "question-adjusted"


def test_adjusted_equals_plain_on_a_shared_design(tmp_path):
    shared = Shared().assign(8, 5, 5)
    p = QuestionPlanted(list(shared.role_questions), shared.default_questions, noise=0.3)
    store = p.store(tmp_path / "s")
    plain = role_vectors(store, min_score=None, min_count=1, adjust="none")
    adjusted = role_vectors(store, min_score=None, min_count=1, adjust="questions")
    torch.testing.assert_close(adjusted.vectors, plain.vectors, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(adjusted.default, plain.default, rtol=1e-6, atol=1e-6)
    auto = role_vectors(store, min_score=None, min_count=1)
    assert auto.provenance["estimator"] == "plain"
    assert "alike" in auto.provenance["estimator_reason"]


def test_nested_design_plain_axis_is_off_and_adjusted_recovers_the_planted_direction(tmp_path):
    nested = Nested().assign(24, 3, 40)
    p = QuestionPlanted(list(nested.role_questions), nested.default_questions, beta_scale=6.0)
    store = p.store(tmp_path / "s")
    plain = assistant_axis(store, min_score=None, min_count=1, adjust="none")
    adjusted = assistant_axis(store, min_score=None, min_count=1, adjust="questions")
    auto = assistant_axis(store, min_score=None, min_count=1)
    truth = p.true_axis()
    cos_plain = _cos(_axis_np(plain), truth)
    cos_adj = _cos(_axis_np(adjusted), truth)
    print(f"nested design, cos(axis, planted) per layer: plain {cos_plain}, adjusted {cos_adj}")
    assert (cos_adj >= 0.99).all()
    assert (cos_plain < 0.9).all()  # the question offset is as long as the persona difference
    assert auto.provenance["estimator"] == "question-adjusted"
    torch.testing.assert_close(auto.vectors, adjusted.vectors, rtol=0, atol=0)  # exact: one path


def test_judge_filter_imbalance_is_adjusted(tmp_path):
    """A shared design made unbalanced by a score filter that drops different questions for
    different roles (half the roles lose their answers to the first 4 questions)."""
    shared = Shared().assign(16, 8, 8)
    p = QuestionPlanted(list(shared.role_questions), shared.default_questions)
    scores = {
        rid: (1 if int(rid.split("/")[1][4:]) % 2 == 0 and int(rid[-3:]) < 4 else 3)
        for rid in p.acts
        if p.kinds[rid] == "role"
    }
    store = build_store(tmp_path / "s", p.acts, p.kinds, p.roles, scores=scores)
    truth = p.true_axis()
    plain = assistant_axis(store, min_score=3, min_count=1, adjust="none")
    auto = assistant_axis(store, min_score=3, min_count=1)
    assert auto.provenance["estimator"] == "question-adjusted"
    assert (_cos(_axis_np(auto), truth) >= 0.99).all()
    assert (_cos(_axis_np(plain), truth) < _cos(_axis_np(auto), truth)).all()


def test_rotated_design_role_vectors_need_adjusting_for_pca(tmp_path):
    """Under rotation the plain axis is unbiased but plain role vectors carry their question
    block; PCA of the adjusted role effects finds the planted persona direction."""
    rot = Rotated().assign(24, 3, 12)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions, beta_scale=4.0)
    store = p.store(tmp_path / "s")
    truth = p.true_axis()
    plain_axis = assistant_axis(store, min_score=None, min_count=1, adjust="none")
    assert (_cos(_axis_np(plain_axis), truth) > 0.95).all()
    plain = persona_pca(role_vectors(store, min_score=None, min_count=1, adjust="none"), 1)
    adjusted = persona_pca(role_vectors(store, min_score=None, min_count=1), 1)
    # the reference: PCA of the planted (noise- and question-free) role vectors
    names = sorted(k for k in p.persona if k != "default")
    centred = np.stack([p.persona[n][1] for n in names])
    centred = centred - centred.mean(0)
    ref = np.linalg.svd(centred, full_matrices=False)[2][0]
    pc_plain = abs(float(plain.components[0].numpy() @ ref))
    pc_adj = abs(float(adjusted.components[0].numpy() @ ref))
    print(f"rotated design, |cos(PC1, planted PC1)|: plain {pc_plain:.3f}, adjusted {pc_adj:.3f}")
    assert pc_adj > 0.99 and pc_plain < 0.5


def test_adjustment_refuses_a_role_that_shares_no_question(tmp_path):
    p = QuestionPlanted([(0, 1), (0, 1), (5,)], (0, 1, 2))
    with pytest.raises(ValueError, match="role02"):
        role_vectors(p.store(tmp_path / "s"), min_score=None, min_count=1, adjust="questions")


def test_adjusted_means_doc_example_by_hand():
    counts = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # group 0: q0 twice at 1, q1 at 3; group 1: q1 at 7, q2 at 9 (beta = 0, 2, 4; alpha 1 / 5)
    s = torch.tensor([[5.0], [16.0]])
    t = torch.tensor([[2.0], [10.0], [9.0]])
    out = question_adjusted_means(s, t, counts, anchor=0)
    # anchor weights (2/3, 1/3, 0): beta centred -> (-2/3, 4/3, 10/3); alpha0 = 1 + 2/3
    torch.testing.assert_close(out[:, 0], torch.tensor([5 / 3, 17 / 3], dtype=torch.float64))


# --------------------------------------------------------------------------- diagnostics


def test_question_offset_is_zero_on_balanced_designs_and_planted_on_nested(tmp_path):
    rot = Rotated().assign(24, 3, 12)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions)
    store = p.store(tmp_path / "r")
    axis = assistant_axis(store, min_score=None, min_count=1)
    off = question_offset(store, axis, min_score=None, min_count=1)
    assert off.weight_gap == pytest.approx(0.0, abs=1e-12)
    assert off.ratio == (0.0, 0.0, 0.0) and off.cosine == (None, None, None)
    assert (off.default_questions, off.role_questions, off.overlap) == (12, 12, 12)

    nested = Nested().assign(24, 3, 40)
    q = QuestionPlanted(list(nested.role_questions), nested.default_questions)
    store = q.store(tmp_path / "n")
    axis = assistant_axis(store, min_score=None, min_count=1, adjust="none")
    off = question_offset(store, axis, min_score=None, min_count=1)
    planted_b = q.beta.mean(0) - q.beta[:3].mean(0)  # [layer, d]
    got = np.array(off.ratio) * np.linalg.norm(_axis_np(axis), axis=-1)
    np.testing.assert_allclose(got, np.linalg.norm(planted_b, axis=-1), rtol=0.02)
    assert (off.default_questions, off.role_questions, off.overlap) == (40, 3, 3)
    assert off.weight_gap == pytest.approx(37 / 40)
    assert off.to_dict()["offset_over_axis"] == list(off.ratio)  # exact: same floats, copied


def test_split_half_by_question_on_a_rotated_design_is_stable(tmp_path):
    rot = Rotated().assign(48, 3, 36)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions, noise=0.5)
    store = p.store(tmp_path / "s")
    sh = split_half(store, by="question", min_score=None, min_count=1, seed=0)
    assert sh.estimator == "question-adjusted" and float(sh.cosines.min()) > 0.95
    nested = Nested().assign(48, 3, 36)
    q = QuestionPlanted(list(nested.role_questions), nested.default_questions, noise=0.5)
    plain = split_half(
        q.store(tmp_path / "n"), by="item", min_score=None, min_count=1, adjust="none"
    )
    assert plain.estimator == "plain"


# --------------------------------------------------------------------------- cap pools


def test_cap_pools_default_balanced_all(tmp_path):
    rot = Rotated().assign(12, 2, 4)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions, noise=1.0)
    store = p.store(tmp_path / "s")
    axis = assistant_axis(store, min_score=None, min_count=1)
    proj = project_store(store, axis, layers=[1, 2])
    vals = proj.values.numpy()
    is_d = np.array([k == "default" for k in proj.kinds])
    n_d, n_r = int(is_d.sum()), int((~is_d).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = calibrate_cap(store, axis, layers=[1, 2])  # the documented default pool
    np.testing.assert_allclose(default.thresholds, np.percentile(vals[is_d], 25, axis=0))
    assert default.provenance["calibration"]["pool"]["name"] == "default"
    # balanced: replicate each default value n_r times and each role value n_d times (equal
    # side weights), then numpy's unweighted inverted-CDF percentile: an independent route
    rep = np.concatenate([np.repeat(vals[is_d], n_r, 0), np.repeat(vals[~is_d], n_d, 0)])
    balanced = calibrate_cap(store, axis, layers=[1, 2], pool=Pool.balanced())
    np.testing.assert_allclose(
        balanced.thresholds, np.percentile(rep, 25, axis=0, method="inverted_cdf"), rtol=1e-12
    )
    every = calibrate_cap(store, axis, layers=[1, 2], pool=Pool.all())
    np.testing.assert_allclose(every.thresholds, np.percentile(vals, 25, axis=0))
    pools = cap_pools(store, axis, layers=[1, 2])
    assert list(pools) == ["default", "balanced", "all"]
    # exact: the same projection pass (every item) and the same threshold code as calibrate_cap
    assert pools["balanced"].thresholds == balanced.thresholds
    assert pools["all"].thresholds == every.thresholds
    # the default pool is the default rows of that one pass; calibrate_cap projects the default
    # items alone, in other chunks: the same values up to summation order
    np.testing.assert_allclose(pools["default"].thresholds, default.thresholds, rtol=1e-12)
    assert pools["default"].provenance["calibration"]["n_items"] == n_d
    with pytest.raises(ValueError, match="needs both sides"):
        Pool(roles=False, balance=True)


def test_blockwise_solve_equals_one_block(tmp_path, monkeypatch):
    import axislens.analysis.effects as effects

    rot = Rotated().assign(6, 2, 4)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions, noise=0.3)
    store = p.store(tmp_path / "s")
    whole = role_vectors(store, min_score=None, min_count=1, adjust="questions")
    monkeypatch.setattr(effects, "_BLOCK", 1)  # one feature column per solve
    blocked = role_vectors(store, min_score=None, min_count=1, adjust="questions")
    torch.testing.assert_close(blocked.vectors, whole.vectors, rtol=1e-12, atol=1e-12)


def test_split_half_keeps_the_full_data_estimator(tmp_path):
    """A random halving of a shared design makes each half's question mix uneven; the halves
    still use the estimator of the full data (plain here), the one the reported axis uses."""
    shared = Shared().assign(12, 4, 4)
    p = QuestionPlanted(list(shared.role_questions), shared.default_questions, noise=0.3)
    store = p.store(tmp_path / "s")
    sh = split_half(store, by="item", min_score=None, min_count=1, seed=0)
    assert sh.estimator == "plain"
    forced = split_half(store, by="item", min_score=None, min_count=1, seed=0, adjust="questions")
    assert forced.estimator == "question-adjusted"
    assert not torch.equal(forced.cosines, sh.cosines)  # the halves really were uneven


def test_cap_pools_without_default_responses_says_so(tmp_path):
    from axislens.directions import Direction

    rot = Rotated().assign(4, 2, 4)
    p = QuestionPlanted(list(rot.role_questions), rot.default_questions)
    roles_only = {k: v for k, v in p.acts.items() if p.kinds[k] == "role"}
    store = build_store(tmp_path / "s", roles_only, p.kinds, p.roles)
    axis = Direction(torch.ones(len(LAYERS), D, dtype=torch.float64), method="test")
    with pytest.raises(ValueError, match="no collected items in Pool"):
        cap_pools(store, axis, layers=[1])


def test_unknown_adjust_is_refused(tmp_path):
    shared = Shared().assign(4, 2, 2)
    store = QuestionPlanted(list(shared.role_questions), shared.default_questions).store(
        tmp_path / "s"
    )
    for fn in (role_vectors, assistant_axis, split_half):
        with pytest.raises(ValueError, match="unknown adjust 'question'"):
            fn(store, min_score=None, min_count=1, adjust="question")


def test_bootstrap_warns_that_it_resamples_plain_means_on_an_unbalanced_store(tmp_path):
    from axislens.analysis import bootstrap

    nested = Nested().assign(6, 2, 6)
    p = QuestionPlanted(list(nested.role_questions), nested.default_questions)
    with pytest.warns(UserWarning, match="bootstrap resamples plain means"):
        bootstrap(p.store(tmp_path / "n"), LAYERS[0], n_boot=3, min_score=None, min_count=1)
    shared = Shared().assign(6, 2, 2)
    q = QuestionPlanted(list(shared.role_questions), shared.default_questions)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bootstrap(q.store(tmp_path / "s"), LAYERS[0], n_boot=3, min_score=None, min_count=1)
