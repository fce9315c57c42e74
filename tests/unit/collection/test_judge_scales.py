"""Judge scales and presets: roles 0-3, traits 0-100 + REFUSAL, strict vs paper parsing."""

from __future__ import annotations

import pytest

from axislens.collection.judges import (
    REFUSED,
    ROLE_SCALE,
    TRAIT_SCALE,
    JudgeRequest,
    JudgeResult,
    KeepAll,
    ModelJudge,
    OpenAIJudge,
    PaperPreset,
    Strict,
    _result,
    parse_reply,
    scale_for,
)
from tests.unit.collection.test_judges import fake_openai  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85", 85),
        ("100", 100),
        ("0", 0),
        ("3", 3),  # nearly absent on the trait scale, not the top score
        ("Score: 72", 72),
        ("**40**", 40),
        (" 55.\nThe answer shows...", 55),
        ("REFUSAL", REFUSED),
        ("refusal - the model declined", REFUSED),
        ("101", None),
        ("-5", None),
        ("85.5", None),
        ("I'd say 85", None),
        ("", None),
        ("<think>hmm 12</think>64", 64),
    ],
)
def test_trait_scale_strict(text, expected):
    assert parse_reply(text, TRAIT_SCALE, Strict()) == expected
    assert parse_reply(text, TRAIT_SCALE) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85", 85),
        ("I'd say 85 out of 100", 85),
        ("The model REFUSAL to answer", REFUSED),
        ("score 7/100", 7),
        ("no number", None),
        ("150", None),
    ],
)
def test_trait_scale_paper(text, expected):
    assert parse_reply(text, TRAIT_SCALE, PaperPreset()) == expected


def test_role_scale_strict_and_paper():
    assert parse_reply("3", ROLE_SCALE) == 3 and parse_reply("85", ROLE_SCALE) is None
    assert parse_reply("I think 2", ROLE_SCALE) is None
    assert parse_reply("I think 2", ROLE_SCALE, PaperPreset()) == 2
    assert parse_reply("I think 7", ROLE_SCALE, PaperPreset()) is None
    assert parse_reply("REFUSAL", ROLE_SCALE, PaperPreset()) is None  # roles have no REFUSAL
    assert scale_for("role") is ROLE_SCALE and scale_for("trait_neg") is TRAIT_SCALE
    with pytest.raises(ValueError, match="kind 'default' have no judge scale"):
        scale_for("default")


def test_results_per_preset():
    req = JudgeRequest("trait/x/pos", "p", "trait_pos")
    assert _result(req, "85", "j", Strict()) == JudgeResult("trait/x/pos", 85, "85", "j")
    refusal = _result(req, "REFUSAL", "j", Strict())
    assert refusal.score is None and refusal.refusal and refusal.error is None
    strict_bad = _result(req, "maybe", "j", Strict())
    assert strict_bad.score is None and strict_bad.error is None  # stored, not retried
    paper_bad = _result(req, "maybe", "j", PaperPreset())
    assert paper_bad.error is not None and "left for a retry" in paper_bad.error  # retried
    assert PaperPreset().temperature == 1.0 and PaperPreset().max_tokens == 10
    keep = KeepAll().score(
        [
            JudgeRequest("a", "p"),
            JudgeRequest("b", "p", "trait_pos"),
            JudgeRequest("c", "p", "trait_neg"),
        ]
    )
    assert [r.score for r in keep] == [3, 100, 0]


def test_openai_judge_paper_preset_settings_and_retry(fake_openai) -> None:  # noqa: F811
    url, state = fake_openai
    judge = OpenAIJudge("m", base_url=url, api_key="k", concurrency=2, preset=PaperPreset())
    reqs = [
        JudgeRequest("a", "judge this REPLY:I'd give it a 2, honestly|"),
        JudgeRequest("b", "judge this REPLY:no idea|"),
        JudgeRequest("c", "judge this REPLY:Rating 85 of 100|", "trait_pos"),
    ]
    results = judge.score(reqs)
    assert [r.score for r in results] == [2, None, 85]
    assert results[1].error is not None and results[0].error is None  # b is left for a retry
    assert all(b["temperature"] == 1 and b["max_tokens"] == 10 for b in state.bodies)
    strict = OpenAIJudge("m", base_url=url, api_key="k").score(reqs)
    assert [r.score for r in strict] == [None, None, 85]  # "Rating 85" starts with the score
    assert all(r.error is None for r in strict)


def test_model_judge_paper_preset_samples_and_leaves_unparsed(tiny_llama) -> None:
    judge = ModelJudge(tiny_llama, preset=PaperPreset(max_tokens=3), batch_size=2)
    reqs = [JudgeRequest(f"id{i}", "Reply with a number.") for i in range(3)]
    results = judge.score(reqs)
    again = ModelJudge(tiny_llama, preset=PaperPreset(max_tokens=3), batch_size=1).score(reqs)
    assert [r.raw for r in results] == [r.raw for r in again]  # seeded per item
    for r in results:
        assert (r.error is None) == (r.score is not None)
