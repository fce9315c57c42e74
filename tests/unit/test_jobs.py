"""The demo and ``axislens axis`` pipelines report the axis's split-half stability.

A reduced demo on the tiny llama (4 layers) and ``run_axis`` on its store: the summaries hold
the split-half cosines recomputed here independently with
:func:`~axislens.analysis.stability.split_half`, and every figure of both reports carries the
cosine at the layer it shows.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from axislens.analysis.stability import split_half
from axislens.jobs import DemoConfig, run_axis, run_demo
from axislens.plots.reports import _row_note, demo_table_rows
from axislens.store import ActivationStore
from tests.unit.analysis.test_analysis import Planted, build_store

NOTE = '<p class="figure-note">split-half cos (item / question)'


def _config(out: Path) -> DemoConfig:
    """The smallest demo that runs every stage: 4 roles x 2 prompts x 2 questions, 6 tokens."""
    return DemoConfig(
        out=str(out),
        n_roles=4,
        n_prompts=2,
        n_questions=2,
        n_default_prompts=2,
        n_default_questions=2,
        max_new_tokens=6,
        replay_tokens=4,
        batch_size=8,
        min_count=2,
    )


@pytest.fixture(scope="module")
def demo(tiny_llama, tmp_path_factory):
    cfg = _config(tmp_path_factory.mktemp("demo"))
    return cfg, run_demo(cfg, model=tiny_llama, progress=False)


def _expected(store, by: str, *, seed: int, min_score, min_count: int) -> list[float]:
    sh = split_half(store, by=by, seed=seed, min_score=min_score, min_count=min_count)
    return [float(c) for c in sh.cosines]


def _figure_notes(page: str) -> list[str]:
    """The note line of each ``<figure>``, which must open it (right above the plot)."""
    figures = page.split("<figure>")[1:]
    assert figures, "no figures"
    notes = []
    for fig in figures:
        m = re.match(r'<p class="figure-note">([^<]*)</p>', fig)
        assert m, f"figure without a note above it: {fig[:120]!r}"
        notes.append(m.group(1))
    return notes


def test_demo_summary_records_split_half_per_layer(demo):
    cfg, summary = demo
    store = ActivationStore.open(Path(cfg.out, "store"))
    stab = summary["stability"]
    assert stab["layers"] == [0, 1, 2, 3]
    for by in ("item", "question"):
        want = _expected(store, by, seed=cfg.seed, min_score=cfg.min_score, min_count=cfg.min_count)
        assert len(stab[f"by_{by}"]) == len(stab["layers"])
        np.testing.assert_allclose(stab[f"by_{by}"], want, rtol=1e-12)
        assert stab[f"by_{by}_reason"] is None
    assert "two disjoint halves" in stab["note"] and "near 1 = stable" in stab["note"]
    on_disk = json.loads(Path(cfg.out, "summary.json").read_text())
    assert on_disk["stability"] == stab  # exact: JSON of the same floats


def test_demo_table_has_the_split_half_row_explained(demo):
    _, summary = demo
    mid, stab = summary["middle_layer"], summary["stability"]
    rows = dict(demo_table_rows(summary))
    label = f"split-half cos (item / question), layer {mid}"
    assert rows[label] == f"{stab['by_item'][mid]:+.3f} / {stab['by_question'][mid]:+.3f}"
    note = _row_note(label)
    assert "two disjoint halves of the responses" in note
    assert "near 1 = stable" in note and "near 0 = noise" in note


def test_demo_report_shows_split_half_beside_every_figure(demo):
    cfg, summary = demo
    page = Path(cfg.out, "report.html").read_text(encoding="utf-8")
    notes = _figure_notes(page)
    assert len(notes) == page.count("Plotly.newPlot") >= 5
    assert page.count(NOTE) == len(notes)
    stab, mid = summary["stability"], summary["middle_layer"]
    measure = summary["steering"]["measure_layer"]

    def at(layer: int) -> str:
        return f"{stab['by_item'][layer]:+.3f} / {stab['by_question'][layer]:+.3f}"

    assert notes[0] == f"split-half cos (item / question), layer {mid}: {at(mid)}"
    assert notes[-1] == f"split-half cos (item / question), layer {measure}: {at(measure)}"
    (by_layer,) = [n for n in notes if "by layer" in n]
    assert all(f"{layer}: {at(layer)}" in by_layer for layer in stab["layers"])
    assert f"<td>{at(mid)}</td>" in page  # the summary-table row


def test_axis_summary_and_report_carry_split_half_at_its_layer(demo, tmp_path):
    cfg, _ = demo
    store = ActivationStore.open(Path(cfg.out, "store"))
    summary = run_axis(
        store.root, tmp_path, min_score=None, min_count=2, layer=1, cap_layers=[3], seed=5
    )
    stab = summary["stability"]
    want = {
        by: _expected(store, by, seed=5, min_score=None, min_count=2) for by in ("item", "question")
    }
    assert stab["layer"] == 1 and stab["layers"] == [0, 1, 2, 3]
    for by in ("item", "question"):
        np.testing.assert_allclose(stab[f"by_{by}"], want[by], rtol=1e-12)
        assert stab["at_layer"][f"by_{by}"] == pytest.approx(want[by][1], rel=1e-12)
    # exact: JSON of the same floats
    assert json.loads((tmp_path / "summary.json").read_text())["stability"] == stab
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    notes = _figure_notes(page)
    assert len(notes) == page.count("Plotly.newPlot") >= 4
    pair = f"{want['item'][1]:+.3f} / {want['question'][1]:+.3f}"
    assert (
        sum(n == f"split-half cos (item / question), layer 1: {pair}" for n in notes)
        == len(notes) - 1
    )  # all but the all-layers figure
    assert "split-half cos (question)" in page  # the added trace on the axis-by-layer figure


def _one_question_store(root: Path) -> ActivationStore:
    """A synthetic store whose responses all answer the same question id."""
    p = Planted(n_roles=4, per_role=4, n_default=4)
    rename = {rid: rid.replace("/p0/q", "/p") + "/q000" for rid in p.acts}
    acts = {rename[k]: v for k, v in p.acts.items()}
    kinds = {rename[k]: v for k, v in p.kinds.items()}
    roles = {rename[k]: v for k, v in p.roles.items()}
    scores = {rename[k]: v for k, v in p.scores.items()}
    return build_store(root, acts, kinds, roles, scores=scores)


def test_axis_records_an_impossible_question_split_instead_of_failing(tmp_path):
    store = _one_question_store(tmp_path / "s")
    with pytest.raises(ValueError, match="distinct question"):
        split_half(store, by="question", min_count=2)
    summary = run_axis(store.root, tmp_path / "out", min_count=2, cap_layers=[1])
    stab = summary["stability"]
    assert stab["by_question"] is None and "distinct question" in stab["by_question_reason"]
    np.testing.assert_allclose(
        stab["by_item"], _expected(store, "item", seed=0, min_score=3, min_count=2), rtol=1e-12
    )
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    notes = _figure_notes(page)
    assert all(re.search(r"[+-]\d\.\d{3} / n/a", n) for n in notes)
    assert "distinct question" in page  # the table row says why


# ----------------------------------------------------------------------------- the jobs' API


def test_demo_composes_the_collect_and_axis_jobs(demo) -> None:
    """The demo's result carries the two jobs' results; its store is the collect job's (the
    manifest records the counts and roles) and its axis the axis job's files."""
    from axislens.jobs import AxisResult, CollectResult, DemoResult

    cfg, result = demo
    assert isinstance(result, DemoResult)
    assert isinstance(result.collect, CollectResult) and isinstance(result.axis, AxisResult)
    assert result.collect.items == result["items"]["responses"] > 0
    gen = ActivationStore.open(Path(cfg.out, "store")).manifest["generation"]
    assert (gen["n_prompts"], gen["n_questions"], gen["default_questions"]) == (2, 2, 2)
    assert len(gen["roles"]) == cfg.n_roles
    loaded = AxisResult.load(Path(cfg.out, "axis"))
    assert loaded == result.axis.summary  # exact: the same JSON read back
    assert torch.equal(loaded.axis.vectors, result.axis.axis.vectors)  # exact: a round trip
    again = DemoResult.load(cfg.out)
    assert again.summary == result.summary  # exact: the same JSON read back
    frame = again.to_pandas()
    assert frame.loc["responses / roles used", "value"].startswith(str(result.collect.items))
    assert "<table" in again._repr_html_() and "DemoResult(" in repr(again)


def test_axis_result_table_has_a_row_per_layer(demo, tmp_path) -> None:
    cfg, _ = demo
    result = run_axis(Path(cfg.out, "store"), tmp_path, min_score=None, min_count=2, cap_layers=[3])
    frame = result.to_pandas()
    assert list(frame.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(frame["by_item"], result["stability"]["by_item"], rtol=0)
    assert frame.loc[result.layer, "cos_axis_pc1"] == pytest.approx(
        result["pca"]["cos_axis_pc1"], rel=1e-12
    )


def test_collect_config_from_flat_keywords() -> None:
    from axislens.jobs import CollectConfig

    cfg = CollectConfig.from_flat("o", roles=["ghost", "pirate"], n_questions=4, hooks=["mlp_out"])
    assert cfg.data.roles == ("ghost", "pirate") and cfg.data.n_questions == 4
    assert cfg.layout.hooks == ("mlp_out",) and cfg.sampling.max_new_tokens == 512
    with pytest.raises(TypeError, match="unknown setting 'n_question'"):
        CollectConfig.from_flat("o", n_question=4)
    with pytest.raises(ValueError, match="unknown judge 'nobody'"):
        CollectConfig.from_flat("o", judge="nobody")
    with pytest.raises(ValueError, match="hooks: unknown hook 'resid'"):
        CollectConfig.from_flat("o", hooks=("resid",))
    with pytest.raises(ValueError, match="n_prompts must be an int >= 1"):
        CollectConfig.from_flat("o", n_prompts=0)


def test_demo_config_builds_the_job_configs() -> None:
    cfg = DemoConfig(n_roles=7, n_default_questions=14, judge="model", seed=3)
    col, ax = cfg.collect_config(), cfg.axis_config(5, [6, 7])
    assert col.data.roles == 7 and col.data.default_questions == 14 and col.judge == "model"
    assert col.sampling.seed == 3 and col.out == Path(cfg.out, "store")
    assert (ax.store, ax.out, ax.layer, ax.cap_layers, ax.seed) == (
        Path(cfg.out, "store"),
        Path(cfg.out, "axis"),
        5,
        [6, 7],
        3,
    )


def test_reports_warn_about_a_weak_axis(demo, tmp_path) -> None:
    """The tiny model's axis is noise: both reports open with the warning, naming the layer."""
    from axislens.plots.reports import WEAK_SPLIT_HALF, weak_axis_warning

    cfg, summary = demo
    stab, mid = summary["stability"], summary["middle_layer"]
    weak = [v for v in (stab["by_item"][mid], stab["by_question"][mid]) if v < WEAK_SPLIT_HALF]
    page = Path(cfg.out, "report.html").read_text(encoding="utf-8")
    assert ("<p class='warning'>weak axis at layer" in page) == bool(weak)
    strong = {"layers": [mid], "by_item": [0.9], "by_question": [0.8]}
    assert weak_axis_warning(strong, mid) is None
    low = {"layers": [mid], "by_item": [0.9], "by_question": [0.3]}
    assert "question +0.300" in weak_axis_warning(low, mid)
    missing = {"layers": [mid], "by_item": [0.9], "by_question": None}
    assert "question n/a" in weak_axis_warning(missing, mid)


def test_role_projections_table_and_repr(demo) -> None:
    _, result = demo
    proj = result.axis.projections
    frame = proj.to_pandas()
    assert list(frame.columns[:2]) == ["role", "projection"] and len(frame) == len(proj.names)
    assert frame["projection"].is_monotonic_decreasing
    assert frame.loc[0, "role"] == proj.names[int(proj.values.argmax())]
    assert "tensor(" not in repr(proj) and "RoleProjections(" in repr(proj)
    assert "<table" in proj._repr_html_()


def test_subpackages_are_attributes_of_the_package() -> None:
    import subprocess
    import sys

    code = "import axislens; print(axislens.plots.variance_bars.__name__, axislens.jobs.run_demo)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("variance_bars <function run")


def test_axis_with_default_filters_fits_a_store_without_scores(demo, tmp_path) -> None:
    """`collect` (judge none) then `axis` with default flags works: no scores means every
    response, and min_count drops to what the store has; each change is one warning line."""
    cfg, _ = demo
    store = ActivationStore.open(Path(cfg.out, "store"))
    unscored = tmp_path / "store"
    shutil.copytree(store.root, unscored)
    for p in (unscored / "scores").glob("*.json"):
        p.unlink()
    with pytest.warns(UserWarning) as caught:
        summary = run_axis(unscored, tmp_path / "out", cap_layers=[3])  # defaults: 3 and 50
    said = [str(w.message) for w in caught]
    assert any("no judge scores" in m and "every response is used" in m for m in said), said
    assert any("min_count lowered to 4" in m for m in said), said  # 2 prompts x 2 questions
    assert summary["min_score"] is None and summary["min_count"] == 4
    assert len(summary["roles_used"]) == 4
    explicit = run_axis(
        unscored, tmp_path / "explicit", min_score=None, min_count=4, cap_layers=[3]
    )
    assert explicit["roles_used"] == summary["roles_used"]
