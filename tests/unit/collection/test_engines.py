"""OpenAIBackend against a tiny in-process OpenAI-compatible stub, for the faults a real vLLM
server cannot be made to produce: a server whose tokenizer disagrees, one without ``/tokenize``,
one that conditions on other tokens, transient 503s (the client's own retries), and persistent
500s. The real-server behaviour is tested in tests/integration/test_vllm_engine.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import axislens
from axislens.collection.engines import EngineError, OpenAIBackend
from axislens.collection.responses import generate_responses
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig
from axislens.store import ActivationStore


class _Stub:
    """Serves /v1/models, /tokenize and /v1/completions; behaviour set per test."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokenize = "ok"  # "ok" | "wrong" | "missing"
        self.prompt_shift = 0  # added to usage.prompt_tokens
        self.fail: dict[int, int] = {}  # prompt length -> remaining 503s
        self.always_500: set[int] = set()  # prompt lengths that always fail
        self.in_flight = self.max_in_flight = self.requests = 0
        self.seeds: list[int] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [_model("stub")]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    if stub.tokenize == "missing":
                        return self._send(404, {"detail": "Not Found"})
                    ids = stub.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
                    if stub.tokenize == "wrong":
                        ids = [*ids[:3], ids[3] + 1, *ids[4:]]
                    return self._send(200, {"tokens": ids, "count": len(ids)})
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                prompt = body["prompt"]
                n = (
                    len(prompt)
                    if isinstance(prompt, list)
                    else len(stub.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                )
                with stub.lock:
                    stub.requests += 1
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub.seeds.append(body.get("seed"))
                    transient = stub.fail.get(n, 0) > 0
                    if transient:
                        stub.fail[n] -= 1
                try:
                    time.sleep(0.02)
                    if transient:
                        return self._send(503, {"error": {"message": "busy"}})
                    if n in stub.always_500:
                        return self._send(500, {"error": {"message": "engine exploded"}})
                    text = f" reply to {n} tokens, seed {body.get('seed')} "
                    self._send(
                        200,
                        {
                            "id": "c",
                            "object": "text_completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "text": text,
                                    "finish_reason": "stop",
                                    "logprobs": None,
                                }
                            ],
                            "usage": {
                                "prompt_tokens": n + stub.prompt_shift,
                                "completion_tokens": 5,
                                "total_tokens": n + 5,
                            },
                        },
                    )
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _model(name):
    return {"id": name, "object": "model", "created": 0, "owned_by": "stub", "max_model_len": 99}


@pytest.fixture
def stub(tiny_llama):
    s = _Stub(tiny_llama.tokenizer)
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture(scope="module")
def personas():
    return axislens.load_personas()


def _backend(stub, **kw):
    kw.setdefault("max_retries", 0)
    return OpenAIBackend(stub.url, "stub", **kw)


def test_check_reports_context_and_stop_tokens(stub, tiny_llama):
    info = _backend(stub).check(tiny_llama)
    assert info.max_model_len == 99 and info.tokenizer_check == "tokenize endpoint"
    assert info.name == f"openai:stub@{stub.url}" and info.stop_token_ids


def test_tokenizer_mismatch_is_one_error_before_any_generation(stub, tiny_llama):
    stub.tokenize = "wrong"
    with pytest.raises(EngineError, match=r"tokenizes differently .* first difference at token 3"):
        _backend(stub).check(tiny_llama)
    assert stub.requests == 0


def test_servers_without_tokenize_are_checked_on_the_prompt_token_count(stub, tiny_llama):
    stub.tokenize = "missing"
    assert _backend(stub).check(tiny_llama).tokenizer_check == "prompt token count"
    stub.prompt_shift = 5
    with pytest.raises(EngineError, match="tokenizes differently"):
        _backend(stub).check(tiny_llama)


def test_wrong_model_and_unreachable_engine(stub, tiny_llama):
    with pytest.raises(EngineError, match=r"serves 'stub', not 'other' \(--engine-model\)"):
        OpenAIBackend(stub.url, "other").check(tiny_llama)
    with pytest.raises(EngineError, match="is unreachable"):
        OpenAIBackend("http://127.0.0.1:9/v1", "stub").check(tiny_llama)


def test_bounded_concurrency_seeds_and_client_retries(stub, tiny_llama):
    convs = [
        format_conversation(tiny_llama, [{"role": "user", "content": "hi " * (i + 1)}])
        for i in range(24)
    ]
    stub.fail = {len(convs[0]): 2}  # two 503s, then fine: the client's own retries absorb them
    backend = _backend(stub, concurrency=4, max_retries=3, tokenizer=tiny_llama)
    keys = [f"k{i}" for i in range(24)]
    texts = backend.generate(convs, SamplingConfig(max_new_tokens=5, seed=7), keys)
    assert texts == [
        f"reply to {len(c)} tokens, seed {s}" for c, s in zip(convs, _seeds(keys, 7), strict=True)
    ]
    assert stub.max_in_flight <= 4 and stub.requests == 24 + 2


def _seeds(keys, seed):
    from axislens.model.decoding import item_seed

    return [item_seed(seed, k) for k in keys]


def test_conditioning_on_other_tokens_fails_the_item(stub, tiny_llama):
    stub.prompt_shift = 1
    stub.tokenize = "ok"
    conv = format_conversation(tiny_llama, [{"role": "user", "content": "hi"}])
    backend = _backend(stub)
    info = backend.check(tiny_llama)
    (c,) = backend.stream([("a", conv)], SamplingConfig(max_new_tokens=4), info)
    assert not c.ok and c.text is None and "conditioned on" in c.error


def test_failed_items_are_left_for_resume_never_stored_empty(stub, tiny_llama, personas, tmp_path):
    kw = dict(roles=["ghost"], n_prompts=2, n_questions=3, max_new_tokens=5, progress=False)
    items = axislens.persona_items(personas, roles=["ghost"], n_prompts=2, n_questions=3)
    first = format_conversation(tiny_llama, list(items[0].messages), add_generation_prompt=True)
    stub.always_500 = {len(first)}
    store = ActivationStore.create(tmp_path / "s", {"model": {"model_id": "tiny"}})
    backend = _backend(stub, chunk_size=2)
    with pytest.raises(EngineError, match=r"failed and are left for resume .* HTTP 500: engine"):
        generate_responses(tiny_llama, personas, store, backend=backend, **kw)
    recs = ActivationStore.open(tmp_path / "s").records()
    assert items[0].id not in recs and len(recs) >= 1
    assert all(
        r.messages[-1]["role"] == "assistant" and r.messages[-1]["content"] for r in recs.values()
    )
    stub.always_500 = set()
    done = generate_responses(tiny_llama, personas, store, backend=backend, **kw)
    assert {i.id for i in items} <= {r.id for r in done}
    assert all(r.messages[-1]["content"].startswith("reply to") for r in done)


def test_persistent_failures_stop_the_run(stub, tiny_llama):
    convs = [format_conversation(tiny_llama, [{"role": "user", "content": "x " * 9}])] * 12
    stub.always_500 = {len(convs[0])}
    backend = _backend(stub, concurrency=2, max_consecutive_failures=3)
    info = backend.check(tiny_llama)
    seen = []
    with pytest.raises(EngineError, match=r"stopped the run after \d failed"):
        for c in backend.stream(
            ((f"k{i}", c) for i, c in enumerate(convs)), SamplingConfig(), info
        ):
            seen.append(c)
    assert len(seen) < 12 and stub.requests < 12
