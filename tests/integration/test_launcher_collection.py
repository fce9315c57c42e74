"""Data-parallel collection under a real launcher (``torchrun``): 2 CPU processes write the same
store, vector for vector, as 1 process; a rank killed with SIGKILL, then a 1-process resume,
completes it identically."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from axislens.store import ActivationStore

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    import axislens
    import axislens.collection.activations as acts

    model_name, out, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if delay:  # slow every chunk down so that a test can kill a rank mid-run
        real = acts.span_means
        def slow(*a, **k):
            time.sleep(delay)
            return real(*a, **k)
        acts.span_means = slow
    roles = ["ghost", "pirate", "tutor", "oracle", "reviewer"]
    convs = [
        [
            {"role": "system", "content": f"You are a {roles[i % 5]}."},
            {"role": "user", "content": f"Question {i}: who are you, and why?"},
            {"role": "assistant", "content": f"I am a {roles[i % 5]}. " * (1 + i % 4)},
        ]
        for i in range(n)
    ]
    model = axislens.load_model(model_name)
    summary = axislens.collect(model, convs, out, batch_size=2, layers=[0, 1, -1], progress=False)
    print(summary, flush=True)
    """
)


def _torchrun(n_proc: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={n_proc}",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd: list[str], timeout: float = 600) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def _vectors(path: Path) -> dict[str, torch.Tensor]:
    store = ActivationStore.open(path)
    ids = sorted(store.collected_ids())
    return dict(zip(ids, store.activations("resid_post", ids=ids), strict=True))


def _same(a: Path, b: Path) -> None:
    va, vb = _vectors(a), _vectors(b)
    assert va.keys() == vb.keys() and va
    for k in va:
        torch.testing.assert_close(va[k], vb[k], rtol=0, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    import axislens

    tiny = axislens.tiny_model("llama", n_layers=4, d_model=64, seed=0)
    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny.original_model.config).eval()
    hf.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "collect_job.py"
    path.write_text(SCRIPT)
    return path


def test_two_torchrun_ranks_equal_one_process_tiny_folder(tiny_folder, script, tmp_path) -> None:
    _run([sys.executable, str(script), str(tiny_folder), str(tmp_path / "one"), "13", "0"])
    out = _run([*_torchrun(2), str(script), str(tiny_folder), str(tmp_path / "two"), "13", "0"])
    assert "rank 0/2" in out and "rank 1/2" in out
    _same(tmp_path / "one", tmp_path / "two")
    # both ranks wrote shards of their own, and nobody holds the store any more
    assert len(list((tmp_path / "two" / "acts").glob("*.safetensors"))) == 7
    assert not list((tmp_path / "two" / ".writers").glob("*.json"))


def test_two_torchrun_ranks_equal_one_process_embedded(script, tmp_path) -> None:
    name = "smollm2-135m-instruct"
    _run([sys.executable, str(script), name, str(tmp_path / "one"), "5", "0"])
    _run([*_torchrun(2), str(script), name, str(tmp_path / "two"), "5", "0"])
    _same(tmp_path / "one", tmp_path / "two")


def test_kill_9_of_one_rank_then_one_process_resume(tiny_folder, script, tmp_path) -> None:
    _run([sys.executable, str(script), str(tiny_folder), str(tmp_path / "ref"), "16", "0"])
    job = subprocess.Popen(
        [*_torchrun(2), str(script), str(tiny_folder), str(tmp_path / "s"), "16", "0.5"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        writers = tmp_path / "s" / ".writers"
        acts = tmp_path / "s" / "acts"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if acts.is_dir() and len(list(acts.glob("*.safetensors"))) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the job wrote no shards")
        holders = sorted(writers.glob("*.json"))
        assert len(holders) == 2  # both ranks hold the store as shared writers
        victim = int(holders[0].stem.rsplit("-", 1)[1])
        os.kill(victim, signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    done = ActivationStore.open(tmp_path / "s").collected_ids()
    assert 0 < len(done) < 16
    out = _run([sys.executable, str(script), str(tiny_folder), str(tmp_path / "s"), "16", "0"])
    assert f"{len(done)} already in store" in out
    _same(tmp_path / "ref", tmp_path / "s")
    shutil.rmtree(tmp_path / "s")


def _cli(folder: Path, out: Path) -> list[str]:
    return [
        "collect", "--model", str(folder), "--out", str(out), "--roles", "3", "--prompts", "1",
        "--questions", "2", "--max-new-tokens", "6", "--batch-size", "2",
        "--layers", "0,-1", "--quiet",
    ]  # fmt: skip


def test_axislens_collect_cli_under_accelerate_launch(tiny_folder, tmp_path) -> None:
    """Generation (roles dealt out), collection (chunks dealt out), one store. On a CPU-only
    machine ``--multi_gpu`` makes accelerate start the processes through torchrun (its ``--cpu``
    starts one process; multi-CPU otherwise needs mpirun); the ranks then run on the CPU."""
    exe = str(Path(sys.executable).with_name("axislens"))
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    _run([exe, *_cli(tiny_folder, tmp_path / "one")])
    out = _run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", exe,
         *_cli(tiny_folder, tmp_path / "two")]
    )  # fmt: skip
    assert "rank 0/2" in out and "rank 1/2" in out
    one, two = ActivationStore.open(tmp_path / "one"), ActivationStore.open(tmp_path / "two")
    assert {k: r.messages for k, r in one.records().items()} == {
        k: r.messages for k, r in two.records().items()
    }
    assert len(one.records()) == (3 + 1) * 2 and len(one.collected_ids()) >= 4
    _same(tmp_path / "one", tmp_path / "two")
