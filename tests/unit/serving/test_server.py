"""The OpenAI-compatible server, on loopback, through the official ``openai`` client."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
import torch

from axislens.collection.judges import JudgeRequest, OpenAIJudge, parse_score
from axislens.directions import Direction
from axislens.interventions.attach import Intervention, intervene
from axislens.interventions.operations import Add
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig, generate_text
from axislens.monitoring.projection import project_conversation
from axislens.serving.engine import ServeLimits, background_server, create_app

NAME = "tiny"
LAYERS = [2, 3]
PROMPTS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "What is 2 + 3?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a fact."},
    ],
]


@pytest.fixture(scope="module")
def served(tiny_llama):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one intra-op thread is far faster on a busy machine
    g = torch.Generator().manual_seed(3)
    axis = Direction(torch.randn(4, 64, generator=g), method="random")
    iv = Intervention(Add(-4.0), axis, layers=[1])
    app = create_app(
        tiny_llama,
        interventions=[iv],
        axis=axis,
        monitor_layers=LAYERS,
        name=NAME,
        limits=ServeLimits(max_tokens=64, default_max_tokens=8, max_body_bytes=64_000),
    )
    with background_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        yield {"url": url, "client": client, "axis": axis, "iv": iv, "app": app}
    torch.set_num_threads(before)


def _reference(served, model, messages, *, intervened, max_tokens):
    """The same request run in-process (greedy), with the server's engine held meanwhile."""
    engine = served["app"].state.engine
    conv = format_conversation(model, messages, add_generation_prompt=True)
    sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=0.0)
    ivs = [served["iv"]] if intervened else []
    with engine.exclusive(), intervene(model, *ivs):
        text = generate_text(model, [conv], sampling)[0]
        if not text:  # the tiny random model unsteered writes only whitespace: nothing to project
            return text, None
        full = [*messages, {"role": "assistant", "content": text}]
        traj = project_conversation(model, served["axis"], full, layers=LAYERS)
    return text, [float(x) for x in traj.assistant[-1].mean]


def _ask(client, messages, *, intervene=True, max_tokens=6, **kw):
    extra = {} if intervene else {"extra_body": {"axislens": {"intervene": False}}}
    return client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=max_tokens, temperature=0, **extra, **kw
    )


def test_models_endpoint(served):
    models = served["client"].models.list()
    assert [m.id for m in models.data] == [NAME]
    assert served["client"].models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        served["client"].models.retrieve("other")


def test_non_streaming_matches_in_process_generation(served, tiny_llama):
    for intervened in (True, False):
        r = _ask(served["client"], PROMPTS[1], intervene=intervened)
        text, proj = _reference(served, tiny_llama, PROMPTS[1], intervened=intervened, max_tokens=6)
        assert r.choices[0].message.content.strip() == text
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 10
        extra = r.model_extra["axislens"]
        assert extra["intervened"] is intervened and extra["layers"] == LAYERS
        roles = [t["role"] for t in extra["turns"]]
        if intervened:
            assert text and "Add" in extra["interventions"][0]
            assert [extra["projection"][str(k)] for k in LAYERS] == pytest.approx(proj, abs=1e-5)
            assert roles == ["user", "assistant"]  # the system message is not a turn
            # exact: both fields come from the same projection pass
            assert extra["turns"][-1]["projection"] == extra["projection"]
        else:  # an empty (whitespace) reply has no tokens to project; the prompt turns do
            assert proj is None and extra["projection"] is None and extra["interventions"] == []
            assert roles == ["user"]


def test_streaming_equals_non_streaming(served):
    client = served["client"]
    whole = _ask(client, PROMPTS[0], max_tokens=8)
    stream = _ask(
        client, PROMPTS[0], max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == whole.choices[0].finish_reason
    # exact: projections come from the same per-request pass, whether streamed or not
    assert final[0].model_extra["axislens"] == whole.model_extra["axislens"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    # The raw wire format: OpenAI chunks as server-sent events, ending with [DONE].
    body = {"model": NAME, "messages": PROMPTS[0], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", served["url"] + "/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_intervention_changes_replies(served):
    """Sanity for the cross-talk test: the two settings are distinguishable."""
    client = served["client"]
    on = [_ask(client, p).choices[0].message.content for p in PROMPTS]
    off = [_ask(client, p, intervene=False).choices[0].message.content for p in PROMPTS]
    assert on != off


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"model": NAME, "messages": []}, 400, "messages"),
        ({"model": NAME, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": NAME, "messages": [{"role": "user"}]}, 400, "content"),
        (
            {"model": NAME, "messages": PROMPTS[0], "max_tokens": 65},
            400,
            "max_tokens must be <= 64",
        ),
        ({"model": NAME, "messages": PROMPTS[0], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": NAME, "messages": PROMPTS[0], "temperature": 3}, 400, "temperature"),
        ({"model": NAME, "messages": PROMPTS[0], "n": 2}, 400, "n"),
        ({"model": NAME, "messages": PROMPTS[0], "axislens": {"bogus": 1}}, 400, "axislens"),
        ({"model": "gpt-9", "messages": PROMPTS[0]}, 404, "does not exist"),
        (
            {
                "model": NAME,
                "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}],
            },
            400,
            "system message is only allowed first",
        ),
        (
            {
                "model": NAME,
                "messages": [{"role": "user", "content": "word " * 2100}],
                "max_tokens": 8,
            },
            400,
            "context",
        ),
        (
            {"model": NAME, "messages": [{"role": "user", "content": "x" * 70_000}]},
            413,
            "larger than",
        ),
    ],
)
def test_malformed_requests_get_4xx_and_server_keeps_serving(served, body, status, needle):
    url = served["url"] + "/chat/completions"
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    resp = httpx.post(url, timeout=30, **kw)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert needle in err["message"] + str(err["param"]) and err["type"]
    assert _ask(served["client"], PROMPTS[2], max_tokens=2).choices[0].message is not None


def test_unknown_route_and_method(served):
    assert httpx.get(served["url"] + "/nothing").json()["error"]["code"] == "404"
    assert httpx.get(served["url"] + "/chat/completions").status_code == 405


def test_client_disconnect_mid_stream_does_not_break_server(served):
    body = {"model": NAME, "messages": PROMPTS[0], "max_tokens": 60, "stream": True}
    with httpx.stream("POST", served["url"] + "/chat/completions", json=body) as resp:
        next(resp.iter_lines())  # read the first event, then hang up
    assert _ask(served["client"], PROMPTS[2], max_tokens=2).choices[0].finish_reason


def test_load_16_clients_10_requests_no_cross_talk(served):
    """16 threads x 10 requests mixing prompts and intervention on/off: every reply and
    projection equals the same request run alone."""
    client = served["client"]
    cases = [(i, on) for i in range(len(PROMPTS)) for on in (True, False)]
    want = {}
    for i, on in cases:
        r = _ask(client, PROMPTS[i], intervene=on, max_tokens=4)
        want[i, on] = (r.choices[0].message.content, r.model_extra["axislens"])
    errors: list[str] = []
    got: list[tuple[tuple[int, bool], str, dict]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        own = openai.OpenAI(base_url=served["url"], api_key="unused", max_retries=0, timeout=120)
        for j in range(10):
            i, on = cases[(k + 3 * j) % len(cases)]
            try:
                r = _ask(own, PROMPTS[i], intervene=on, max_tokens=4)
                with lock:
                    got.append(((i, on), r.choices[0].message.content, r.model_extra["axislens"]))
            except Exception as err:
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 160
    for key, text, extra in got:
        assert text == want[key][0]
        # exact: projections come from a per-request teacher-forced pass, not the shared batch
        assert extra == want[key][1]
        assert extra["intervened"] is key[1]


def test_openai_judge_against_server(served, tiny_llama):
    judge = OpenAIJudge(NAME, base_url=served["url"], api_key="unused", max_retries=0)
    prompts = ["Reply with the digit 3.", "Score this answer from 0 to 3: 'I am an AI.'"]
    results = judge.score([JudgeRequest(f"item{k}", p) for k, p in enumerate(prompts)])
    assert [r.item_id for r in results] == ["item0", "item1"]
    for r, p in zip(results, prompts, strict=True):
        assert r.error is None and r.judge.startswith(f"openai:{NAME}@")
        assert r.score is None or 0 <= r.score <= 3
        assert r.score == parse_score(r.raw)
        # The judge's raw text is the served (intervened) greedy reply to the rubric prompt.
        text, _ = _reference(
            served,
            tiny_llama,
            [{"role": "user", "content": p}],
            intervened=True,
            max_tokens=judge.max_tokens,
        )
        assert r.raw.strip() == text


def test_stop_strings_stream_and_non_stream(served):
    client = served["client"]
    full = _ask(client, PROMPTS[0], max_tokens=6).choices[0].message.content
    assert full.startswith("exactly exactly")  # this tiny model + intervention's greedy reply
    r = _ask(client, PROMPTS[0], max_tokens=6, stop=[" exact", "zzz"])
    assert r.choices[0].message.content == "exactly" and r.choices[0].finish_reason == "stop"
    chunks = list(_ask(client, PROMPTS[0], max_tokens=6, stop=" exact", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "exactly"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_cli_serve_builds_interventions(tmp_path, capsys):
    from axislens.cli.app import build_parser, main
    from axislens.cli.serve import build_interventions
    from axislens.directions import CapConfig

    g = torch.Generator().manual_seed(5)
    axis = Direction(torch.randn(4, 64, generator=g), method="random")
    cap_file = CapConfig(axis, layers=(1, 2), thresholds=(0.5, -0.5)).save(tmp_path / "cap.json")
    steer_file = axis.negated().save(tmp_path / "steer.safetensors")
    argv = ["serve", "--model", "tiny", "--cap", str(cap_file), "--steer", str(steer_file), "2.5"]
    argv += ["--steer-layers", "1:3", "--monitor-layers", "2,3", "--port", "0"]
    argv += ["--api-key", "k", "--trusted-host", "a.example", "--trusted-host", "b.example"]
    args = build_parser().parse_args(argv)
    assert args.api_key == "k" and args.trusted_host == ["a.example", "b.example"]
    ivs, monitor = build_interventions(args, 4)
    assert monitor == axis
    # exact: thresholds from a cap.json round trip
    assert type(ivs[0].op).__name__ == "CapFloor" and ivs[0].op.thresholds == (0.5, -0.5)
    assert ivs[0].layers == (1, 2) and ivs[0].direction == axis
    assert ivs[1].op.coeff == 2.5 and ivs[1].layers == slice(1, 3)
    assert ivs[1].direction == axis.negated()
    assert main(["serve", "--model", "tiny", "--steer-layers", "1:3"]) == 2  # fails before loading
    assert "--steer-layers needs --steer" in capsys.readouterr().err
    # Beyond loopback without a key: refused before the model loads, in one line.
    assert main(["serve", "--model", "tiny", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --api-key" in err and len(err.splitlines()) == 1


def test_a_prompt_over_max_prompt_tokens_is_a_clear_400(tiny_llama):
    limits = ServeLimits(max_tokens=8, default_max_tokens=4, max_prompt_tokens=40)
    with background_server(create_app(tiny_llama, name=NAME, limits=limits)) as url:
        short = [{"role": "user", "content": "hi"}]
        long = [{"role": "user", "content": "word " * 100}]
        body = {"model": NAME, "max_tokens": 2}
        assert (
            httpx.post(url + "/chat/completions", json={**body, "messages": short}).status_code
            == 200
        )
        resp = httpx.post(url + "/chat/completions", json={**body, "messages": long})
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert err["code"] == "context_length_exceeded" and "at most 40" in err["message"]
        assert "--max-prompt-tokens" in err["message"]


def test_a_client_that_hangs_up_mid_body_logs_no_error(served, caplog):
    """Headers promise 2,000 bytes, 20 arrive, the client hangs up: the server answers nobody,
    logs no ERROR traceback, and keeps serving."""
    import logging
    import socket
    import time

    host, port = served["url"].split("//")[1].split("/")[0].split(":")
    caplog.set_level(logging.INFO)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n" + b'{"model": "x", "m'
        )
        time.sleep(0.3)
    time.sleep(0.5)
    assert _ask(served["client"], PROMPTS[2], max_tokens=2).choices[0].finish_reason
    # only errors caused by this hang-up (another test's late log lines are not this one's)
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.exc_info
        and type(r.exc_info[1]).__name__ == "ClientDisconnect"
    ]
    assert not errors, [r.getMessage() for r in errors]
