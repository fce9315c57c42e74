"""Safe defaults: long commands print a plan and refuse CPU runs above the limit without --yes;
generate_responses / judge_store take a store folder; written files are world-readable."""

from __future__ import annotations

import os
import stat
import time

import pytest

import axislens
from axislens.cli import main
from axislens.collection.judges import KeepAll, judge_store
from axislens.collection.plan import CPU_TOKEN_LIMIT, PlanTooLarge, RunPlan, collect_plan
from axislens.store import ActivationStore, atomic_write_bytes


def _no_model(*args, **kwargs):
    raise AssertionError("a refused run must not load a model")


def test_collect_with_no_size_flags_refuses_quickly_naming_yes(tmp_path, capsys, monkeypatch):
    import axislens.model.loading as loading

    monkeypatch.setattr(loading, "load_model", _no_model)
    out = tmp_path / "x"
    t0 = time.perf_counter()
    rc = main(["collect", "--model", "smollm2-135m-instruct", "--out", str(out)])
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    assert rc != 0 and elapsed < 30
    plan_line = captured.out.strip().splitlines()[0]
    # the paper's items (all roles x 5 x 240 + defaults) at the CPU-sized 128 tokens per reply
    assert plan_line.startswith("collect plan: ") and "x 5 prompts x 240 questions" in plan_line
    assert "ETA about" in plan_line and " h " in plan_line
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "--yes" in err
    assert not out.exists()  # nothing generated, no store created


def test_collect_plan_counts_items_and_tokens():
    personas = axislens.load_personas()
    plan = collect_plan(personas, 3, n_prompts=2, n_questions=4, max_new_tokens=10)
    assert plan.items == 3 * 2 * 4 + 2 * 4  # roles + default prompts
    assert plan.new_tokens == plan.items * 10 and not plan.too_large
    plan.check(yes=False)  # small: no question asked
    assert "3 roles x 2 prompts x 4 questions" in plan.describe()
    prefill = collect_plan(
        personas, 3, n_prompts=2, n_questions=4, max_new_tokens=10, generate=False
    )
    assert prefill.new_tokens == 0


def test_plan_gate_is_for_large_runs_on_a_cpu_only():
    big = RunPlan("collect", items=1000, new_tokens=CPU_TOKEN_LIMIT + 1)
    with pytest.raises(PlanTooLarge, match="pass --yes") as err:
        big.check(yes=False)
    assert "\n" not in str(err.value)
    big.check(yes=True)
    RunPlan("collect", items=1000, new_tokens=CPU_TOKEN_LIMIT).check(yes=False)
    RunPlan("collect", items=1000, new_tokens=10 * CPU_TOKEN_LIMIT, device="cuda:0").check(False)


def test_generate_responses_and_judge_store_take_a_folder(tiny_llama, tmp_path):
    personas = axislens.load_personas()
    folder = tmp_path / "runs" / "x"
    recs = axislens.generate_responses(
        tiny_llama,
        personas,
        str(folder),
        roles=["ghost"],
        n_prompts=1,
        n_questions=2,
        max_new_tokens=3,
        progress=False,
    )
    assert len(recs) == 1 * 1 * 2 + 1 * 2
    store = ActivationStore.open(folder)
    assert store.manifest["generation"]["max_new_tokens"] == 3
    assert store.manifest["model"]["model_id"] == axislens.model_provenance(tiny_llama).model_id
    assert len(store.records()) == 4
    summary = judge_store(folder, personas, KeepAll(), progress=False)
    assert set(ActivationStore.open(folder).scores()) == {r.id for r in recs if r.kind == "role"}
    assert summary is not None


def test_written_files_honour_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "report.html", b"<html></html>")
        store = ActivationStore.create(tmp_path / "s", {"model": {"model_id": "m"}})
        store.append_scores([{"id": "a", "score": 3, "raw": "3", "judge": "j"}])
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.html", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "s" / "manifest.json").stat().st_mode) == 0o644
    shards = list((tmp_path / "s" / "scores").glob("*.json"))
    assert shards and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in shards)
    assert stat.S_IMODE((tmp_path / "private.html").stat().st_mode) == 0o600
