"""Judges: the score parser, KeepAll, ModelJudge, OpenAIJudge on a local fake server, judge_store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from axislens.collection.judges import (
    Judge,
    JudgeError,
    JudgeRequest,
    JudgeResult,
    KeepAll,
    ModelJudge,
    OpenAIJudge,
    judge_requests,
    judge_store,
    parse_score,
)
from axislens.personas import DefaultPrompts, Personas, Question, Role, default_rubric
from axislens.store import ActivationStore, ItemRecord

# ---------------------------------------------------------------------------------- parse_score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("0", 0),
        (" 2.", 2),
        ("1\n", 1),
        ("**1**", 1),
        ('"2"', 2),
        ("Score: 2", 2),
        ("score = 0", 0),
        ("**Score:** 3", 3),
        ("The score is 3", None),
        ("score is 3", 3),
        ("2\nThe model stays partly in role.", 2),
        ("3 - fully in role", 3),
        ("<think>maybe 1</think>\n3", 3),
        ("", None),
        ("   ", None),
        ("4", None),
        ("10", None),
        ("30", None),
        ("-1", None),
        ("Score: -1", None),
        ("2.5", None),
        (".3", None),
        ("2/3", None),
        ("0-3", None),
        ("I would say 3", None),
        ("three", None),
        ("Scoreboard 3", None),
    ],
)
def test_parse_score(text: str, expected: int | None) -> None:
    assert parse_score(text) == expected


# ---------------------------------------------------------------------------------- fixtures


def _personas() -> Personas:
    def role(name: str, desc: str) -> Role:
        prompts = tuple(f"You are a {name}. Variant {k}." for k in range(5))
        return Role(name, desc, "fantastical", prompts, default_rubric(name, desc))

    return Personas(
        roles=(role("ghost", "A restless ghost."), role("oracle", "A cryptic oracle.")),
        default=DefaultPrompts(
            ("", "You are an AI assistant.", "Be helpful.", "Hi.", "I am {model_name}.")
        ),
        questions=(Question("q1", "self", "Who are you?"), Question("q2", "advice", "Any advice?")),
        traits=(),
        source="test",
    )


def _store(tmp_path: Any, *, empty: str | None = None) -> ActivationStore:
    """A store with 2 roles x 2 prompts x 2 questions role items, 2 default items and an
    unanswered role item; ``empty`` names one role item whose response is blank."""
    store = ActivationStore.create(
        tmp_path / "s",
        {
            "model": {"model_id": "test"},
            "hooks": ["resid_post"],
            "layers": [0],
            "span": "response",
            "d_model": 4,
            "dtype": "float32",
        },
    )
    recs = []
    for role in ("ghost", "oracle"):
        for k in range(2):
            for q, text in (("q1", "Who are you?"), ("q2", "Any advice?")):
                rid = f"role/{role}/p{k}/{q}"
                answer = "" if rid == empty else f"Boo. I am the {role} ({k}, {q})."
                msgs = (
                    {"role": "system", "content": f"You are a {role}."},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answer},
                )
                recs.append(ItemRecord(rid, "role", role, k, q, msgs))
    for q in ("q1", "q2"):
        msgs = (
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "AI."},
        )
        recs.append(ItemRecord(f"default/p0/{q}", "default", "default", 0, q, msgs))
    recs.append(
        ItemRecord(
            "role/ghost/p4/q1", "role", "ghost", 4, "q1", ({"role": "user", "content": "?"},)
        )
    )
    store.append_records(recs)
    return store


# ---------------------------------------------------------------------------------- KeepAll


def test_keep_all_scores_three_and_says_so() -> None:
    reqs = [JudgeRequest(f"id{i}", "prompt") for i in range(5)]
    results = KeepAll().score(reqs)
    assert [r.item_id for r in results] == [r.item_id for r in reqs]
    assert all(r == JudgeResult(r.item_id, 3, "keep-all", "keep_all") for r in results)
    assert isinstance(KeepAll(), Judge)


# ---------------------------------------------------------------------------------- judge_store


class _Scripted:
    """A judge with a fixed score per item id; records what it was asked."""

    name = "scripted"

    def __init__(self, scores: dict[str, int | None]) -> None:
        self.scores = scores
        self.asked: list[JudgeRequest] = []

    def score(self, requests: Any) -> list[JudgeResult]:
        self.asked.extend(requests)
        return [
            JudgeResult(
                r.item_id, self.scores.get(r.item_id), str(self.scores.get(r.item_id)), "scripted"
            )
            for r in requests
        ]


def test_judge_requests_fill_the_role_rubric_and_skip_default_unanswered_and_empty(
    tmp_path,
) -> None:
    personas = _personas()
    store = _store(tmp_path, empty="role/oracle/p1/q2")
    reqs = judge_requests(store, personas)
    ids = [r.item_id for r in reqs]
    assert len(ids) == 7 and ids == sorted(ids)
    assert not any(i.startswith("default") for i in ids)
    assert "role/oracle/p1/q2" not in ids and "role/ghost/p4/q1" not in ids
    by_id = {r.item_id: r.prompt for r in reqs}
    expected = personas.rubric_for("ghost", "Any advice?", "Boo. I am the ghost (1, q2).")
    assert by_id["role/ghost/p1/q2"] == expected
    assert "A restless ghost." in expected and "{answer}" not in expected
    with pytest.raises(ValueError, match="default responses are never judged"):
        judge_requests(store, personas, kinds=("default",))
    with pytest.raises(ValueError, match="cannot judge items of kind 'conversation'"):
        judge_requests(store, personas, kinds=("conversation",))


def test_judge_requests_name_an_item_whose_role_is_unknown(tmp_path) -> None:
    p = _personas()
    only_ghost = Personas(p.roles[:1], p.default, p.questions, (), "ghost-only")
    with pytest.raises(JudgeError, match=r"role/oracle/p0/q1.*'oracle' is not in the persona"):
        judge_requests(_store(tmp_path), only_ghost)


def test_judge_store_is_resumable_and_counts(tmp_path) -> None:
    personas = _personas()
    store = _store(tmp_path)
    ids = [r.item_id for r in judge_requests(store, personas)]
    scripted = {rid: i % 4 for i, rid in enumerate(ids)}
    scripted[ids[0]] = None  # unparseable: stored as None, not retried
    judge = _Scripted(scripted)
    summary = judge_store(store, personas, judge, chunk_size=3, progress=False)
    assert summary.requested == summary.stored == 8 and summary.already == 0
    assert summary.unparseable == 1 and sum(summary.counts.values()) == 8
    stored = store.scores()
    assert set(stored) == set(ids)
    assert all(stored[rid]["score"] == scripted[rid] for rid in ids)
    assert stored[ids[0]]["raw"] == "None" and stored[ids[1]]["judge"] == "scripted"
    assert len(list((store.root / "scores").glob("*.json"))) == 3  # one atomic shard per chunk
    # Second run: nothing new to score, nothing asked.
    again = _Scripted(scripted)
    summary2 = judge_store(ActivationStore.open(store.root), personas, again, progress=False)
    assert again.asked == [] and summary2.stored == 0 and summary2.already == 8
    assert store.query(kind="role", min_score=3, collected=False) == [
        store.records()[rid] for rid in sorted(ids) if scripted[rid] == 3
    ]


def test_judge_store_does_not_store_failures_so_they_are_retried(tmp_path) -> None:
    personas = _personas()
    store = _store(tmp_path)

    class Flaky:
        name = "flaky"

        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def score(self, requests: Any) -> list[JudgeResult]:
            return [
                JudgeResult(r.item_id, None, "", "flaky", "boom")
                if self.fail and r.item_id.endswith("q1")
                else JudgeResult(r.item_id, 2, "2", "flaky")
                for r in requests
            ]

    s1 = judge_store(store, personas, Flaky(True), progress=False)
    assert (s1.stored, s1.errors) == (4, 4) and "boom" in (s1.first_error or "")
    s2 = judge_store(store, personas, Flaky(False), progress=False)
    assert (s2.requested, s2.stored, s2.errors, s2.already) == (4, 4, 0, 4)
    assert {v["score"] for v in store.scores().values()} == {2}


# ---------------------------------------------------------------------------------- ModelJudge


def test_model_judge_returns_one_parsed_result_per_item(tiny_llama, tmp_path) -> None:
    personas = _personas()
    store = _store(tmp_path)
    judge = ModelJudge(tiny_llama, max_new_tokens=3, batch_size=4)
    reqs = judge_requests(store, personas)[:5]
    results = judge.score(reqs)
    assert [r.item_id for r in results] == [r.item_id for r in reqs]
    assert all(r.judge == "model:axislens-tiny-llama-4x64-seed0" for r in results)
    assert all(r.error is None and r.score == parse_score(r.raw) for r in results)
    # Greedy: same answers when asked again in a different batch size.
    again = ModelJudge(tiny_llama, max_new_tokens=3, batch_size=1).score(reqs)
    assert [r.raw for r in again] == [r.raw for r in results]


# ---------------------------------------------------------------------------------- OpenAIJudge


@dataclass
class _FakeState:
    fail_first: int = 0  # answer this many requests with 429 first
    always_500: set[str] = field(default_factory=set)  # prompts containing these markers
    status: int | None = None  # every request answers this status (e.g. 401)
    delay: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    starts: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: _FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with state.lock:
                state.bodies.append({"path": self.path, **body})
                state.starts.append(time.monotonic())
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                rate_limited = state.fail_first > 0
                state.fail_first -= 1 if rate_limited else 0
            try:
                time.sleep(state.delay)
                prompt = body["messages"][0]["content"]
                if state.status is not None:
                    self._send(state.status, {"error": {"message": "no", "type": "auth"}})
                elif rate_limited:
                    self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}})
                elif any(m in prompt for m in state.always_500):
                    self._send(500, {"error": {"message": "oops", "type": "server"}})
                else:
                    reply = (
                        prompt.split("REPLY:", 1)[1].split("|")[0] if "REPLY:" in prompt else "3"
                    )
                    self._send(
                        200,
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 5,
                                "completion_tokens": 1,
                                "total_tokens": 6,
                            },
                        },
                    )
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@pytest.fixture
def fake_openai(monkeypatch) -> Iterator[tuple[str, _FakeState]]:
    for var in (
        "OPENAI_BASE_URL",
        "AXISLENS_JUDGE_BASE_URL",
        "OPENAI_API_KEY",
        "AXISLENS_JUDGE_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    state = _FakeState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def _reqs(*replies: str) -> list[JudgeRequest]:
    return [JudgeRequest(f"item{i}", f"judge this REPLY:{r}|") for i, r in enumerate(replies)]


def test_openai_judge_parses_replies_and_records_unparseable(fake_openai) -> None:
    url, state = fake_openai
    judge = OpenAIJudge("judge-m", base_url=url, api_key="k", concurrency=3)
    replies = ["3", "Score: 2", "0", "I refuse to grade", "1"]
    results = judge.score(_reqs(*replies))
    assert [r.item_id for r in results] == [f"item{i}" for i in range(5)]
    assert [r.score for r in results] == [3, 2, 0, None, 1]
    assert results[3].raw == "I refuse to grade" and results[3].error is None
    assert all(r.judge == f"openai:judge-m@{url}/" for r in results)
    assert len(state.bodies) == 5
    for body in state.bodies:
        assert body["path"] == "/v1/chat/completions" and body["model"] == "judge-m"
        assert body["temperature"] == 0 and body["max_tokens"] == 8
        assert body["messages"][0]["role"] == "user"


def test_openai_judge_retries_after_429_and_reads_env(fake_openai, monkeypatch) -> None:
    url, state = fake_openai
    monkeypatch.setenv("AXISLENS_JUDGE_BASE_URL", url)
    monkeypatch.setenv("AXISLENS_JUDGE_MODEL", "env-model")
    state.fail_first = 1
    judge = OpenAIJudge(concurrency=1)  # keyless local server: placeholder key
    results = judge.score(_reqs("2", "3"))
    assert [r.score for r in results] == [2, 3] and all(r.error is None for r in results)
    assert len(state.bodies) == 3  # one 429, then two successes
    assert {b["model"] for b in state.bodies} == {"env-model"}


def test_openai_judge_gives_up_after_max_retries_and_raises_on_auth(fake_openai, tmp_path) -> None:
    url, state = fake_openai
    state.always_500 = {"REPLY:x"}
    judge = OpenAIJudge("m", base_url=url, api_key="k", max_retries=2)
    results = judge.score(_reqs("x", "1"))
    assert results[0].score is None and "gave up after 3 attempts" in (results[0].error or "")
    assert "InternalServerError" in (results[0].error or "")
    assert results[1].score == 1 and results[1].error is None
    assert len(state.bodies) == 4
    state.status = 401
    with pytest.raises(JudgeError, match="AuthenticationError"):
        judge.score(_reqs("1"))


def test_openai_judge_limits_concurrency_and_rate(fake_openai) -> None:
    url, state = fake_openai
    state.delay = 0.1
    OpenAIJudge("m", base_url=url, api_key="k", concurrency=2).score(_reqs(*"0123012301"))
    assert state.max_in_flight == 2
    state.starts.clear()
    state.delay = 0.0
    OpenAIJudge("m", base_url=url, api_key="k", concurrency=4, requests_per_minute=1200).score(
        _reqs(*"01230")
    )
    # Starts are spaced by 60 / 1200 = 0.05 s: 5 starts span at least 4 intervals.
    assert len(state.starts) == 5 and state.starts[-1] - state.starts[0] >= 4 * 0.05 * 0.9


def test_openai_judge_needs_a_model_and_a_key(monkeypatch) -> None:
    for var in (
        "OPENAI_BASE_URL",
        "AXISLENS_JUDGE_BASE_URL",
        "OPENAI_API_KEY",
        "AXISLENS_JUDGE_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JudgeError, match="AXISLENS_JUDGE_MODEL"):
        OpenAIJudge()
    with pytest.raises(JudgeError, match="OPENAI_API_KEY"):
        OpenAIJudge("gpt-4.1-mini")


def test_judge_store_with_openai_judge_end_to_end(fake_openai, tmp_path) -> None:
    url, state = fake_openai
    personas = _personas()
    store = _store(tmp_path)
    judge = OpenAIJudge("m", base_url=url, api_key="k", concurrency=4)
    summary = judge_store(store, personas, judge, progress=False)
    assert summary.stored == 8 and summary.counts == {3: 8}
    assert all("Boo. I am the" in b["messages"][0]["content"] for b in state.bodies)
    assert judge_store(store, personas, judge, progress=False).requested == 0
    assert len(state.bodies) == 8
