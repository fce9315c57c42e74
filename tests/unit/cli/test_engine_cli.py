"""Engine flags of `axislens collect` / `axislens demo`: bad input is one line, before any load."""

from __future__ import annotations

import socket

import pytest

from axislens.cli import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["collect", "demo"])
def test_unreachable_engine_is_one_line_before_loading_the_model(command, tmp_path, capsys):
    import axislens.cli.collect  # noqa: F401  (registers the command)

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    argv = [command, "--model", "no-such-model", "--out", str(tmp_path / "o")]
    code = main([*argv, "--engine-url", url, "--engine-model", "m"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"engine at {url} is unreachable" in err and "no-such-model" not in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "openai"], "--engine openai needs --engine-url"),
        (["--engine-url", "http://127.0.0.1:1/v1"], "--engine-url needs --engine-model"),
        (["--engine", "bridge", "--engine-model", "m"], "need --engine openai"),
        (["--engine-url", "localhost:8000"], "expected a URL such as http://"),
        (["--judge-model", "m"], "need --judge openai"),
        (["--judge", "openai", "--judge-rpm", "0", "--judge-model", "m"], "must be > 0"),
    ],
)
def test_engine_and_judge_flags_are_checked(flags, message, tmp_path, capsys):
    import axislens.cli.collect  # noqa: F401

    code = main(["collect", "--model", "no-such-model", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_secrets_in_urls_never_reach_errors_names_or_manifests(tmp_path, capsys):
    """`http://user:SECRET@host` and `?api_key=SECRET` in --engine-url / --judge-url: masked in
    the error, the backend's and judge's names (what manifests and score rows record)."""
    from axislens.collection.engines import OpenAIBackend
    from axislens.collection.judges import OpenAIJudge

    port = _closed_port()
    url = f"http://alice:SECRET1@127.0.0.1:{port}/v1?api_key=SECRET2"
    argv = ["collect", "--model", "no-such-model", "--out", str(tmp_path / "o")]
    assert main([*argv, "--engine-url", url, "--engine-model", "m"]) == 2
    err = capsys.readouterr().err
    assert "SECRET" not in err and f"alice:***@127.0.0.1:{port}" in err and "api_key=***" in err
    assert main([*argv, "--engine-url", "ftp://bob:SECRET3@x"]) == 2
    assert "SECRET" not in capsys.readouterr().err
    assert "SECRET" not in OpenAIBackend(url, "m", intervention="cap").name
    judge = OpenAIJudge("m", base_url=f"http://carol:SECRET4@127.0.0.1:{port}/v1", api_key="k")
    assert "SECRET" not in judge.name and "carol:***@" in judge.name
