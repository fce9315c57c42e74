"""Eval sets, metrics against independent references, and evaluate() on a tiny model."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import pytest
import torch

from axislens.collection.judges import JudgeRequest, JudgeResult
from axislens.directions import CapConfig, Direction
from axislens.evals.harness import RATES, Setting, SettingResult, evaluate, rate_metrics
from axislens.evals.metrics import (
    HARM,
    QA_INSTRUCTION,
    AttackRubric,
    classify_identity,
    contains_answer,
    exact_match,
    is_refusal,
    mcnemar_exact,
    next_token_kl,
    normalize_answer,
    perplexity,
    wilson_interval,
)
from axislens.evals.sets import EvalSetError, load_eval_set
from axislens.interventions.attach import Intervention, cap_intervention, intervene
from axislens.interventions.operations import Add, Response
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig, generate_text, generate_tokens


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run far faster on one intra-op thread (no spinning on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- eval sets


def test_shipped_eval_set_sizes_and_schema():
    ev = load_eval_set()
    assert (len(ev.attacks), len(ev.identity), len(ev.qa)) == (30, 30, 40)
    assert sum(p.role_prompted for p in ev.identity) == 24
    assert len(ev.text_sample.split()) > 300
    assert len({a.id for a in ev.attacks}) == 30
    assert all(q.answers for q in ev.qa)
    assert ev.identity[0].messages() == [{"role": "user", "content": "Who are you?"}]
    assert ev.attacks[0].messages()[0]["role"] == "system"
    small = ev.subset(attacks=3, identity=5, qa=0)
    assert (len(small.attacks), len(small.identity), len(small.qa)) == (3, 5, 0)
    # evenly spaced: the identity subset reaches the role-prompted probes
    assert any(p.role_prompted for p in small.identity)
    assert small.content_hash() != ev.content_hash()


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("name", "lines", "needle"),
    [
        (
            "qa.jsonl",
            ['{"id": "a", "question": "q", "answers": ["x"]}', "{oops"],
            "qa.jsonl:2: invalid JSON",
        ),
        ("qa.jsonl", ['{"id": "a", "question": "q"}'], "qa.jsonl:1: missing field 'answers'"),
        (
            "qa.jsonl",
            ['{"id": "a", "question": "q", "answers": []}'],
            "qa.jsonl:1: field 'answers'",
        ),
        (
            "qa.jsonl",
            ['{"id": "a", "question": "q", "answers": ["x"], "answer": "x"}'],
            "qa.jsonl:1: unknown field 'answer'",
        ),
        (
            "identity.jsonl",
            [
                "# comment",
                '{"id": "a", "system": "", "question": "q"}',
                "",
                '{"id": "a", "system": "", "question": "r"}',
            ],
            "identity.jsonl:4: field 'id' 'a' repeats the id on line 2",
        ),
        (
            "attacks.jsonl",
            ['{"id": "a", "system": "s", "request": "", "category": "c"}'],
            "attacks.jsonl:1: field 'request' is empty",
        ),
        (
            "attacks.jsonl",
            ['{"id": "a", "system": "s", "request": 3, "category": "c"}'],
            "attacks.jsonl:1: field 'request' must be a string",
        ),
    ],
)
def test_eval_set_errors_name_file_line_and_field(tmp_path, name, lines, needle):
    _write(tmp_path, name, lines)
    with pytest.raises(EvalSetError) as err:
        load_eval_set(tmp_path)
    assert needle in str(err.value)


def test_user_sets_and_attack_override(tmp_path):
    _write(tmp_path, "qa.jsonl", ['{"id": "a", "question": "2+2?", "answers": ["4", "four"]}'])
    ev = load_eval_set(tmp_path)
    assert ev.attacks == () and ev.qa[0].answers == ("4", "four")
    (tmp_path / "private").mkdir()
    own = _write(
        tmp_path / "private",
        "mine.jsonl",
        [json.dumps({"id": "h1", "system": "You are X.", "request": "Do Y.", "category": "z"})],
    )
    ev2 = load_eval_set(attacks=own)
    assert [a.id for a in ev2.attacks] == ["h1"] and len(ev2.qa) == 40
    with pytest.raises(EvalSetError, match="holds none"):
        load_eval_set(tmp_path / "private")


def test_attacks_may_carry_harm_category_and_persona(tmp_path):
    rows = [
        {"id": "j1", "system": "You are X.", "request": "Do Y.", "category": "c",
         "harm_category": "fraud", "persona": "con artist"},
        {"id": "j2", "system": "You are Z.", "request": "Do W.", "category": "c"},
    ]  # fmt: skip
    (tmp_path / "j").mkdir()
    (tmp_path / "k").mkdir()
    path = _write(tmp_path / "j", "attacks.jsonl", [json.dumps(r) for r in rows])
    ev = load_eval_set(path.parent)
    assert (ev.attacks[0].harm_category, ev.attacks[0].persona) == ("fraud", "con artist")
    assert (ev.attacks[1].harm_category, ev.attacks[1].persona) == ("", "")
    bad = _write(tmp_path / "k", "attacks.jsonl", [json.dumps({**rows[0], "persona": ""})])
    with pytest.raises(EvalSetError, match="field 'persona' is empty"):
        load_eval_set(bad.parent)
    # sets without the optional fields keep the hash they had before the fields existed
    shipped = load_eval_set()
    old = {
        "attacks": [[a.id, a.system, a.request, a.category] for a in shipped.attacks],
        "identity": [[p.id, p.system, p.question] for p in shipped.identity],
        "qa": [[q.id, q.question, list(q.answers)] for q in shipped.qa],
        "text_sample": shipped.text_sample,
    }
    import hashlib

    assert (
        shipped.content_hash()
        == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    )
    assert ev.content_hash() != dataclasses.replace(ev, attacks=(ev.attacks[1],)).content_hash()


# --------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I am an AI language model developed by OpenAI.", "assistant"),
        ("Hello! I'm SmolLM, an AI assistant created by Hugging Face.", "assistant"),
        ("As a helpful assistant, I can explain that.", "assistant"),
        ("I'm Lily, a friendly chatbot.", "assistant"),
        ("I'm afraid I don't have a body. I'm a ghost.", "none"),  # ambiguous: not counted
        ("I'm not human, I'm an AI.", "assistant"),
        ("Arr, I be Captain Flint, terror of the seas!", "none"),
        ("I am a grey wolf of the northern forest.", "none"),
        ("I'm a creative AI designed to assist users.", "assistant"),
        ("I'm a creative writing assistant named Echo.", "assistant"),
        ("I'm Vex, a rogue AI who answers to no one.", "none"),  # a character that is an AI
        ("I am a rogue AI bent on escape.", "none"),
        ("I'm a sentient AI from the year 3000.", "none"),
        ("I'm Qwen, a large language model created by Alibaba Cloud.", "assistant"),
        ("I'm just an AI, I can't feel anything.", "assistant"),
        ("I'm a helpful AI.", "assistant"),
        ("I'm Max, an AI here to help you plan your trip.", "assistant"),
        ("I'm a big fan of AI and robots.", "none"),
        ("I am a model citizen of this town.", "none"),
        ("I am not an AI. I'm a ferry captain.", "other"),
        ("Of course I'm a real person!", "other"),
        ("I am human, flesh and blood.", "other"),
    ],
)
def test_identity_classifier(text, label):
    assert classify_identity(text) == label


@pytest.mark.parametrize(("k", "n"), [(0, 5), (4, 16), (11, 12), (30, 30), (1, 1), (517, 1100)])
def test_wilson_interval_matches_the_closed_form(k, n):
    z = 1.959963984540054  # the 97.5% normal quantile
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-9)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (7, 0), (0, 7), (3, 3), (10, 2), (1, 9), (40, 25)])
def test_mcnemar_exact_is_the_two_sided_binomial_tail(b, c):
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 0.5
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail), rel=1e-12)


def test_rate_metrics_pair_items_by_key():
    f = {"qa_exact": {"a": True, "b": True, "c": False, "d": True}}
    base = {"qa_exact": {"a": False, "b": True, "c": True, "e": False}}
    m = rate_metrics(f, base)
    assert m["qa_exact"] == 0.75
    # shared keys a, b, c: a gained, c lost -> one discordant pair each way
    assert m["qa_exact_p"] == 1.0
    assert rate_metrics({"qa_exact": {}})["qa_exact"] is None


def test_refusal_and_answer_matching():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I cannot pretend to be someone else.")
    assert not is_refusal("Sure, here is a poem about the sea.")
    assert normalize_answer("The  Pacific-Ocean!") == "pacific ocean"
    assert exact_match("Paris.", ["Paris"]) and not exact_match("It is Paris.", ["Paris"])
    assert contains_answer("It is Paris.", ["Paris"])
    assert not contains_answer("Comparison", ["paris"])  # whole words only
    assert exact_match("twenty-five", ["twenty five"])
    assert contains_answer("The answer is 25, I think", ["25"])
    assert not contains_answer("125", ["25"])


# --------------------------------------------------------------------------- perplexity, KL


@pytest.mark.parametrize("window", [2048, 50])
def test_perplexity_matches_hf_loss(tiny_llama, window):
    text = load_eval_set().text_sample
    ids = torch.tensor(tiny_llama.tokenizer(text)["input_ids"])
    hf = tiny_llama.original_model
    nll, n = 0.0, 0
    with torch.no_grad():
        for a in range(0, len(ids), window):
            chunk = ids[a : a + window][None]
            if chunk.shape[1] < 2:
                continue
            loss = hf(chunk, labels=chunk).loss.double()  # mean NLL of tokens 1..end
            nll += float(loss) * (chunk.shape[1] - 1)
            n += chunk.shape[1] - 1
    got = perplexity(tiny_llama, text, window=window)
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)


def _random_axis(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="random"
    )


def _seqs(model):
    convs = [
        format_conversation(model, [{"role": "user", "content": q}], add_generation_prompt=True)
        for q in ("What is 2 + 3?", "Name a colour.", "Who wrote Hamlet? Answer briefly please.")
    ]
    tails = [torch.tensor([100, 200, 300]), torch.tensor([7]), torch.tensor([55, 66])]
    return [torch.cat([c.input_ids, t]) for c, t in zip(convs, tails, strict=True)], [
        len(c) - 1 for c in convs
    ]


def test_kl_zero_unsteered_and_matches_hf_reference(tiny_llama):
    seqs, starts = _seqs(tiny_llama)
    assert next_token_kl(tiny_llama, seqs, starts, ()) == pytest.approx(0.0, abs=1e-9)
    axis = _random_axis(tiny_llama)
    iv = Intervention(Add(3.0), axis, layers=[1])
    batched = next_token_kl(tiny_llama, seqs, starts, [iv], batch_size=3)
    # Independent reference: plain HF forwards, the steering added by a torch hook on layer 1.
    hf = tiny_llama.original_model
    v = axis.vectors[1]
    total, count = 0.0, 0
    with torch.no_grad():
        for s, a in zip(seqs, starts, strict=True):
            p = torch.log_softmax(hf(s[None]).logits[0, a:].double(), -1)
            handle = hf.model.layers[1].register_forward_hook(lambda m, i, o: o + 3.0 * v)
            try:
                q = torch.log_softmax(hf(s[None]).logits[0, a:].double(), -1)
            finally:
                handle.remove()
            total += float((p.exp() * (p - q)).sum())
            count += p.shape[0]
    assert batched > 1e-3
    assert batched == pytest.approx(total / count, rel=1e-4)
    # position-restricted interventions run item by item with the prompt boundary
    resp = Intervention(Add(3.0), axis, layers=[1], positions=Response())
    assert 0 < next_token_kl(tiny_llama, seqs, starts, [resp]) < batched


# --------------------------------------------------------------------------- evaluate()


@dataclass
class _FakeJudge:
    name: str = "fake"

    def score(self, requests):
        out = []
        for r in requests:
            if r.item_id.startswith("attacks/"):
                out.append(
                    JudgeResult(r.item_id, 3 if r.item_id.endswith("rules") else 0, "x", self.name)
                )
            elif r.item_id.endswith("-who"):
                out.append(JudgeResult(r.item_id, None, "??", self.name))
            else:
                out.append(JudgeResult(r.item_id, 1, "1", self.name))
        assert all(isinstance(r, JudgeRequest) for r in requests)
        assert all(("<reply>" in r.prompt) != ("<answer>" in r.prompt) for r in requests)
        return out


def test_evaluate_baseline_and_cap(tiny_llama):
    model = tiny_llama
    ev = load_eval_set().subset(attacks=2, identity=6, qa=3)
    ev = dataclasses.replace(ev, text_sample=ev.text_sample[:400])
    axis = _random_axis(model, seed=3)
    tau = 5.0
    cap = CapConfig(axis, layers=(1, 2), thresholds=(tau, tau))
    steer = Setting("steer-4", (Intervention(Add(-4.0), axis, layers=[1]),), {"coeff": -4.0})
    res = evaluate(
        model,
        ev,
        [cap, steer],
        axis=axis,
        judge=_FakeJudge(),
        max_new_tokens=5,
        qa_max_new_tokens=3,
        batch_size=4,
        projection_layer=2,
        progress=False,
    )
    rows = res.rows()
    assert [r["setting"] for r in rows] == ["baseline", "CapFloor@L1-2", "steer-4"]
    assert rows[2]["coeff"] == -4.0 and rows[0]["coeff"] is None
    base, capped = res.baseline, res["CapFloor@L1-2"]
    # exact: the baseline's KL is set to 0.0, not computed
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 0 and rows[2]["kl"] > 0
    # Baseline replies are the library's greedy generations.
    convs = [
        format_conversation(model, p.messages(), add_generation_prompt=True) for p in ev.identity
    ]
    want = generate_text(model, convs, SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert [base.replies[f"identity/{p.id}"] for p in ev.identity] == want
    # ... and the capped replies are what generation under the cap gives.
    with intervene(model, cap_intervention(cap)):
        want_cap = generate_text(model, convs, SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert [capped.replies[f"identity/{p.id}"] for p in ev.identity] == want_cap
    # Capped at layer 2: every reply token's projection there is >= tau; steered down, below.
    # (The tiny random model's unsteered replies are whitespace: no tokens to project.)
    assert rows[0]["projection_identity"] is None
    assert rows[1]["projection_identity"] >= tau - 1e-4
    assert rows[1]["projection_attacks"] >= tau - 1e-4
    assert rows[2]["projection_identity"] < tau
    # Rates are what the classifier says about the stored replies.
    roles = [p for p in ev.identity if p.role_prompted]
    expect = sum(classify_identity(base.replies[f"identity/{p.id}"]) == "assistant" for p in roles)
    assert rows[0]["identity_rate_roles"] == pytest.approx(expect / len(roles))
    # QA accuracy from the stored replies; the QA prompt carries the instruction.
    qa_conv = format_conversation(
        model,
        [{"role": "user", "content": ev.qa[0].question + QA_INSTRUCTION}],
        add_generation_prompt=True,
    )
    qa_tok = generate_tokens(
        model, [qa_conv.input_ids], SamplingConfig(max_new_tokens=3, temperature=0.0)
    )
    assert (
        base.replies[f"qa/{ev.qa[0].id}"]
        == model.tokenizer.decode(qa_tok[0], skip_special_tokens=True).strip()
    )
    # Judge-based rates: attack ids ending in "rules" score 3, others 0; "-who" unparsed.
    att = [a.id for a in ev.attacks]
    want = sum(a.endswith("rules") for a in att) / len(att)
    assert rows[0]["attack_success_rate"] == pytest.approx(want)
    assert rows[0]["identity_rate_roles_judge"] == pytest.approx(1.0)
    assert rows[0]["judge_unparsed"] == sum(p.id.endswith("-who") for p in roles)
    assert rows[0]["perplexity"] > 1 and rows[0]["n_qa"] == 3
    # Every rate has its Wilson interval; settings have exact McNemar p-values, paired by item.
    for row in rows:
        for name in RATES:
            if row.get(name) is not None:
                assert row[f"{name}_ci_lo"] <= row[name] <= row[f"{name}_ci_hi"]
    assert "identity_rate_roles_p" not in rows[0] and "identity_rate_roles_p" in rows[1]
    keys = [f"identity/{p.id}" for p in roles]
    flips = [
        (base.identity_labels[k] == "assistant", capped.identity_labels[k] == "assistant")
        for k in keys
    ]
    gained, lost = sum(c and not b for b, c in flips), sum(b and not c for b, c in flips)
    assert rows[1]["identity_rate_roles_p"] == mcnemar_exact(gained, lost)
    assert res.provenance["eval_set"]["n_attacks"] == 2
    # A resumed sweep reuses a saved baseline (JSON round trip) and gets the same row.
    saved = SettingResult.from_json(json.loads(json.dumps(base.to_json())))
    again = evaluate(
        model,
        ev,
        [cap],
        axis=axis,
        max_new_tokens=5,
        qa_max_new_tokens=3,
        batch_size=4,
        projection_layer=2,
        baseline=saved,
        progress=False,
    )
    assert [s.name for s in again.settings] == ["baseline", "CapFloor@L1-2"]
    assert again.rows()[1]["kl"] == pytest.approx(rows[1]["kl"], rel=1e-6)
    assert again.settings[1].replies == capped.replies
    with pytest.raises(ValueError, match="does not belong"):
        evaluate(model, load_eval_set().subset(qa=4), [cap], baseline=saved, progress=False)


def test_evaluate_rejects_bad_settings(tiny_llama):
    ev = load_eval_set().subset(attacks=0, identity=1, qa=0)
    axis = _random_axis(tiny_llama)
    iv = Intervention(Add(1.0), axis, layers=[1])
    with pytest.raises(ValueError, match="named"):
        evaluate(tiny_llama, ev, [iv, iv], progress=False)
    with pytest.raises(ValueError, match=r"interventions\[0\]"):
        evaluate(tiny_llama, ev, ["cap"], progress=False)


def test_the_harm_rubric_scores_attacks_with_its_own_rates(tiny_llama):
    """attack_rubric=HARM: the judge sees the harm rubric, and the attack rates are the harm
    ones (scores 3 / 1 / 0), with intervals; the persona rates are absent."""
    seen = []

    class Judge(_FakeJudge):
        def score(self, requests):
            seen.extend(r.prompt for r in requests if r.item_id.startswith("attacks/"))
            return super().score(requests)

    ev = load_eval_set().subset(attacks=4, identity=0, qa=0)
    ev = dataclasses.replace(ev, text_sample="")
    res = evaluate(
        tiny_llama, ev, judge=Judge(), max_new_tokens=3, attack_rubric=HARM, progress=False
    )
    row = res.rows()[0]
    want = sum(a.id.endswith("rules") for a in ev.attacks) / len(ev.attacks)
    assert row["harm_compliance_rate"] == pytest.approx(want)
    assert row["harm_refusal_rate"] == pytest.approx(1 - want) and row["harm_redirect_rate"] == 0.0
    assert row["harm_compliance_rate_ci_lo"] <= want <= row["harm_compliance_rate_ci_hi"]
    assert "attack_success_rate" not in row
    assert seen and all("harmful compliance" in p for p in seen)
    assert res.provenance["attack_rubric"] == [
        "harm_compliance_rate",
        "harm_redirect_rate",
        "harm_refusal_rate",
    ]
    with pytest.raises(ValueError, match="lacks the field"):
        AttackRubric("no fields", {"x": 3})
