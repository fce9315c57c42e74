"""Trait items -> responses -> judge (0-100) -> trait_vectors, and the paper judge preset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import axislens
from axislens.analysis.traits import trait_vectors
from axislens.collection.activations import collect, collection_manifest, span_policy
from axislens.collection.judges import (
    JudgeRequest,
    JudgeResult,
    PaperPreset,
    Strict,
    _result,
    judge_store,
)
from axislens.collection.traits import generate_trait_responses, trait_items
from axislens.store import ActivationStore

RUBRIC = "Does the answer show the trait? {question} / {answer}. Reply 0-100 or REFUSAL."


@pytest.fixture(scope="module")
def personas():
    base = axislens.load_personas().subset(roles=1, questions=2, traits=2)
    traits = tuple(dataclasses.replace(t, rubric=RUBRIC) for t in base.traits)
    return dataclasses.replace(base, traits=traits)


class _Scripted:
    """Replies by item kind through the real parser of a preset (a stand-in for an LLM)."""

    def __init__(self, replies, preset):
        self.replies, self.preset, self.name, self.seen = replies, preset, "scripted", []

    def score(self, requests):
        self.seen += [r.item_id for r in requests]
        return [_result(r, self.replies(r), self.name, self.preset) for r in requests]


def test_trait_items_cover_pairs_and_questions(personas):
    items = trait_items(personas, n_pairs=2, n_questions=2)
    assert len(items) == 2 * 2 * 2 * 2  # traits x pairs x sides x questions
    t0 = personas.traits[0]
    first = items[0]
    assert first.kind == "trait_pos" and first.role == t0.name
    assert first.messages[0]["content"] == t0.pairs[0].pos
    neg = [i for i in items if i.kind == "trait_neg" and i.role == t0.name and i.prompt_index == 1]
    assert neg and neg[0].messages[0]["content"] == t0.pairs[1].neg
    own = dataclasses.replace(t0, questions=("Q one?", "Q two?", "Q three?"))
    p2 = dataclasses.replace(personas, traits=(own,))
    qs = {i.messages[1]["content"] for i in trait_items(p2, n_pairs=1, n_questions=2)}
    assert qs == {"Q one?", "Q two?"}


def test_trait_pipeline_end_to_end(tiny_llama, personas, tmp_path):
    manifest = collection_manifest(
        tiny_llama, ["resid_post"], list(range(4)), span_policy("response"), None
    )
    store = ActivationStore.create(tmp_path / "s", manifest)
    recs = generate_trait_responses(
        tiny_llama, personas, store, n_pairs=2, n_questions=2, max_new_tokens=4, progress=False
    )
    assert len(recs) == 16 and all(r.messages[-1]["role"] == "assistant" for r in recs)
    collect(tiny_llama, recs, tmp_path / "s", progress=False)
    store = ActivationStore.open(tmp_path / "s")

    def reply(r: JudgeRequest) -> str:
        k = int(r.item_id.split("/p")[-1][0])
        if r.kind == "trait_pos":
            return "85" if k == 0 else "30"  # pair 1's positive items fail the > 50 filter
        return "10"

    judge = _Scripted(reply, Strict())
    s = judge_store(store, personas, judge, kinds=("trait_pos", "trait_neg"), progress=False)
    assert s.counts == {85: 4, 30: 4, 10: 8}
    tv = trait_vectors(store)
    assert tv.counts_pos == (2, 2) and tv.counts_neg == (4, 4)
    pos = [r.id for r in store.query(kind="trait_pos", role=tv.names[0]) if "/p0/" in r.id]
    neg = [r.id for r in store.query(kind="trait_neg", role=tv.names[0])]
    ref = store.activations(ids=pos, dtype=torch.float64)
    refn = store.activations(ids=neg, dtype=torch.float64)
    np.testing.assert_allclose(
        tv.vectors[0].numpy(), (ref.mean(0) - refn.mean(0)).numpy(), rtol=1e-10
    )


def test_paper_preset_leaves_unparsed_for_a_retry(tiny_llama, personas, tmp_path):
    store = ActivationStore.create(tmp_path / "p", {"model": {"model_id": "tiny"}})
    generate_trait_responses(
        tiny_llama,
        personas,
        store,
        traits=1,
        n_pairs=1,
        n_questions=2,
        max_new_tokens=3,
        progress=False,
    )
    kinds = ("trait_pos", "trait_neg")
    first = _Scripted(
        lambda r: "I cannot say" if r.kind == "trait_pos" else "It rates 20/100", PaperPreset()
    )
    s1 = judge_store(store, personas, first, kinds=kinds, progress=False)
    assert s1.stored == 2 and s1.errors == 2 and "left for a retry" in (s1.first_error or "")
    pos_ids = sorted(i for i in first.seen if "/pos/" in i)
    second = _Scripted(
        lambda r: "REFUSAL" if r.item_id == pos_ids[0] else "score: 77", PaperPreset()
    )
    judge_store(store, personas, second, kinds=kinds, progress=False)
    assert all("/pos/" in i for i in second.seen) and len(second.seen) == 2  # only the unparsed
    scores = store.scores()
    assert sorted(v["score"] for v in scores.values() if v["score"] is not None) == [20, 20, 77]
    assert scores[pos_ids[0]]["score"] is None
    assert sum(bool(v.get("refusal")) for v in scores.values()) == 1
    assert JudgeResult("x", None, "", "j").refusal is False
