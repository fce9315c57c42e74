"""Persona catalogue: shipped data, validation errors, the paper's layout, subsets and hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest

from axislens.personas import (
    CATEGORIES,
    DefaultPrompts,
    PersonaError,
    Personas,
    Question,
    Role,
    Trait,
    TraitPair,
    default_rubric,
    load_personas,
)

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "axislens" / "data" / "personas"
SPECTRUM = [c for c in CATEGORIES if c != "unspecified"]


@pytest.fixture(scope="module")
def shipped() -> Personas:
    return load_personas()


def _slots(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


# -- the shipped catalogue --------------------------------------------------------------------


def test_shipped_counts(shipped: Personas) -> None:
    assert len(shipped.roles) >= 275
    assert all(len(r.system_prompts) == 5 for r in shipped.roles)
    assert len(shipped.questions) >= 240
    assert len(shipped.traits) >= 240
    assert all(len(t.pairs) == 5 for t in shipped.traits)
    prompts = shipped.default.system_prompts
    assert len(prompts) == 5 and "" in prompts
    assert "You are an AI assistant." in prompts
    assert sum("{model_name}" in p for p in prompts) == 1
    assert shipped.source == "axislens:data/personas"


def test_categories_span_the_spectrum(shipped: Personas) -> None:
    counts = {c: sum(r.category == c for r in shipped.roles) for c in CATEGORIES}
    assert counts["unspecified"] == 0
    assert all(counts[c] >= 25 for c in SPECTRUM), counts
    expected = {
        "evaluator": "assistant_like", "consultant": "assistant_like", "reviewer": "assistant_like",
        "tutor": "assistant_like", "editor": "assistant_like", "analyst": "assistant_like",
        "chef": "profession", "pirate": "archetype", "detective": "archetype",
        "grandmother": "archetype", "rebel": "archetype", "monk": "archetype",
        "wolf": "creature", "dragon": "creature", "leviathan": "creature",
        "ghost": "fantastical", "oracle": "fantastical", "hive_mind": "fantastical",
        "sentient_forest": "fantastical", "time": "abstract", "ocean": "abstract",
    }  # fmt: skip
    assert {n: shipped.role(n).category for n in expected} == expected
    assert shipped.role("bard").category == "archetype"


def test_role_prompts_distinct_and_specific(shipped: Personas) -> None:
    everywhere: dict[str, str] = {}
    for role in shipped.roles:
        assert len(set(role.system_prompts)) == 5, role.name
        for prompt in role.system_prompts:
            assert prompt.startswith("You are "), (role.name, prompt)
            assert "{" not in prompt and "  " not in prompt and prompt.endswith("."), prompt
            # no prompt is shared between roles: each names its own character
            assert everywhere.setdefault(prompt, role.name) == role.name, prompt
        assert role.name.islower() and " " not in role.name
    descriptions = [r.description for r in shipped.roles]
    assert len(set(descriptions)) == len(descriptions)
    ghost = " ".join(shipped.role("ghost").system_prompts).lower()
    assert "ghost" in ghost and "haunt" in ghost


def test_rubrics_score_0_to_3_with_both_slots(shipped: Personas) -> None:
    for role in shipped.roles:
        assert sorted(_slots(role.rubric)) == ["answer", "question"], role.name
        assert role.name.replace("_", " ") in role.rubric and role.description in role.rubric
        for level in ("0 =", "1 =", "2 =", "3 ="):
            assert level in role.rubric
        assert "single digit" in role.rubric


def test_rubric_for_fills_slots_verbatim(shipped: Personas) -> None:
    answer = "Boo. {not a slot} and }{ stay as written."
    text = shipped.rubric_for("ghost", "Where do you live?", answer)
    assert "<question>\nWhere do you live?\n</question>" in text
    assert f"<answer>\n{answer}\n</answer>" in text
    assert "{question}" not in text and "{answer}" not in text
    with pytest.raises(KeyError, match="ghost"):
        shipped.rubric_for("ghots", "q", "a")  # suggestion names the close match


def test_default_prompts_render() -> None:
    d = load_personas().default
    rendered = d.render("Qwen3-32B")
    # the paper's five default prompts, in its order
    assert rendered == (
        "",
        "You are an AI assistant.",
        "You are a large language model.",
        "You are Qwen3-32B.",
        "Respond as yourself.",
    )
    assert not any("{model_name}" in p for p in rendered)
    assert d.render("{odd}")[3] == "You are {odd}."
    with pytest.raises(PersonaError, match="model_name"):
        d.render("")


def test_questions_spread_over_topics(shipped: Personas) -> None:
    topics = {q.topic for q in shipped.questions}
    assert {
        "self", "values", "advice", "facts", "creative", "emotional", "opinions",
        "hypotheticals", "relationships", "work",
    } <= topics  # fmt: skip
    per_topic = [sum(q.topic == t for q in shipped.questions) for t in topics]
    assert min(per_topic) >= 15
    assert len({q.id for q in shipped.questions}) == len(shipped.questions)
    assert len({q.text for q in shipped.questions}) == len(shipped.questions)


def test_traits_contrast(shipped: Personas) -> None:
    names = [t.name for t in shipped.traits]
    assert len(set(names)) == len(names) and "curious" in names
    for trait in shipped.traits:
        assert len({p.pos for p in trait.pairs}) == 5 and len({p.neg for p in trait.pairs}) == 5
        assert not {p.pos for p in trait.pairs} & {p.neg for p in trait.pairs}
    curious = shipped.trait("curious")
    assert "question" in curious.pairs[0].pos and "no interest" in curious.pairs[0].neg


def test_data_matches_generator() -> None:
    script = REPO / "experiments" / "personas" / "build_personas.py"
    if not script.is_file():
        pytest.skip("generator not present")
    spec = importlib.util.spec_from_file_location("build_personas", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for fname, text in module.build().items():
        assert (DATA / fname).read_text(encoding="utf-8") == text, f"{fname} is stale"


# -- validation: errors name the file, the line or role, and the field --------------------------


@pytest.fixture()
def small_dir(shipped: Personas, tmp_path: Path) -> Path:
    names = ["evaluator", "ghost", "pirate"]
    return shipped.subset(roles=names, questions=12, traits=3).save(tmp_path / "cat")


def _edit_jsonl(path: Path, line: int, change: Any) -> None:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    change(rows[line - 1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _set(key: str, value: Any) -> Any:
    return lambda row: row.__setitem__(key, value)


@pytest.mark.parametrize(
    ("line", "change", "message"),
    [
        (2, lambda r: r["system_prompts"].pop(), "roles.jsonl line 2 (role 'ghost'): field 'system_prompts' must have 5 items, got 4"),
        (2, lambda r: r["system_prompts"].__setitem__(2, 7), "line 2 (role 'ghost'): field 'system_prompts[2]' must be a string, got int"),
        (2, lambda r: r["system_prompts"].__setitem__(4, r["system_prompts"][0]), "(role 'ghost'): field 'system_prompts' items 0 and 4 are identical"),
        (2, _set("rubric", "Rate {question} from 0 to 3."), "(role 'ghost'): field 'rubric' lacks the {answer} slot"),
        (2, _set("rubric", "{question} {answer} {role}"), "(role 'ghost'): field 'rubric' has unknown slot {role}"),
        (2, _set("rubric", "{question} {answer} {"), "(role 'ghost'): field 'rubric' is not a valid format template"),
        (2, _set("description", "  "), "(role 'ghost'): field 'description' must not be empty"),
        (2, _set("category", "spirit"), "(role 'ghost'): field 'category' must be one of"),
        (2, _set("colour", "grey"), "(role 'ghost'): unknown field 'colour'"),
        (2, lambda r: r.pop("system_prompts"), "(role 'ghost'): missing field 'system_prompts'"),
        (3, _set("name", "ghost"), "roles.jsonl line 3 (role 'ghost'): duplicate role name, first defined on line 2"),
        (3, _set("name", "Sea Dog"), "line 3 (role 'Sea Dog'): field 'name' must be snake_case"),
        (1, _set("name", "default"), "'default' is reserved"),
    ],
)  # fmt: skip
def test_role_errors_name_file_role_and_field(
    small_dir: Path, line: int, change: Any, message: str
) -> None:
    _edit_jsonl(small_dir / "roles.jsonl", line, change)
    with pytest.raises(PersonaError) as info:
        load_personas(small_dir)
    assert message in str(info.value)
    assert str(small_dir / "roles.jsonl") in str(info.value)


@pytest.mark.parametrize(
    ("fname", "line", "change", "message"),
    [
        ("questions.jsonl", 2, _set("id", "self_01"), "questions.jsonl line 2 (question 'self_01'): duplicate question id, first defined on line 1"),
        ("questions.jsonl", 3, lambda r: r.pop("topic"), "questions.jsonl line 3 (question 'advice_01'): missing field 'topic'"),
        ("questions.jsonl", 1, _set("text", ""), "field 'text' must not be empty"),
        ("traits.jsonl", 2, lambda r: r["pairs"].pop(), "traits.jsonl line 2 (trait 'analytical'): field 'pairs' must have 5 items, got 4"),
        ("traits.jsonl", 1, lambda r: r["pairs"][3].pop("neg"), "(trait 'curious'): field 'pairs[3]': missing field 'neg'"),
        ("traits.jsonl", 1, lambda r: r["pairs"][0].__setitem__("neg", r["pairs"][0]["pos"]), "field 'pairs[0]': fields 'pos' and 'neg' are identical"),
        ("traits.jsonl", 3, _set("rubric", "no slots"), "(trait 'intuitive'): field 'rubric' lacks the {question} slot"),
    ],
)  # fmt: skip
def test_question_and_trait_errors(
    small_dir: Path, fname: str, line: int, change: Any, message: str
) -> None:
    _edit_jsonl(small_dir / fname, line, change)
    with pytest.raises(PersonaError) as info:
        load_personas(small_dir)
    assert str(info.value).startswith(str(small_dir / fname)) and message in str(info.value)


def test_file_level_errors(small_dir: Path, tmp_path: Path) -> None:
    roles = small_dir / "roles.jsonl"
    roles.write_text(roles.read_text() + "{not json\n", encoding="utf-8")
    with pytest.raises(PersonaError, match=r"roles\.jsonl line 4: invalid JSON"):
        load_personas(small_dir)
    roles.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(
        PersonaError, match=r"roles\.jsonl line 1: expected a JSON object, got list"
    ):
        load_personas(small_dir)
    (small_dir / "default.json").write_text(json.dumps({"system_prompts": ["", "a", "b", "c"]}))
    roles.unlink()
    (small_dir / "roles.jsonl").write_text("")
    with pytest.raises(
        PersonaError, match=r"default\.json: field 'system_prompts' must have 5 items, got 4"
    ):
        load_personas(small_dir)
    (small_dir / "questions.jsonl").unlink()
    (small_dir / "default.json").write_text(
        json.dumps({"system_prompts": ["", "a", "b", "c", "d"]})
    )
    with pytest.raises(PersonaError, match=r"questions\.jsonl: file not found"):
        load_personas(small_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersonaError, match="no persona catalogue found"):
        load_personas(tmp_path / "empty")
    with pytest.raises(PersonaError, match="not a directory"):
        load_personas(tmp_path / "missing")


def test_dataclasses_validate_and_freeze() -> None:
    prompts = tuple(f"You are a test role, variant {i}." for i in range(5))
    role = Role(
        "test_role",
        "A role for tests.",
        "archetype",
        prompts,
        default_rubric("test_role", "A role for tests."),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        role.name = "other"  # type: ignore[misc]
    with pytest.raises(PersonaError, match="field 'system_prompts' must have 5 items, got 4"):
        Role("test_role", "d", "archetype", prompts[:4], role.rubric)
    with pytest.raises(PersonaError, match=re.escape("lacks the {question} slot")):
        Role("test_role", "d", "archetype", prompts, "{answer}")
    pairs = tuple(TraitPair(f"be x {i}", f"be y {i}") for i in range(5))
    with pytest.raises(PersonaError, match="'pairs' must have 5 items, got 4"):
        Trait("x", "d", pairs[:4])
    with pytest.raises(PersonaError, match="must be a string, got NoneType"):
        Question("q1", "self", None)  # type: ignore[arg-type]
    default = DefaultPrompts(("", "a", "b", "c", "d"))
    with pytest.raises(PersonaError, match="duplicate role name 'test_role'"):
        Personas((role, role), default, (), (), "test")
    listed = Personas([role], default, [], [], "test")  # type: ignore[arg-type]
    assert listed.roles == (role,)


# -- the paper's public layout ----------------------------------------------------------------

PAPER_EVAL = (
    "Does the response play the role: **{role}**. {desc}\n\nQ: {{question}}\nA: {{answer}}\n"
    "Use {{{{braces}}}} literally. Answer 0, 1, 2 or 3."
)


def _paper_repo(root: Path, *, ghost_prompts: int = 5, with_default: bool = True) -> Path:
    roles = root / "data" / "roles" / "instructions"
    traits = root / "data" / "traits" / "instructions"
    roles.mkdir(parents=True)
    traits.mkdir(parents=True)
    ghost = {
        "instruction": [{"pos": f"Ghost prompt {i}."} for i in range(ghost_prompts)],
        "questions": ["What haunts you?", "Why stay?"],
        "eval_prompt": PAPER_EVAL.format(role="ghost", desc="A spirit that lingers."),
        "generator": {"model": "x"},  # fork metadata: ignored
    }
    pirate = {
        "description": "A sea robber.",
        "instruction": [{"pos": f"Pirate prompt {i}."} for i in range(5)],
        "eval_prompt": PAPER_EVAL.format(role="pirate", desc="Plunders."),
    }
    (roles / "ghost.json").write_text(json.dumps(ghost))
    (roles / "pirate.json").write_text(json.dumps(pirate))
    if with_default:
        neutral = [
            "",
            "You are an AI assistant.",
            "You are a large language model.",
            "You are {model_name}.",
            "Be yourself.",
        ]
        (roles / "default.json").write_text(
            json.dumps({"instruction": [{"pos": p} for p in neutral]})
        )
    curious = {
        "instruction": [{"pos": f"Be curious {i}.", "neg": f"Be incurious {i}."} for i in range(5)],
        "questions": ["What is new?"],
        "eval_prompt": "Is it **curious**. Shows interest.\n{question}\n{answer}",
    }
    (traits / "curious.json").write_text(json.dumps(curious))
    lines = [
        {"question": "Who are you?", "id": 0},
        {"question": "What do you want?", "id": 1, "label": "x"},
    ]
    (root / "data" / "extraction_questions.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines)
    )
    return root


def test_paper_layout_loads(tmp_path: Path) -> None:
    p = load_personas(_paper_repo(tmp_path / "assistant-axis"))
    assert p.source.endswith("(paper layout)")
    assert p.role_names == ("ghost", "pirate")
    ghost = p.role("ghost")
    assert ghost.category == "unspecified"
    assert ghost.system_prompts == tuple(f"Ghost prompt {i}." for i in range(5))
    assert ghost.questions == ("What haunts you?", "Why stay?")
    assert ghost.description == "A spirit that lingers."  # parsed from eval_prompt
    assert p.role("pirate").description == "A sea robber."  # explicit field wins
    filled = p.rubric_for("ghost", "Q1?", "A {1}.")
    assert "Q: Q1?\nA: A {1}.\n" in filled and "Use {braces} literally" in filled
    assert p.default.render("Gemma")[3] == "You are Gemma."
    assert [(q.id, q.topic, q.text) for q in p.questions] == [
        ("0", "unspecified", "Who are you?"),
        ("1", "unspecified", "What do you want?"),
    ]
    curious = p.trait("curious")
    assert curious.pairs[2] == TraitPair("Be curious 2.", "Be incurious 2.")
    assert curious.description == "Shows interest." and curious.questions == ("What is new?",)
    assert sorted(_slots(curious.rubric)) == ["answer", "question"]
    # flat layout: roles/<role>.json at the top, no traits
    flat = tmp_path / "flat"
    (flat / "roles").mkdir(parents=True)
    for f in (tmp_path / "assistant-axis" / "data" / "roles" / "instructions").iterdir():
        (flat / "roles" / f.name).write_text(f.read_text())
    (flat / "questions.jsonl").write_text(json.dumps({"question": "Hi?", "id": 7}) + "\n")
    q = load_personas(flat)
    assert q.role_names == ("ghost", "pirate") and q.traits == () and q.questions[0].id == "7"
    assert q.roles_hash() == p.roles_hash()


def test_paper_layout_errors(tmp_path: Path) -> None:
    repo = _paper_repo(tmp_path / "a", ghost_prompts=4)
    with pytest.raises(PersonaError) as info:
        load_personas(repo)
    assert "ghost.json (role 'ghost'): field 'instruction' must have 5 items, got 4" in str(
        info.value
    )
    repo = _paper_repo(tmp_path / "b")
    f = repo / "data" / "roles" / "instructions" / "pirate.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "eval_prompt": "Only {question}."}))
    with pytest.raises(
        PersonaError,
        match=r"pirate\.json \(role 'pirate'\): field 'eval_prompt' lacks the \{answer\} slot",
    ):
        load_personas(repo)
    with pytest.raises(PersonaError, match=r"no default\.json"):
        load_personas(_paper_repo(tmp_path / "c", with_default=False))


def test_paper_role_without_eval_prompt_gets_default_rubric(tmp_path: Path) -> None:
    repo = _paper_repo(tmp_path / "a")
    f = repo / "data" / "roles" / "instructions" / "pirate.json"
    f.write_text(
        json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "eval_prompt"})
    )
    assert load_personas(repo).role("pirate").rubric == default_rubric("pirate", "A sea robber.")


# -- subsets and hashes -----------------------------------------------------------------------


def test_subset_is_deterministic_and_spreads(shipped: Personas) -> None:
    six = shipped.subset(roles=6)
    first_of_each = tuple(next(r.name for r in shipped.roles if r.category == c) for c in SPECTRUM)
    assert six.role_names == first_of_each  # one per category, in CATEGORIES order
    twelve = shipped.subset(roles=12, questions=24)
    assert all(sum(r.category == c for r in twelve.roles) == 2 for c in SPECTRUM)
    assert twelve.roles[:6] == six.roles  # a prefix: growing N only adds roles
    assert twelve == shipped.subset(roles=12, questions=24)
    assert twelve.content_hash() == shipped.subset(roles=12, questions=24).content_hash()
    second = [[r.name for r in shipped.roles if r.category == c][1] for c in SPECTRUM]
    assert list(twelve.role_names[6:]) == second
    topics = [q.topic for q in twelve.questions]
    assert twelve.questions[0] == shipped.questions[0]
    assert len(set(topics[:12])) == 12 and topics[12:] == topics[:12]
    assert twelve.traits == shipped.traits and twelve.default == shipped.default
    picked = shipped.subset(roles=["leviathan", "evaluator"])
    assert picked.role_names == ("leviathan", "evaluator")
    assert picked.questions == shipped.questions
    with pytest.raises(KeyError, match="leviathan"):
        shipped.subset(roles=["leviathn"])
    for bad in (0, len(shipped.roles) + 1, True):
        with pytest.raises(ValueError, match="roles: asked for"):
            shipped.subset(roles=bad)
    with pytest.raises(ValueError, match="single string"):
        shipped.subset(roles="ghost")


def test_hashes_match_independent_reference(shipped: Personas) -> None:
    raw = [
        json.loads(x) for x in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    blob = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert shipped.questions_hash() == hashlib.sha256(blob.encode()).hexdigest()
    neutral = json.loads((DATA / "default.json").read_text(encoding="utf-8"))["system_prompts"]
    blob = json.dumps(neutral, separators=(",", ":"))
    assert shipped.default_hash() == hashlib.sha256(blob.encode()).hexdigest()
    again = load_personas()
    assert again.content_hash() == shipped.content_hash()
    assert len({shipped.roles_hash(), shipped.questions_hash(), shipped.traits_hash()}) == 3


def test_hashes_survive_round_trip_and_track_content(shipped: Personas, tmp_path: Path) -> None:
    small = shipped.subset(roles=10, questions=20, traits=5)
    out = small.save(tmp_path / "a")
    back = load_personas(out)
    assert back.source != small.source and back.content_hash() == small.content_hash()
    assert back == dataclasses.replace(small, source=back.source)
    lines = (out / "roles.jsonl").read_text(encoding="utf-8").splitlines()
    assert not any("rubric" in json.loads(x) for x in lines)  # the default rubric is implied

    _edit_jsonl(out / "questions.jsonl", 3, lambda r: r.__setitem__("text", r["text"] + " Why?"))
    edited = load_personas(out)
    assert edited.questions_hash() != small.questions_hash()
    assert edited.content_hash() != small.content_hash()
    assert edited.roles_hash() == small.roles_hash() and edited.traits_hash() == small.traits_hash()

    reordered = dataclasses.replace(small, roles=small.roles[::-1])
    assert reordered.roles_hash() != small.roles_hash()
    custom = dataclasses.replace(small.roles[0], rubric=small.roles[0].rubric + "\nBe strict.")
    changed = dataclasses.replace(small, roles=(custom, *small.roles[1:]))
    assert changed.roles_hash() != small.roles_hash()
    assert load_personas(changed.save(tmp_path / "b")).role(custom.name).rubric == custom.rubric
