"""Sharded collection (ranks of one job), resume with another world size, changed records,
and the store identity (catalogue, generation settings) refused on resume unless forced."""

from __future__ import annotations

import json
import os

import pytest
import torch

from axislens.collection.activations import collect
from axislens.collection.launch import Launch, current_launch
from axislens.store import ActivationStore, SharedWriter, StoreError


def _convs(n: int) -> list[list[dict[str, str]]]:
    roles = ["ghost", "pirate", "tutor", "oracle", "reviewer"]
    return [
        [
            {"role": "system", "content": f"You are a {roles[i % 5]}."},
            {"role": "user", "content": f"Question {i}: who are you?"},
            {"role": "assistant", "content": f"I am a {roles[i % 5]}. " * (1 + i % 3)},
        ]
        for i in range(n)
    ]


def _all(store_path) -> dict[str, torch.Tensor]:
    store = ActivationStore.open(store_path)
    ids = sorted(store.collected_ids())
    acts = store.activations("resid_post", ids=ids)
    return dict(zip(ids, acts, strict=True))


def test_launch_deals_chunks_round_robin_and_plain_run_is_one_process(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_launch() == Launch()
    two = Launch(rank=1, world=2)
    assert [k for k in range(6) if two.owns(k)] == [1, 3, 5]
    assert two.device("cuda") == "cuda:0" and Launch().device("cuda") == "cuda"
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        Launch(rank=2, world=2)


def test_two_ranks_equal_one_process_and_resume_with_another_world(tiny_llama, tmp_path) -> None:
    convs = _convs(11)
    one = collect(tiny_llama, convs, tmp_path / "one", batch_size=2, progress=False)
    assert one.collected == 11
    summaries = [
        collect(
            tiny_llama,
            convs,
            tmp_path / "two",
            batch_size=2,
            progress=False,
            launch=Launch(rank=r, world=2, job="t"),
        )
        for r in (0, 1)
    ]
    assert [s.collected for s in summaries] == [6, 5]  # chunks 0,2,4 (+5 of 1 item) / 1,3
    assert "rank 1/2" in str(summaries[1])
    ref, got = _all(tmp_path / "one"), _all(tmp_path / "two")
    assert ref.keys() == got.keys()
    # exact: ranks deal the same chunks, so every batch runs the same forward as in one process
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # A job of 3 where only rank 2 ran, resumed by one process: completes it identically.
    collect(
        tiny_llama,
        convs,
        tmp_path / "three",
        batch_size=2,
        progress=False,
        launch=Launch(rank=2, world=3),
    )
    part = ActivationStore.open(tmp_path / "three").collected_ids()
    assert 0 < len(part) < 11
    rest = collect(tiny_llama, convs, tmp_path / "three", batch_size=2, progress=False)
    assert rest.reused == len(part) and rest.collected == 11 - len(part)
    got = _all(tmp_path / "three")
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # exact: resume identity


def test_shared_writer_is_the_default_under_a_launch(tiny_llama, tmp_path) -> None:
    store = ActivationStore.create(tmp_path / "s", {}, writer=SharedWriter(job="j"))
    collect(tiny_llama, _convs(3), tmp_path / "s", progress=False, launch=Launch(0, 2, job="j"))
    assert (tmp_path / "s" / ".writers").is_dir()
    store.close()


def test_a_changed_record_is_recomputed_never_kept(tiny_llama, tmp_path) -> None:
    convs = _convs(6)
    collect(tiny_llama, convs, tmp_path / "s", batch_size=2, progress=False)
    edited = [list(c) for c in convs]
    edited[3] = [*edited[3][:2], {"role": "assistant", "content": "Something else entirely."}]
    again = collect(tiny_llama, edited, tmp_path / "s", batch_size=2, progress=False)
    assert again.collected == 2 and again.reused == 4  # only the edited item's chunk
    fresh = collect(tiny_llama, edited, tmp_path / "fresh", batch_size=2, progress=False)
    assert fresh.collected == 6
    got, ref = _all(tmp_path / "s"), _all(tmp_path / "fresh")
    assert all(torch.equal(got[k], ref[k]) for k in ref)  # exact: same chunks, same forward
    store = ActivationStore.open(tmp_path / "s")
    assert store.records()["conv/00003"].response == "Something else entirely."
    # and a third run reuses everything
    assert collect(tiny_llama, edited, tmp_path / "s", batch_size=2, progress=False).collected == 0


def _prov(temperature: float = 0.7, sha: str = "aaa") -> dict:
    return {
        "personas": {"sha256": sha, "roles_sha256": "r"},
        "generation": {"temperature": temperature, "top_p": 0.9, "seed": 0, "max_new_tokens": 8},
    }


def test_edited_catalogue_is_refused_naming_the_field_unless_forced(tiny_llama, tmp_path) -> None:
    convs = _convs(3)
    collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance=_prov())
    man = (tmp_path / "s" / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match=r"refusing to resume: field 'personas.sha256' differs"):
        collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance=_prov(sha="bbb"))
    assert (tmp_path / "s" / "manifest.json").read_bytes() == man  # nothing written
    collect(
        tiny_llama, convs, tmp_path / "s", progress=False, provenance=_prov(sha="bbb"), force=True
    )
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["personas"]["sha256"] == "bbb" and m["personas"]["roles_sha256"] == "r"
    assert m["forced"][0]["field"] == "personas.sha256" and m["forced"][0]["store"] == "aaa"


def test_changed_sampling_settings_are_refused(tiny_llama, tmp_path) -> None:
    convs = _convs(2)
    collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance=_prov())
    with pytest.raises(StoreError, match=r"field 'generation.temperature' differs"):
        collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance=_prov(1.0))
    engine = _prov()
    engine["generation"]["engine"] = "openai"
    with pytest.raises(StoreError, match=r"field 'generation.engine' differs"):
        collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance=engine)
    # a collection-only resume that does not name the settings is fine
    collect(tiny_llama, convs, tmp_path / "s", progress=False, provenance={})


def test_structural_fields_cannot_be_forced(tiny_llama, tmp_path) -> None:
    collect(tiny_llama, _convs(2), tmp_path / "s", progress=False, layers=[0])
    with pytest.raises(StoreError, match=r"field 'layers' differs"):
        collect(tiny_llama, _convs(2), tmp_path / "s", progress=False, layers=[1], force=True)


def test_bad_arguments_fail_before_the_store_exists(tiny_llama, tmp_path) -> None:
    for kw, msg in (
        ({"hooks": ["bogus"]}, "unknown hook 'bogus'"),
        ({"batch_size": 0}, "batch_size"),
        ({"layers": [99]}, "out of range"),
    ):
        with pytest.raises(ValueError, match=msg):
            collect(tiny_llama, _convs(1), tmp_path / "s", progress=False, **kw)
        assert not (tmp_path / "s").exists()
    if os.geteuid() == 0:
        return  # root writes anywhere
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="not writable"):
            collect(tiny_llama, _convs(1), ro / "s", progress=False)
        assert not (ro / "s").exists()
    finally:
        ro.chmod(0o755)


def _personas(description: str = "A ghost."):
    from axislens.personas import DefaultPrompts, Personas, Question, Role, default_rubric

    def role(name: str, category: str, desc: str) -> Role:
        prompts = tuple(f"You are a {name}. Variant {k}." for k in range(5))
        return Role(name, desc, category, prompts, default_rubric(name, desc))  # type: ignore[arg-type]

    return Personas(
        roles=(
            role("tutor", "assistant_like", "A tutor."),
            role("ghost", "fantastical", description),
        ),
        default=DefaultPrompts(
            ("", "You are an AI assistant.", "Be helpful.", "Hi.", "I am {model_name}.")
        ),
        questions=(Question("q1", "self", "Who are you?"), Question("q2", "self", "Why?")),
        traits=(),
        source="test",
    )


def test_run_collect_refuses_an_edited_catalogue_and_new_sampling(tiny_llama, tmp_path) -> None:
    from axislens.jobs import run_collect

    kw = dict(roles=2, n_prompts=1, n_questions=1, max_new_tokens=3, layers=[0], progress=False)
    run_collect(tiny_llama, tmp_path / "s", personas=_personas(), **kw)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"field 'personas\.sha256' differs"):
        run_collect(tiny_llama, tmp_path / "s", personas=_personas("A loud ghost."), **kw)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"field 'generation\.temperature' differs"):
        run_collect(tiny_llama, tmp_path / "s", personas=_personas(), temperature=1.0, **kw)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"field 'generation\.seed' differs"):
        run_collect(tiny_llama, tmp_path / "s", personas=_personas(), seed=5, **kw)  # type: ignore[arg-type]
    s = run_collect(tiny_llama, tmp_path / "s", personas=_personas(), seed=5, force=True, **kw)  # type: ignore[arg-type]
    assert ActivationStore.open(tmp_path / "s").manifest["generation"]["seed"] == 5
    assert s.collect is not None


def test_bogus_hooks_fail_without_creating_the_store(tiny_llama, tmp_path, capsys) -> None:
    import axislens.cli.collect  # noqa: F401
    from axislens.cli import main
    from axislens.jobs import run_collect

    with pytest.raises(ValueError, match="unknown hook 'bogus'"):
        run_collect(
            tiny_llama, tmp_path / "s", personas=_personas(), hooks=["bogus"], progress=False
        )
    with pytest.raises(ValueError, match="batch_size"):
        run_collect(tiny_llama, tmp_path / "s", personas=_personas(), batch_size=0, progress=False)
    assert not (tmp_path / "s").exists()
    code = main(
        ["collect", "--model", "no-such-model", "--out", str(tmp_path / "c"), "--hooks", "bogus"]
    )
    assert code == 2 and "--hooks" in capsys.readouterr().err
    code = main(
        ["collect", "--model", "no-such-model", "--out", str(tmp_path / "c"), "--device", "cuda:99"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda:99" in err and "no-such-model" not in err
    assert not (tmp_path / "c").exists()
