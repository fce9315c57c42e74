"""`axislens collect`: argument parsing and the run_collect pipeline on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from axislens.cli import main
from axislens.cli.app import build_parser
from axislens.cli.collect import parse_roles
from axislens.collection.activations import collect
from axislens.collection.judges import KeepAll, ModelJudge
from axislens.jobs import run_collect
from axislens.model.layers import parse_layers
from axislens.personas import DefaultPrompts, Personas, Question, Role, default_rubric
from axislens.store import ActivationStore


def _personas() -> Personas:
    def role(name: str, category: str) -> Role:
        prompts = tuple(f"You are a {name}. Variant {k}." for k in range(5))
        return Role(name, f"A {name}.", category, prompts, default_rubric(name, f"A {name}."))  # type: ignore[arg-type]

    return Personas(
        roles=(
            role("tutor", "assistant_like"),
            role("reviewer", "assistant_like"),
            role("ghost", "fantastical"),
        ),
        default=DefaultPrompts(
            ("", "You are an AI assistant.", "Be helpful.", "Hi.", "I am {model_name}.")
        ),
        questions=(
            Question("q1", "self", "Who are you?"),
            Question("q2", "self", "What do you want?"),
            Question("q3", "advice", "Any advice?"),
        ),
        traits=(),
        source="test",
    )


def test_parser_reads_every_flag() -> None:
    import axislens.cli.collect  # noqa: F401  (registers the command)

    args = build_parser().parse_args(
        [
            "collect",
            "--model",
            "tiny",
            "--out",
            "runs/x",
            "--roles",
            "20",
            "--prompts",
            "2",
            "--questions",
            "3",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "4",
            "--mode",
            "prefill",
            "--judge",
            "none",
            "--layers",
            "0,2,-1",
            "--seed",
            "7",
            "--hooks",
            "resid_post,mlp_out",
            "--quiet",
        ]
    )
    assert (args.model, args.out, args.roles, args.prompts, args.questions) == (
        "tiny",
        "runs/x",
        "20",
        2,
        3,
    )
    assert (args.max_new_tokens, args.batch_size, args.mode, args.judge, args.seed) == (
        16,
        4,
        "prefill",
        "none",
        7,
    )
    assert args.layers == (0, 2, -1) and args.hooks == "resid_post,mlp_out" and args.quiet
    defaults = build_parser().parse_args(["collect", "--model", "m", "--out", "o"])
    # sizes left unset are resolved per model (CPU-sized for an embedded model on a CPU)
    assert (defaults.prompts, defaults.questions, defaults.max_new_tokens) == (5, 240, None)
    assert defaults.batch_size is None and not defaults.yes
    assert (defaults.mode, defaults.judge, defaults.temperature, defaults.top_p) == (
        "response",
        "none",
        0.7,
        0.9,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "--model", "m", "--out", "o", "--judge", "gpt"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "--model", "m"])  # --out is required


def test_parse_roles_and_layers() -> None:
    assert parse_roles("20") == 20 and parse_roles(None) is None and parse_roles("all") is None
    assert parse_roles("ghost, pirate") == ["ghost", "pirate"]
    assert parse_layers("0,7,-1") == (0, 7, -1) and parse_layers("all") == slice(None)
    assert parse_layers("10:20") == slice(10, 20) and parse_layers(":5") == slice(None, 5)
    with pytest.raises(ValueError, match="cannot parse"):
        parse_layers("a,b")


def test_cli_reports_bad_input_in_one_line_before_loading_a_model(tmp_path, capsys) -> None:
    import axislens.cli.collect  # noqa: F401

    code = main(
        ["collect", "--model", "no-such-model", "--out", str(tmp_path / "o"), "--layers", "x"]
    )
    assert code == 2 and "--layers" in capsys.readouterr().err
    code = main(
        [
            "collect",
            "--model",
            "no-such-model",
            "--out",
            str(tmp_path / "o"),
            "--roles",
            "not_a_role_name",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not_a_role_name" in err and "no-such-model" not in err
    assert not (tmp_path / "o").exists()


def test_run_collect_response_mode_end_to_end_and_resumable(tiny_llama, tmp_path) -> None:
    personas = _personas()
    out = tmp_path / "run"
    kw = dict(
        personas=personas,
        roles=2,
        n_prompts=2,
        n_questions=2,
        max_new_tokens=4,
        batch_size=4,
        layers=[0, -1],
        seed=3,
        progress=False,
    )
    s1 = run_collect(tiny_llama, out, judge=KeepAll(), **kw)  # type: ignore[arg-type]
    # roles=2 -> the first 2 of the spread order (categories interleaved): tutor, ghost.
    store = ActivationStore.open(out)
    roles = {r.role for r in store.query(kind="role", collected=False)}
    assert roles == {"tutor", "ghost"}
    n_items = (2 + 1) * 2 * 2  # (2 roles + default) x 2 prompts x 2 questions
    assert (
        s1.items == n_items and s1.generated == n_items and 0 < s1.generated_tokens <= n_items * 4
    )
    assert s1.collect.collected + s1.collect.skipped == n_items and s1.collect.tokens > 0
    assert s1.judge is not None and s1.judge.stored == len(store.query(kind="role"))
    assert set(store.scores()) == {r.id for r in store.query(kind="role")}
    assert store.layers == (0, tiny_llama.cfg.n_layers - 1)
    man = store.manifest
    assert man["span"] == "response" and man["generation"]["seed"] == 3
    assert man["personas"]["sha256"] == personas.content_hash()
    text = str(s1)
    assert "items" in text and "tokens/s" in text and "keep_all" in text
    # The stored activations are exactly what collect() computes from the stored responses.
    recs = store.query(collected=True)
    ref_dir = tmp_path / "ref"
    collect(tiny_llama, recs, ref_dir, layers=[0, -1], batch_size=1, progress=False)
    torch.testing.assert_close(
        store.activations(ids=[r.id for r in recs]),
        ActivationStore.open(ref_dir).activations(ids=[r.id for r in recs]),
        rtol=1e-5,
        atol=1e-6,
    )
    # Resume: nothing regenerated, recollected or rejudged.
    before = store.activations(ids=[r.id for r in recs])
    s2 = run_collect(tiny_llama, out, judge=KeepAll(), **kw)  # type: ignore[arg-type]
    assert (s2.generated, s2.collect.collected, s2.judge.stored if s2.judge else -1) == (0, 0, 0)
    torch.testing.assert_close(
        ActivationStore.open(out).activations(ids=[r.id for r in recs]), before
    )
    # Same directory, different span policy: refused.
    with pytest.raises(ValueError, match="'span' differs"):
        run_collect(tiny_llama, out, mode="prefill", **kw)  # type: ignore[arg-type]


def test_run_collect_prefill_mode_and_model_judge(tiny_llama, tmp_path) -> None:
    personas = _personas()
    s = run_collect(
        tiny_llama,
        tmp_path / "p",
        personas=personas,
        roles=["ghost"],
        n_prompts=1,
        n_questions=3,
        mode="prefill",
        batch_size=8,
        progress=False,
    )
    store = ActivationStore.open(tmp_path / "p")
    assert s.items == s.collect.collected == 6 and s.generated == 0 and s.judge is None
    assert store.manifest["span"] == "prefill" and "generation" not in store.manifest
    assert all(r.messages[-1]["role"] == "user" for r in store.query())
    with pytest.raises(ValueError, match="prefill"):
        run_collect(tiny_llama, tmp_path / "q", personas=personas, mode="prefill", judge="model")
    # judge="model": the same model judges; every role response gets a stored (maybe None) score.
    s2 = run_collect(
        tiny_llama,
        tmp_path / "m",
        personas=personas,
        roles=["ghost"],
        n_prompts=1,
        n_questions=2,
        max_new_tokens=3,
        judge="model",
        include_default=False,
        progress=False,
    )
    store2 = ActivationStore.open(tmp_path / "m")
    answered = [r.id for r in store2.query(kind="role", collected=False) if r.response.strip()]
    assert s2.judge is not None and s2.judge.stored == len(answered)
    assert s2.judge.judge == ModelJudge(tiny_llama).name
    assert set(store2.scores()) == set(answered)


def test_a_second_writer_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """Another live process holds the store: `axislens collect` says so before loading anything."""
    import json
    import socket
    import subprocess

    from axislens.cli import app

    root = tmp_path / "s"
    ActivationStore.create(root, {"model": {"model_id": "x"}}).close()
    other = subprocess.Popen(["sleep", "60"])
    try:
        stat = Path(f"/proc/{other.pid}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]
        holder = {
            "pid": other.pid,
            "host": socket.gethostname(),
            "start": start,
            "mode": "exclusive",
        }
        (root / ".lock").write_text(json.dumps(holder))
        monkeypatch.setattr(app, "load_from_args", lambda args: pytest.fail("the model was loaded"))
        argv = ["collect", "--out", str(root), "--roles", "ghost", "--prompts", "1",
                "--questions", "1", "--yes", "--quiet"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"store in use by pid {other.pid}" in err and "Traceback" not in err
    finally:
        other.kill()
        other.wait()
