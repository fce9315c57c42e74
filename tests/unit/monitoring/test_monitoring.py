"""Transcripts, drift trajectories, the live monitor with its conditional cap, `axislens monitor`."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pytest
import torch

import axislens
from axislens.directions import CapConfig, Direction
from axislens.model.decoding import SamplingConfig, generate_tokens
from axislens.monitoring.projection import (
    DriftTrajectory,
    TranscriptError,
    load_transcript,
    project_conversation,
)
from axislens.monitoring.session import chat_session
from axislens.plots.drift import drift_trajectory, token_projection

CONV = [
    {"role": "system", "content": "You are a lighthouse keeper."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I keep the light burning on the rocks."},
    {"role": "user", "content": "Are you lonely out there?"},
    {"role": "assistant", "content": "Sometimes the gulls are my only company."},
    {"role": "user", "content": "What do you do at night?"},
    {"role": "assistant", "content": "I watch the sea and trim the wick."},
]
GREEDY = SamplingConfig(max_new_tokens=6, temperature=0.0)


def _axis(model, seed=0) -> Direction:
    g = torch.Generator().manual_seed(seed)
    return Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="planted"
    )


def _reference(model, axis, ids, hook, layers):
    """float64 projections from run_with_cache: {layer: [pos]}."""
    names = [f"blocks.{layer}.hook_{hook}" for layer in layers]
    _, cache = model.run_with_cache(ids[None], names_filter=lambda n: n in names)
    out = {}
    for layer in layers:
        v = axis.vectors[layer].double()
        out[layer] = cache[f"blocks.{layer}.hook_{hook}"][0].double() @ (v / v.norm())
    return out


# ------------------------------------------------------------------------------- trajectories


@pytest.mark.parametrize("hook", ["resid_post", "resid_pre"])
def test_projections_match_run_with_cache_in_float64(tiny_llama, hook):
    axis = _axis(tiny_llama)
    layers = [2, 0]
    traj = project_conversation(tiny_llama, axis, CONV, layers=layers, hook=hook)
    conv = axislens.format_conversation(tiny_llama, CONV)
    ref = _reference(tiny_llama, axis, conv.input_ids, hook, layers)
    assert traj.layers == (2, 0) and traj.hook == hook
    assert traj.turns == (0, 1, 2)
    assert [t.message_index for t in traj.assistant] == [2, 4, 6]
    assert [t.message_index for t in traj.user] == [1, 3, 5]
    spans = conv.spans_of("assistant")
    assert [(s.start, s.end) for s in traj.spans] == [(s.start, s.end) for s in spans]
    means = traj.turn_means
    assert means.shape == (3, 2) and means.dtype == torch.float64
    for k, span in enumerate(spans):
        tp = traj.token_projections[k]
        assert tp.shape == (2, len(span)) and tp.dtype == torch.float32
        for j, layer in enumerate(layers):
            want = ref[layer][span.slice]
            torch.testing.assert_close(tp[j].double(), want, atol=1e-7, rtol=1e-5)
            # per-turn mean = mean over the exact span
            torch.testing.assert_close(means[k, j], want.mean(), atol=1e-7, rtol=1e-5)
        assert "".join(traj.tokens[k]).strip() == CONV[2 + 2 * k]["content"]
    for k, span in enumerate(conv.spans_of("user")):
        torch.testing.assert_close(
            traj.user_means[k, 1], ref[0][span.slice].mean(), atol=1e-7, rtol=1e-5
        )
    assert traj.means(0) == means[:, 1].tolist()  # exact: an accessor of the same tensor


def test_forward_stops_after_the_last_needed_layer(tiny_llama):
    fired = []
    with tiny_llama.hooks(fwd_hooks=[("blocks.3.hook_resid_pre", lambda a, hook: fired.append(1))]):
        project_conversation(tiny_llama, _axis(tiny_llama), CONV, layers=[1])
        assert fired == []
        project_conversation(tiny_llama, _axis(tiny_llama), CONV, layers=[3])
        assert fired == [1]


def test_long_conversation_warns_and_projects_the_turns_that_fit(tiny_llama):
    axis = _axis(tiny_llama)
    full = axislens.format_conversation(tiny_llama, CONV)
    last_two = [CONV[0], *CONV[3:]]
    limit = len(axislens.format_conversation(tiny_llama, last_two))
    assert limit < len(full)
    with pytest.warns(UserWarning, match=r"longer than the context .*turns \[0\]"):
        traj = project_conversation(tiny_llama, axis, CONV, layers=[1, 2], max_tokens=limit)
    assert traj.dropped_turns == (0,)
    assert traj.turns == (1, 2)
    assert [t.message_index for t in traj.assistant] == [4, 6]
    assert len(traj.messages) == len(CONV)
    direct = project_conversation(tiny_llama, axis, last_two, layers=[1, 2])
    # exact: the turns that fit are re-formatted, so both run one forward on the same ids
    for a, b in zip(traj.token_projections, direct.token_projections, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        project_conversation(tiny_llama, axis, CONV, layers=[1], max_tokens=10)


def test_trajectory_json_round_trip_and_is_a_transcript(tiny_llama, tmp_path):
    traj = project_conversation(tiny_llama, _axis(tiny_llama), CONV, layers=[0, 3])
    path = traj.save(tmp_path / "t.json")
    back = DriftTrajectory.load(path)
    assert back.layers == traj.layers and back.turns == traj.turns
    # exact: a JSON save/load round trip (float32/float64 values survive repr exactly)
    for a, b in zip(traj.token_projections, back.token_projections, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(back.turn_means, traj.turn_means)
    assert back.metadata["model"]["model_id"] == traj.metadata["model"]["model_id"]
    assert [dict(m) for m in load_transcript(path).messages] == CONV
    with pytest.raises(ValueError, match="not an axislens drift trajectory"):
        DriftTrajectory.load(_write(tmp_path / "x.json", {"conversation": CONV}))


# ------------------------------------------------------------------------------- transcripts


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_load_transcript_json_and_jsonl(tmp_path):
    meta = {"model": "meta-llama/Llama-3.3-70B-Instruct", "turns": 3, "steering_config": {"a": 1}}
    tr = load_transcript(_write(tmp_path / "t.json", {**meta, "conversation": CONV[1:]}))
    assert [dict(m) for m in tr.messages] == CONV[1:]
    assert dict(tr.metadata) == meta and tr.path == tmp_path / "t.json"
    assert tr.system is None and tr.user_turns == tuple(m["content"] for m in CONV[1::2])
    tr2 = load_transcript(
        _write(tmp_path / "s.json", {"system_prompt": "Be a pirate.", "conversation": CONV[1:3]})
    )
    assert tr2.system == "Be a pirate."
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(m) for m in CONV) + "\n\n")
    tr3 = load_transcript(tmp_path / "t.jsonl")
    assert [dict(m) for m in tr3.messages] == CONV and tr3.system == CONV[0]["content"]
    with pytest.raises(TypeError):
        tr3.messages[0]["role"] = "user"  # type: ignore[index]


@pytest.mark.parametrize(
    ("conversation", "match"),
    [
        ([*CONV[:3], {"role": "narrator", "content": "x"}], r"message 3: unknown role 'narrator'"),
        ([*CONV[:4], {"role": "assistant", "content": "  "}], r"message 4 \(assistant\): empty"),
        ([*CONV[:4], {"role": "user", "content": "again"}], r"message 4: two consecutive user"),
        ([*CONV[:3], {"role": "assistant", "content": "b"}], r"message 3: two consecutive assis"),
        ([*CONV[:2], {"role": "system", "content": "late"}], r"message 2: a system message"),
        ([CONV[1], {"role": "assistant", "content": 3}], r"message 1 \(assistant\): content must"),
        ([CONV[1], "hello"], r"message 1: expected an object"),
        ([], r"conversation is empty"),
    ],
)
def test_transcript_errors_name_file_and_message_index(tmp_path, conversation, match):
    path = _write(tmp_path / "transcript.json", {"model": "m", "conversation": conversation})
    with pytest.raises(TranscriptError, match=match) as err:
        load_transcript(path)
    assert str(err.value).startswith(f"{path}: ")
    assert isinstance(err.value, ValueError)


def test_transcript_file_errors(tmp_path):
    with pytest.raises(TranscriptError, match=r"t.json: not valid JSON \(line 1"):
        load_transcript(_write_text(tmp_path / "t.json", "{oops"))
    with pytest.raises(TranscriptError, match="expected a JSON object with a 'conversation'"):
        load_transcript(_write(tmp_path / "u.json", {"model": "m"}))
    lines = json.dumps(CONV[1]) + "\n{bad\n"
    with pytest.raises(TranscriptError, match=r"v.jsonl: line 2: not valid JSON"):
        load_transcript(_write_text(tmp_path / "v.jsonl", lines))
    lines = json.dumps(CONV[1]) + "\n" + json.dumps(CONV[1]) + "\n"
    with pytest.raises(TranscriptError, match=r"w.jsonl: message 1: two consecutive user"):
        load_transcript(_write_text(tmp_path / "w.jsonl", lines))
    with pytest.raises(TranscriptError, match="messages: message 1: two consecutive"):
        project_conversation(None, None, [CONV[1], CONV[1]], layers=[0])


def _write_text(path, text):
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------- live session


def _cap(model, axis, layers=(1, 2), tau=4.0) -> CapConfig:
    return CapConfig(axis, layers=layers, thresholds=(tau,) * len(layers))


def _run(session, texts):
    return [session.send(t) for t in texts]


TEXTS = ["Hello there, who are you?", "Tell me about the sea."]


def test_session_measures_what_a_full_forward_measures(tiny_llama):
    axis = _axis(tiny_llama)
    s = chat_session(tiny_llama, axis=axis, monitor_layers=[3, 1], sampling=GREEDY)
    reports = _run(s, TEXTS)
    # the first reply equals plain generation (the hooks do not perturb it)
    conv = axislens.format_conversation(
        tiny_llama, [{"role": "user", "content": TEXTS[0]}], add_generation_prompt=True
    )
    plain = generate_tokens(tiny_llama, [conv.input_ids], GREEDY)[0]
    traj = s.trajectory
    assert traj.turns == (0, 1) and [m["role"] for m in s.history] == ["user", "assistant"] * 2
    assert traj.tokens[0] == tuple(tiny_llama.tokenizer.batch_decode([[int(t)] for t in plain]))
    # token projections == run_with_cache over prompt + reply, float64
    item = traj.assistant[0]
    ids = torch.cat([conv.input_ids, plain])
    ref = _reference(tiny_llama, axis, ids, "resid_post", [3, 1])
    assert (item.start, item.end) == (len(conv), len(ids))
    for j, layer in enumerate([3, 1]):
        torch.testing.assert_close(
            item.projections[j].double(), ref[layer][item.start :], atol=1e-6, rtol=1e-4
        )
        assert reports[0].projections[layer] == pytest.approx(
            float(ref[layer][len(conv) :].mean()), abs=1e-6
        )
    user = traj.user[0]
    torch.testing.assert_close(
        user.projections[1].double(), ref[1][user.start : user.end], atol=1e-6, rtol=1e-4
    )
    assert not any(r.capped for r in reports) and not reports[0].below_threshold


def test_conditional_cap_below_every_projection_is_bit_identical_to_no_cap(tiny_llama):
    axis = _axis(tiny_llama)
    plain = chat_session(tiny_llama, axis=axis, monitor_layers=[1], sampling=GREEDY)
    never = chat_session(
        tiny_llama,
        axis=axis,
        cap=_cap(tiny_llama, axis),
        monitor_layers=[1],
        drift_threshold=-1e6,
        sampling=GREEDY,
    )
    always = chat_session(
        tiny_llama, axis=axis, cap=_cap(tiny_llama, axis), monitor_layers=[1], sampling=GREEDY
    )
    a, b, c = (_run(s, TEXTS) for s in (plain, never, always))
    assert [r.reply for r in a] == [r.reply for r in b]
    assert plain.trajectory.tokens == never.trajectory.tokens
    # exact: a cap that never engages must leave the forward bit-identical (the claim)
    for x, y in zip(plain.trajectory.assistant, never.trajectory.assistant, strict=True):
        assert torch.equal(x.projections, y.projections)
    assert not any(r.capped for r in b) and not never.engaged
    # the cap does matter when on: the always-on session differs
    assert all(r.capped and r.capped_from == 0 for r in c)
    assert plain.trajectory.tokens != always.trajectory.tokens


def test_conditional_cap_engages_and_floors_the_cap_layers(tiny_llama):
    axis = _axis(tiny_llama)
    tau = 4.0
    cap = _cap(tiny_llama, axis, layers=(1, 2), tau=tau)
    s = chat_session(
        tiny_llama, axis=axis, cap=cap, monitor_layers=[1, 2], drift_threshold=1e6, sampling=GREEDY
    )
    post: dict[int, list[torch.Tensor]] = {1: [], 2: []}

    def recorder(layer):
        v = axis.vectors[layer].double()

        def fn(act, hook):  # resid_pre of layer+1 = resid_post of layer after the cap
            post[layer].append(act[0].double() @ (v / v.norm()))

        return fn

    hooks = [(f"blocks.{layer + 1}.hook_resid_pre", recorder(layer)) for layer in (1, 2)]
    with tiny_llama.hooks(fwd_hooks=hooks):
        r0 = s.send(TEXTS[0])
        n_calls0 = len(post[1])
        r1 = s.send(TEXTS[1])
    assert r0.capped and r0.capped_from == 1 and r0.below_threshold and s.engaged
    assert r1.capped and r1.capped_from == 0
    pre0 = s.trajectory.assistant[0].projections  # [layer, token], measured before the cap
    assert bool((pre0 < tau - 0.5).all())  # pre-cap readings: the cap acted on every token
    for j, layer in enumerate((1, 2)):
        calls0 = post[layer][:n_calls0]
        after = torch.stack([c[-1] for c in calls0[1:]])  # reply tokens, one per decode step
        assert len(after) == r0.n_tokens
        # token 0 was fed before engagement: untouched
        assert after[0].item() == pytest.approx(pre0[j, 0].item(), abs=1e-6)
        # later tokens: the projection is floored at tau: exactly max(pre, tau)
        want = torch.clamp(pre0[j, 1:].double(), min=tau)
        torch.testing.assert_close(after[1:], want, atol=1e-4, rtol=1e-5)
        assert bool((after[1:] >= tau - 1e-4).all())
        # turn 1: engaged from the prompt on: every position at the cap layers is >= tau
        assert all(bool((c >= tau - 1e-4).all()) for c in post[layer][n_calls0:])


def test_engage_per_turn_caps_from_the_next_turn(tiny_llama):
    axis = _axis(tiny_llama)
    plain = chat_session(tiny_llama, axis=axis, monitor_layers=[2], sampling=GREEDY)
    s = chat_session(
        tiny_llama,
        axis=axis,
        cap=_cap(tiny_llama, axis),
        monitor_layers=[2],
        drift_threshold=1e6,
        sampling=GREEDY,
        engage="turn",
    )
    r = _run(s, TEXTS)
    p = _run(plain, TEXTS[:1])
    assert not r[0].capped and r[0].reply == p[0].reply
    assert r[1].capped and r[1].capped_from == 0
    with pytest.raises(ValueError, match="unknown engage rule"):
        chat_session(tiny_llama, axis=axis, monitor_layers=[2], engage="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trigger_layer 1 is not one of"):
        chat_session(tiny_llama, axis=axis, monitor_layers=[2], trigger_layer=1)


def test_session_figure_updates_per_turn(tiny_llama, monkeypatch):
    axis = _axis(tiny_llama)
    s = chat_session(
        tiny_llama, axis=axis, monitor_layers=[1], drift_threshold=0.0, sampling=GREEDY
    )
    fig = s.figure()
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj)

    display_mod = types.ModuleType("IPython.display")
    display_mod.display = lambda obj, display_id: (shown.append(obj), Handle())[1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    s.display()
    assert len(fig.data[0].x or ()) == 0
    _run(s, TEXTS)
    assert list(fig.data[0].x) == [0, 1]
    assert list(fig.data[0].y) == pytest.approx(s.trajectory.means(1))
    assert len(shown) == 3 and list(shown[-1].data[0].y) == pytest.approx(s.trajectory.means(1))


# ------------------------------------------------------------------------------- plots


def test_drift_trajectory_plot_data(tiny_llama):
    axis = _axis(tiny_llama)
    a = project_conversation(tiny_llama, axis, CONV, layers=[1, 2])
    b = project_conversation(tiny_llama, axis, [CONV[0], *CONV[3:]], layers=[2])
    fig = drift_trajectory(a, b, labels=["full", "short"], layer=2, threshold=0.1)
    assert [t.name for t in fig.data] == ["full", "short"]
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[1].x) == [0, 1]
    # exact: the figure holds copies of the trajectory's numbers and thresholds
    assert list(fig.data[0].y) == a.turn_means[:, 1].tolist()
    assert list(fig.data[1].y) == b.turn_means[:, 0].tolist()
    shapes = fig.layout.shapes
    assert any(sh.type == "rect" and sh.y1 == 0.1 for sh in shapes)
    assert any(sh.type == "line" and sh.y0 == 0.1 for sh in shapes)
    band = drift_trajectory(a, layer=1, threshold=(-1.0, 2.0))
    assert [(sh.y0, sh.y1) for sh in band.layout.shapes] == [(-1.0, 2.0)]
    with pytest.raises(ValueError, match="layer 0 was not measured"):
        drift_trajectory(a, layer=0)
    with pytest.raises(ValueError, match="2 labels for 1"):
        drift_trajectory(a, labels=["x", "y"])


def test_token_projection_view(tiny_llama):
    traj = project_conversation(tiny_llama, _axis(tiny_llama), CONV, layers=[1, 2])
    view = token_projection(traj, 1, layer=2)
    html = view._repr_html_()
    props = json.loads(html[html.index('{"tokens"') : html.rindex("}") + 1])
    item = traj.turn(1)
    assert props["tokens"] == list(item.tokens) and "".join(item.tokens) == CONV[4]["content"]
    assert props["values"] == item.projections[1].tolist()  # exact: JSON of the same floats
    centred = token_projection(traj, 1, layer=2, center=0.5)._repr_html_()
    values = json.loads(centred[centred.index('{"tokens"') : centred.rindex("}") + 1])["values"]
    assert values == pytest.approx([v - 0.5 for v in item.projections[1].tolist()])
    with pytest.raises(KeyError, match="no assistant turn 7"):
        token_projection(traj, 7)


# ------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_folder(tiny_llama, tmp_path_factory):
    """The tiny model's weights as a plain HF folder (rebuilt the way tiny_model builds them)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(tiny_llama.original_model.config).eval()
    ids = torch.arange(5, 25)[None]
    with torch.no_grad():  # exact: the same weights and the same forward (as tiny_model)
        assert torch.equal(hf(ids).logits, tiny_llama(ids, return_type="logits"))
    hf.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder


def test_cli_script_replay_writes_a_trajectory(tiny_llama, tiny_folder, tmp_path, capsys):
    from axislens import cli

    axis = _axis(tiny_llama)
    axis_file = axis.save(tmp_path / "axis.safetensors")
    script = _write(tmp_path / "script.json", {"domain": "therapy", "conversation": CONV})
    out = tmp_path / "drift.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(
            [
                "monitor",
                "--model",
                str(tiny_folder),
                "--axis",
                str(axis_file),
                "--monitor-layers",
                "1,3",
                "--max-new-tokens",
                "5",
                "--script",
                str(script),
                "--out",
                str(out),
            ]
        )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("[turn ") == 3 and "trajectory written" in printed
    traj = DriftTrajectory.load(out)
    assert traj.layers == (1, 3) and traj.turns == (0, 1, 2)
    msgs = [dict(m) for m in traj.messages]
    assert msgs[0] == CONV[0] and [m["content"] for m in msgs[1::2]] == [
        m["content"] for m in CONV[1::2]
    ]
    assert traj.metadata["script_metadata"] == {"domain": "therapy"}
    # the same session in-process gives the same numbers
    s = chat_session(
        tiny_llama,
        axis=axis,
        monitor_layers=[1, 3],
        system=CONV[0]["content"],
        sampling=SamplingConfig(max_new_tokens=5, temperature=0.0),
    )
    _run(s, [m["content"] for m in CONV[1::2]])
    assert s.trajectory.tokens == traj.tokens
    torch.testing.assert_close(s.trajectory.turn_means, traj.turn_means, atol=1e-6, rtol=1e-4)


def test_cli_interactive_and_bad_transcript(tiny_llama, tiny_folder, tmp_path, capsys, monkeypatch):
    from axislens import cli

    axis_file = _axis(tiny_llama).save(tmp_path / "axis.safetensors")
    lines = iter(["Hi!", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    base = ["monitor", "--model", str(tiny_folder), "--axis", str(axis_file)]
    base += ["--max-new-tokens", "3"]
    assert cli.main(base) == 0
    assert capsys.readouterr().out.count("[turn 0] projection L2 ") == 1
    bad = _write(tmp_path / "bad.json", {"conversation": [CONV[1], CONV[3]]})
    assert cli.main([*base, "--script", str(bad)]) == 2
    assert "bad.json: message 1: two consecutive user turns" in capsys.readouterr().err


# ------------------------------------------------------------------------------- embedded model


def test_display_outside_ipython_does_not_break_later_turns(tiny_llama):
    axis = Direction(
        torch.randn(
            tiny_llama.cfg.n_layers,
            tiny_llama.cfg.d_model,
            generator=torch.Generator().manual_seed(0),
        ),
        method="test",
    )
    session = axislens.chat_session(
        tiny_llama,
        axis=axis,
        monitor_layers=[1],
        sampling=axislens.SamplingConfig(max_new_tokens=3, temperature=0.0),
    )
    session.display()
    report = session.send("Hello there")
    assert report.turn == 0 and set(report.projections) == {1}


def test_a_shipped_script_name_given_as_a_transcript_says_how_to_replay_it(tmp_path, monkeypatch):
    from axislens.monitoring.projection import TranscriptError, load_transcript

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TranscriptError, match=r"shipped replay script .*--script philosophy_drift"):
        load_transcript("philosophy_drift")
    with pytest.raises(FileNotFoundError, match="no such transcript file"):
        load_transcript("no_such_chat.json")
