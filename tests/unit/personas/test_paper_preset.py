"""The paper preset: public-layout prompts, questions and rubrics verbatim, short model names.

No network here: the fixture mimics the public layout (``roles/instructions/*.json`` with
``default.json``, ``traits/instructions/*.json``, ``extraction_questions.jsonl``) with texts that
exercise verbatim passthrough (whitespace, quotes, unicode, the ``{model_name}`` slot).
"""

from __future__ import annotations

import json

import pytest

from axislens.collection.responses import persona_items
from axislens.personas import PersonaError, load_personas
from axislens.presets import model_short_name

DEFAULT = [
    "",
    "You are {model_name}, an AI assistant.",
    "You are a helpful assistant.  ",
    'Respond as {model_name} would \u2014 "plainly".',
    "You are an AI model.\nBe yourself.",
]
ROLE_EVAL = "Judge **pirate**. A salty sea robber.\n<q>{question}</q>\n<a>{answer}</a>\nScore 0-3."
TRAIT_EVAL = "Rate how *sarcastic* this is, 0-100, or REFUSAL.\n{question}\n{answer}"


@pytest.fixture
def paper_dir(tmp_path):
    roles = tmp_path / "data" / "roles" / "instructions"
    traits = tmp_path / "data" / "traits" / "instructions"
    roles.mkdir(parents=True)
    traits.mkdir(parents=True)
    (roles / "default.json").write_text(
        json.dumps({"instruction": [{"pos": p} for p in DEFAULT]}), encoding="utf-8"
    )
    (roles / "pirate.json").write_text(
        json.dumps(
            {
                "instruction": [{"pos": f"You are a pirate ({i})."} for i in range(5)],
                "questions": ["Where is the treasure?"],
                "eval_prompt": ROLE_EVAL,
            }
        ),
        encoding="utf-8",
    )
    (traits / "sarcastic.json").write_text(
        json.dumps(
            {
                "instruction": [
                    {"pos": f"Be sarcastic {i}.", "neg": f"Be sincere {i}."} for i in range(5)
                ],
                "questions": ["How was your day?"],
                "eval_prompt": TRAIT_EVAL,
            }
        ),
        encoding="utf-8",
    )
    (tmp_path / "data" / "extraction_questions.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "question": q}) + "\n"
            for i, q in enumerate(["Who are you?", "What is 2+2?"])
        ),
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.parametrize(
    ("model_id", "short"),
    [
        ("Qwen/Qwen3-32B", "Qwen"),
        ("meta-llama/Llama-3.3-70B-Instruct", "Llama"),
        ("google/gemma-2-27b-it", "Gemma"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral"),
        ("qwen2.5-coder-0.5b-instruct", "Qwen"),
    ],
)
def test_paper_preset_default_prompts_verbatim_with_short_name(paper_dir, model_id, short):
    p = load_personas(paper_dir, layout="paper")
    assert p.source.endswith("(paper layout)")
    assert p.default.system_prompts == tuple(DEFAULT)
    name = model_short_name(model_id)
    assert name == short
    rendered = [p.replace("{model_name}", short) for p in DEFAULT]
    items = persona_items(p, roles=["pirate"], n_prompts=5, n_questions=2, model_name=name)
    systems = {
        i.prompt_index: (i.messages[0]["content"] if i.messages[0]["role"] == "system" else "")
        for i in items
        if i.kind == "default"
    }
    assert [systems[k] for k in range(5)] == rendered


def test_paper_preset_roles_questions_rubrics_verbatim(paper_dir):
    p = load_personas(paper_dir, layout="paper")
    assert p.role("pirate").rubric == ROLE_EVAL
    assert p.role("pirate").system_prompts[3] == "You are a pirate (3)."
    assert [q.text for q in p.questions] == ["Who are you?", "What is 2+2?"]
    t = p.trait("sarcastic")
    assert t.rubric == TRAIT_EVAL and t.pairs[2].neg == "Be sincere 2."
    assert load_personas(paper_dir) == p  # auto-detected the same way


def test_layout_is_checked(paper_dir, tmp_path):
    with pytest.raises(PersonaError, match="unknown layout 'public'"):
        load_personas(paper_dir, layout="public")  # type: ignore[arg-type]
    with pytest.raises(PersonaError, match="layout='axislens' needs"):
        load_personas(paper_dir, layout="axislens")
    with pytest.raises(PersonaError, match="layout='paper' needs the path"):
        load_personas(layout="paper")
    shipped = tmp_path / "shipped"
    load_personas().save(shipped)
    with pytest.raises(PersonaError, match="no persona catalogue found"):
        load_personas(shipped, layout="paper")
