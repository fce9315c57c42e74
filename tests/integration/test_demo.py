from __future__ import annotations

import json
from pathlib import Path

import pytest

from axislens.analysis import role_vectors
from axislens.analysis.space import persona_pca
from axislens.analysis.thresholds import calibrate_cap
from axislens.jobs import DemoConfig, run_demo
from axislens.store import ActivationStore


def reduced_demo_config(out) -> DemoConfig:
    """The demo at the smallest scale that still exercises every stage (tiny model, 6 roles)."""
    return DemoConfig(
        out=str(out),
        n_roles=6,
        n_prompts=2,
        n_questions=2,
        n_default_prompts=3,  # the default set is sized on its own: 3 prompts x 4 questions
        n_default_questions=4,
        max_new_tokens=6,
        replay_tokens=4,
        batch_size=8,
        min_count=2,
    )


@pytest.fixture(scope="module")
def demo_run(tiny_llama, tmp_path_factory):
    cfg = reduced_demo_config(tmp_path_factory.mktemp("demo"))
    return cfg, run_demo(cfg, model=tiny_llama, progress=False)


def test_reduced_demo_summary_is_consistent_with_the_store(demo_run, tiny_llama):
    cfg, summary = demo_run
    store = ActivationStore.open(f"{cfg.out}/store")
    # 6 roles x 2 prompts x 2 questions + 3 default prompts x 4 questions
    assert summary["items"]["responses"] == 6 * 2 * 2 + 3 * 4
    defaults = store.query(kind="default")
    assert len(defaults) == 12 and {r.prompt_index for r in defaults} == {0, 1, 2}
    assert store.manifest["generation"]["default_questions"] == 4
    on_disk = json.loads((store.root.parent / "summary.json").read_text())
    assert on_disk["pc1_variance"] == summary["pc1_variance"]  # exact: JSON of the same float
    mid = summary["middle_layer"]
    rv = role_vectors(store, min_score=cfg.min_score, min_count=cfg.min_count)
    pca = persona_pca(rv, mid)
    assert summary["pc1_variance"] == pytest.approx(
        float(pca.explained_variance_ratio[0]), rel=1e-9
    )
    assert summary["dims_70"] == pca.dims[70]
    assert summary["cos_axis_pc1_middle"] == pytest.approx(pca.cos_axis_pc1, rel=1e-9)
    cap = calibrate_cap(
        store, rv.axis(), layers=summary["cap"]["layers"], percentile=cfg.percentile
    )  # the default pool, as the demo
    assert summary["cap"]["thresholds"] == pytest.approx(list(cap.thresholds), rel=1e-6)
    steering = summary["steering"]["projection"]
    assert summary["steering"]["projection_drop_negative"] == pytest.approx(
        steering["unsteered"] - steering["away (-)"]
    )
    # the default design is rotated (6 roles x 2 questions over 4), so the estimator adjusts
    # for questions and the question offset is zero; both split-half cosines are reported
    assert summary["design"]["name"] == "rotated" and summary["design"]["roles_per_question"] == 3
    assert store.manifest["generation"]["design"] == summary["design"]  # exact: a copy
    assert summary["estimator"]["name"] == "question-adjusted"
    assert summary["question_offset"]["offset_over_axis"] == [0.0] * len(
        summary["question_offset"]["layers"]
    )  # exact: the two sides' question weights are equal, so b-hat is exactly zero
    assert set(summary["stability"]) >= {"by_item", "by_question"}
    assert summary["cap"]["pool"]["name"] == "default"
    assert set(summary["cap"]["pools"]) == {"default", "balanced", "all"}
    assert set(summary["stage_seconds"]) >= {"collect", "report"}
    assert len(summary["replay"]["capped"]["means"]) == 6


def test_reduced_demo_report_shows_the_computed_numbers(demo_run):
    cfg, summary = demo_run
    page = Path(cfg.out, "report.html").read_text(encoding="utf-8")
    assert f"{100 * summary['pc1_variance']:.1f}%" in page
    assert "question design" in page and "rotated" in page and "question-adjusted" in page
    assert page.count("plotly") > 1 and "Drift over a philosophy-of-AI conversation" in page


def test_second_run_reuses_the_store(demo_run, tiny_llama):
    cfg, first = demo_run
    again = run_demo(cfg, model=tiny_llama, progress=False)
    # exact: the rerun reads the same store through the same functions
    assert again["pc1_variance"] == first["pc1_variance"]
    assert again["cap"]["thresholds"] == first["cap"]["thresholds"]
