"""Dynamic batching and cancellation in the server, observed through a recording wrapper around
``decode_steps`` (the scheduler's only way to generate), against a real server on loopback."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import openai
import pytest
import torch

import axislens.serving.scheduler as scheduler_module
from axislens.directions import Direction
from axislens.interventions.attach import Intervention
from axislens.interventions.operations import Add
from axislens.serving.engine import ServeLimits, background_server, create_app

REAL = scheduler_module.decode_steps
LIMITS = ServeLimits(max_tokens=64, default_max_tokens=8, batch_wait_s=0.0)


def _messages(k: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question number {k}: who are you?"}]


class Recorder:
    """Stands in for ``decode_steps``: records every batch (prompts, steps, drops) and can slow
    every step down so that a client can hang up mid-generation."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[dict] = []

    def __call__(self, model, prompts, sampling, **kw):
        rec = {"prompts": [p.tolist() for p in prompts], "steps": [], "drops": []}
        self.batches.append(rec)
        return _Recorded(REAL(model, prompts, sampling, **kw), rec, self.delay)

    def steps_of(self, text: str, tokenizer) -> list[int]:
        """Number of steps each batch decoded the prompt containing ``text`` in."""
        out = []
        for rec in self.batches:
            for k, p in enumerate(rec["prompts"]):
                if text in tokenizer.decode(p):
                    out.append(sum(k in rows for rows in rec["steps"]))
        return out


class _Recorded:
    def __init__(self, decoder, rec, delay):
        self.decoder, self.rec, self.delay = decoder, rec, delay

    def __iter__(self):
        for step in self.decoder:
            self.rec["steps"].append(step.rows)
            time.sleep(self.delay)
            yield step

    def drop(self, rows):
        rows = list(rows)
        self.rec["drops"].append(rows)
        self.decoder.drop(rows)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)


def _concurrently(fns) -> list:
    out: list = [None] * len(fns)

    def run(i):
        out[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_requests_share_batches_and_equal_solo_replies(tiny_llama, monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(scheduler_module, "decode_steps", rec)
    g = torch.Generator().manual_seed(3)
    axis = Direction(torch.randn(4, 64, generator=g), method="random")
    iv = Intervention(Add(-4.0), axis, layers=[1])
    limits = dataclasses.replace(LIMITS, batch_wait_s=0.3)
    app = create_app(tiny_llama, interventions=[iv], axis=axis, name="tiny", limits=limits)
    cases = [
        (k, on, temp) for k in range(3) for on in (True, False) for temp in (0.0, 0.8)
    ]  # 12 requests: 4 groups (intervention x temperature) of 3

    def ask(client, k, on, temp):
        extra = {} if on else {"extra_body": {"axislens": {"intervene": False}}}
        r = client.chat.completions.create(
            model="tiny",
            messages=_messages(k),
            max_tokens=5 + k,
            temperature=temp,
            seed=100 + k,
            **extra,
        )
        return r.choices[0].message.content, r.model_extra["axislens"], r.usage.completion_tokens

    with background_server(app) as url:
        client = _client(url)
        solo = [ask(client, *c) for c in cases]
        assert all(len(rec_["prompts"]) == 1 for rec_ in rec.batches)
        rec.batches.clear()
        together = _concurrently([lambda c=c: ask(_client(url), *c) for c in cases])
    assert together == solo  # greedy and seeded sampling: the batch does not change a reply
    assert all(0 < n <= 5 + c[0] for (_, _, n), c in zip(solo, cases, strict=True))
    sizes = sorted(len(b["prompts"]) for b in rec.batches)
    assert sum(sizes) == len(cases) and max(sizes) == 3 and len(sizes) <= 6, sizes


def test_a_non_streaming_client_that_hangs_up_stops_costing_compute(tiny_llama, monkeypatch):
    rec = Recorder(delay=0.05)
    monkeypatch.setattr(scheduler_module, "decode_steps", rec)
    limits = dataclasses.replace(LIMITS, batch_wait_s=0.3)
    with background_server(create_app(tiny_llama, name="tiny", limits=limits)) as url:
        body = {"model": "tiny", "messages": _messages(7), "max_tokens": 60, "temperature": 0}

        def hang_up():
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url + "/chat/completions", json=body, timeout=0.8)

        def stay():
            return _client(url).chat.completions.create(
                model="tiny", messages=_messages(1), max_tokens=25, temperature=0
            )

        _, kept = _concurrently([hang_up, stay])
    (batch,) = rec.batches  # both in one batch; the one that hung up was dropped from it
    gone = next(
        k for k, p in enumerate(batch["prompts"]) if "number 7" in tiny_llama.tokenizer.decode(p)
    )
    assert [gone] in batch["drops"]
    (steps,) = rec.steps_of("Question number 7", tiny_llama.tokenizer)
    assert 3 <= steps <= 20, steps  # ~0.5 s of 0.05 s steps, not 60
    assert kept.usage.completion_tokens == 25 or kept.choices[0].finish_reason == "stop"


def test_a_request_cancelled_while_queued_is_never_prefilled(tiny_llama, monkeypatch):
    rec = Recorder(delay=0.05)
    monkeypatch.setattr(scheduler_module, "decode_steps", rec)
    with background_server(create_app(tiny_llama, name="tiny", limits=LIMITS)) as url:
        first = {"model": "tiny", "messages": _messages(1), "max_tokens": 30, "temperature": 0}
        with httpx.stream("POST", url + "/chat/completions", json={**first, "stream": True}) as s:
            lines = s.iter_lines()
            next(lines)  # the worker is busy with this stream now
            queued = {**first, "messages": _messages(9)}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url + "/chat/completions", json=queued, timeout=0.3)
            events = [line for line in lines if line]
        assert events[-1] == "data: [DONE]"
        time.sleep(0.2)
    assert rec.steps_of("Question number 9", tiny_llama.tokenizer) == []  # never decoded
    assert len(rec.batches) == 1


def test_a_stream_whose_client_hangs_up_stops_within_a_step(tiny_llama, monkeypatch):
    rec = Recorder(delay=0.05)
    monkeypatch.setattr(scheduler_module, "decode_steps", rec)
    g = torch.Generator().manual_seed(4)
    axis = Direction(torch.randn(4, 64, generator=g), method="random")
    app = create_app(tiny_llama, axis=axis, name="tiny", limits=LIMITS)
    engine = app.state.engine
    projected: list[str] = []
    real_project = engine._project

    def counting(messages, reply):
        projected.append(messages[-1]["content"])
        return real_project(messages, reply)

    monkeypatch.setattr(engine, "_project", counting)
    with background_server(app) as url:
        body = {"model": "tiny", "messages": _messages(5), "max_tokens": 60, "stream": True}
        with httpx.stream("POST", url + "/chat/completions", json=body) as resp:
            lines = resp.iter_lines()
            next(lines)
            next(lines)  # a content chunk or two, then hang up
        time.sleep(0.5)
        r = _client(url).chat.completions.create(
            model="tiny", messages=_messages(2), max_tokens=2, temperature=0
        )
        assert r.model_extra["axislens"]["turns"]
    (steps,) = rec.steps_of("Question number 5", tiny_llama.tokenizer)
    assert steps <= 15, steps
    assert projected == [_messages(2)[0]["content"]]  # no projection pass for the cancelled one
