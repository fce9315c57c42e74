"""One CLI grammar: --model/--device/--dtype everywhere, one layer syntax, help for every
subcommand (without importing torch), --version, and one-line errors before any model loads."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
import torch

import axislens
from axislens.cli import main
from axislens.cli import monitor as cli_monitor
from axislens.cli.app import _COMMANDS, DEFAULT_MODEL, build_parser
from axislens.directions import CapConfig, Direction

SUBCOMMANDS = (
    "models",
    "chat",
    "demo",
    "collect",
    "axis",
    "steer",
    "cap",
    "monitor",
    "serve",
    "export",
    "store",
)


def _must_not_load(args):  # a bad argument is reported before any model loads
    raise AssertionError(f"the model was loaded for {args.command}")


@pytest.fixture
def no_load(monkeypatch):
    from axislens.cli import app, collect, monitor, serve, steer

    for mod in (app, collect, monitor, serve, steer):
        monkeypatch.setattr(mod, "load_from_args", _must_not_load)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no usage block, no traceback
    assert lines[0].startswith(f"axislens {argv[0]}: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- help and version


def test_every_subcommand_is_registered_and_has_help_and_example(capsys) -> None:
    build_parser()
    assert set(_COMMANDS) == set(SUBCOMMANDS)
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for name in SUBCOMMANDS:
        summary = _COMMANDS[name][2]
        assert summary.split(",")[0][:30] in " ".join(top.split())
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "example:" in out and f"axislens {name}" in out.split("example:")[1]
        assert summary.split()[1] in out  # the description is shown


def test_help_shows_defaults(capsys) -> None:
    assert main(["steer", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_MODEL})" in out
    assert "0 = greedy (default: 0.0)" in out and "(default: 0.9)" in out
    assert main(["serve", "--help"]) == 0
    assert "(default: 8000)" in capsys.readouterr().out


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"axislens {axislens.__version__}" == "axislens 0.2.0"


@pytest.mark.parametrize("argv", [["--help"], *[[n, "--help"] for n in SUBCOMMANDS]])
def test_help_does_not_import_torch(argv) -> None:
    code = (
        "import sys\n"
        "from axislens.cli import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_literals_written_out_for_help_match_the_library() -> None:
    from axislens.cli import collect
    from axislens.cli.app import _DEMO
    from axislens.collection.judges import JudgeChoice
    from axislens.jobs import CollectMode, DemoConfig
    from axislens.model.loading import DEFAULT_MODEL as LIB_DEFAULT

    assert DEFAULT_MODEL == LIB_DEFAULT == DemoConfig().model
    assert get_args(CollectMode) == collect._MODES and get_args(JudgeChoice) == collect._JUDGES
    d = DemoConfig()
    assert {k: getattr(d, k) for k in _DEMO} == _DEMO
    from axislens.jobs import PersonaData

    data = PersonaData()
    assert {k: getattr(data, k) for k in collect._PERSONA_DEFAULTS} == collect._PERSONA_DEFAULTS


# ----------------------------------------------------------------------------- one grammar


@pytest.mark.parametrize("name", ["chat", "demo", "collect", "steer", "cap", "monitor", "serve"])
def test_model_device_dtype_everywhere(name) -> None:
    parser = build_parser()
    required = {
        "chat": ["hi"],
        "collect": ["--out", "o"],
        "steer": ["--axis", "a", "--layers", "1", "--coeff", "1", "hi"],
        "cap": ["--cap", "c.json", "hi"],
        "monitor": ["--axis", "a"],
    }.get(name, [])
    args = parser.parse_args([name, *required])
    assert (args.model, args.device, args.dtype) == (DEFAULT_MODEL, "auto", "float32")
    args = parser.parse_args(
        [name, *required, "--model", "m", "--device", "cuda", "--dtype", "bfloat16"]
    )
    assert (args.model, args.device, args.dtype) == ("m", "cuda", "bfloat16")


def test_every_layer_flag_uses_the_one_syntax(tmp_path) -> None:
    parser = build_parser()
    a = parser.parse_args(["collect", "--out", "o", "--layers=-4:"])
    assert a.layers == slice(-4, None)
    a = parser.parse_args(["steer", "--axis", "a", "--layers", "12:16", "--coeff", "1", "hi"])
    assert a.layers == slice(12, 16)
    a = parser.parse_args(
        ["monitor", "--axis", "a", "--monitor-layers", "1,3", "--trigger-layer", "-1"]
    )
    assert a.monitor_layers == (1, 3) and a.trigger_layer == -1
    a = parser.parse_args(
        ["serve", "--steer", "s", "1", "--steer-layers", "all", "--monitor-layers", "2"]
    )
    assert a.steer_layers == slice(None) and a.monitor_layers == (2,)
    a = parser.parse_args(["axis", "--store", "s", "--out", str(tmp_path / "o"), "--layer", "-2"])
    assert a.layer == -2


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["collect", "--out", "o", "--layers", "x"], "--layers"),
        (["steer", "--axis", "a", "--layers", "1:2:0", "--coeff", "1", "hi"], "--layers"),
        (["monitor", "--axis", "a", "--monitor-layers", "1 3"], "--monitor-layers"),
        (["monitor", "--axis", "a", "--trigger-layer", "1,2"], "--trigger-layer"),
        (["serve", "--steer", "s", "1", "--steer-layers", "a:b"], "--steer-layers"),
        (["axis", "--store", "s", "--out", "o", "--layer", "3:5"], "--layer"),
        (["axis", "--store", "s", "--out", "o", "--cap-layers", "x"], "--cap-layers"),
    ],
)
def test_bad_layers_name_the_flag(capsys, no_load, argv, flag) -> None:
    line = _error(capsys, argv)
    assert f"{flag}" in line and ("cannot parse" in line or "one layer" in line)


def test_old_positional_model_still_works_with_a_note(capsys, no_load) -> None:
    args = build_parser().parse_args(["chat", "tiny", "hello"])
    assert (args.legacy_model, args.message) == ("tiny", "hello")
    args = build_parser().parse_args(["chat", "hello"])
    assert (args.legacy_model, args.message, args.model) == (None, "hello", DEFAULT_MODEL)
    # the note is printed and --model is set; this run then stops at the (patched) model load
    with pytest.raises(AssertionError, match="model was loaded for serve"):
        main(["serve", "tiny-folder"])
    assert "positional model is deprecated; use --model tiny-folder" in capsys.readouterr().err
    line = _error(capsys, ["monitor", "a", "--model", "b", "--axis", "x"])
    assert "the model is given twice" in line


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["chat", "--device", "bogus", "hi"], "--device"),
        (["chat", "--temperature", "-1", "hi"], "--temperature: must be >= 0"),
        (["chat", "--top-p", "0", "hi"], "--top-p: must be in (0, 1]"),
        (["chat", "--top-p", "1.5", "hi"], "--top-p: must be in (0, 1]"),
        (["chat", "--max-new-tokens", "0", "hi"], "--max-new-tokens: must be >= 1"),
        (["chat", "--max-new-tokens", "x", "hi"], "--max-new-tokens: expected a whole number"),
        (["serve", "--port", "70000"], "--port: must be in 0-65535"),
        (["serve", "--port", "-1"], "--port: must be in 0-65535"),
        (["serve", "--steer", "s.safetensors", "big"], "--steer: COEFF must be a number"),
        (["serve", "--steer-layers", "1:3"], "--steer-layers needs --steer"),
        (["serve", "--monitor-layers", "3"], "--monitor-layers needs an axis"),
        (["collect", "--out", "o", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["collect", "--out", "o", "--roles", "0"], "--roles"),
        (["collect", "--out", "o", "--prompts", "9"], "--prompts 9: the roles have only 5"),
        (["collect", "--out", "o", "--questions", "100000"], "--questions 100000"),
        (["collect", "--out", "o", "--hooks", "resid_bogus"], "--hooks"),
        (["collect", "--out", "o", "--roles", "no_such_role"], "no_such_role"),
        (["demo", "--roles", "0"], "--roles: must be >= 1"),
        (["demo", "--prompts", "9"], "--prompts 9: the roles have only 5"),
        (["demo", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["demo", "--default-prompts", "9"], "--default-prompts 9: the catalogue has 5"),
        (["demo", "--default-questions", "999"], "--default-questions 999: the catalogue has"),
        (
            ["demo", "--default-questions", "40"],
            "--design rotated: 48 roles x --questions 3 cannot cover --default-questions 40 "
            "equally; use --default-questions 24 or 36 or 48, or --roles 80",
        ),
        (["demo", "--design", "shared"], "--design shared: --default-questions (36) must equal"),
        (
            [
                "collect",
                "--out",
                "o",
                "--roles",
                "5",
                "--questions",
                "2",
                "--default-questions",
                "3",
                "--design",
                "rotated",
            ],
            "cannot cover --default-questions 3 equally",
        ),
        (["steer", "--axis", "a", "--layers", "1", "--coeff", "nan", "hi"], "--coeff"),
        (
            ["steer", "--axis", "missing.safetensors", "--layers", "1", "--coeff", "1", "hi"],
            "missing",
        ),
        (
            ["steer", "--axis", "a", "--layers", "1", "--coeff", "1", "--positions", "x", "hi"],
            "--positions",
        ),
        (["monitor", "--axis", "a", "--trigger-layer", "1"], "--trigger-layer needs --threshold"),
        (["axis", "--store", "s", "--out", "o", "--min-score", "7"], "--min-score"),
        (["axis", "--store", "s", "--out", "o", "--percentile", "25"], "--percentile"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_loading(capsys, no_load, argv, expected) -> None:
    assert expected in _error(capsys, argv)


def test_unavailable_cuda_device(capsys, no_load, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in _error(capsys, ["chat", "--device", "cuda:7", "hi"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "has 1 CUDA device" in _error(capsys, ["serve", "--device", "cuda:7"])


def test_output_paths_are_checked_up_front(capsys, no_load, tmp_path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for argv in (
        ["collect", "--out", str(a_file)],
        ["demo", "--out", str(a_file)],
        ["axis", "--store", "s", "--out", str(a_file)],
    ):
        assert f"--out: {a_file} is an existing file, not a folder" in _error(capsys, argv)
    line = _error(capsys, ["monitor", "--axis", "a", "--out", str(tmp_path)])
    assert "--out" in line and "is a folder" in line
    line = _error(capsys, ["monitor", "--axis", "a", "--out", str(tmp_path / "no" / "t.json")])
    assert "--out" in line and "does not exist" in line
    line = _error(capsys, ["monitor", "--axis", "a", "--out", str(a_file / "t.json")])
    assert "--out" in line and "does not exist" in line


def test_unknown_subcommand_and_flag_are_one_line(capsys) -> None:
    assert main(["bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("axislens: error:")
    assert "unrecognized arguments: --bogus" in _error(capsys, ["models", "--bogus"])


# ----------------------------------------------------------------------------- steer units


def _axis(n_layers: int = 4, d_model: int = 64) -> Direction:
    g = torch.Generator().manual_seed(3)
    return Direction(torch.randn(n_layers, d_model, generator=g) * 5, method="planted")


def test_steer_coeff_is_raw_units_or_named_norm_units(tiny_llama, tmp_path, capsys, monkeypatch):
    from axislens.cli import steer as cli_steer
    from axislens.interventions import attach

    seen = []
    real = attach.intervene

    def spy(model, *ivs, **kw):
        seen.append(ivs[0])
        return real(model, *ivs, **kw)

    monkeypatch.setattr(attach, "intervene", spy)
    monkeypatch.setattr(cli_steer, "load_from_args", lambda args: tiny_llama)
    path = _axis().save(tmp_path / "axis.safetensors")
    base = ["steer", "--axis", str(path), "--layers", "1:3", "--coeff=-2", "--max-new-tokens", "2"]
    assert main([*base, "hi"]) == 0
    assert "add -2 x axis at layers 1:3" in capsys.readouterr().out
    assert seen[-1].norm_units is None  # raw units: h + c * v, as steer(model, axis, c, layers)
    assert main([*base, "--norm-units", "hi"]) == 0
    assert "x residual norm along the axis" in capsys.readouterr().out
    norms = seen[-1].norm_units
    assert norms is not None and torch.isfinite(norms[1:3]).all() and (norms[1:3] > 0).all()


# ----------------------------------------------------------------------------- monitor


def test_monitor_replays_a_shipped_conversation_and_writes_out_after_every_turn(
    tiny_llama, tmp_path, capsys, monkeypatch
):
    from axislens.monitoring import builtin_conversation
    from axislens.monitoring.projection import DriftTrajectory

    monkeypatch.setattr(cli_monitor, "load_from_args", lambda args: tiny_llama)
    out = tmp_path / "drift.json"
    turns_on_disk: list[int] = []
    real_save = cli_monitor._save

    def save(session, script, path):
        real_save(session, script, path)
        turns_on_disk.append(len(DriftTrajectory.load(path).turns))
        assert not list(tmp_path.glob("*.tmp*"))  # atomic: no temp file left behind

    monkeypatch.setattr(cli_monitor, "_save", save)
    axis = _axis().save(tmp_path / "axis.safetensors")
    cap = CapConfig(_axis(), layers=(1, 2), thresholds=(0.0, 0.0)).save(tmp_path / "cap.json")
    rc = main(
        [
            "monitor",
            "--axis",
            str(axis),
            "--cap",
            str(cap),
            "--threshold",
            "-1000",
            "--monitor-layers",
            "1:3",
            "--trigger-layer",
            "2",
            "--script",
            "coding_control",
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    n = len(builtin_conversation("coding_control")["user_turns"])
    assert turns_on_disk == list(range(1, n + 1))
    traj = DriftTrajectory.load(out)
    assert traj.layers == (1, 2)
    assert traj.metadata["script"].endswith("coding_control.json")
    meta = builtin_conversation("coding_control")
    assert traj.metadata["script_metadata"]["domain"] == meta["domain"]


def test_monitor_trigger_layer_must_be_monitored(tiny_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_monitor, "load_from_args", lambda args: tiny_llama)
    axis = _axis().save(tmp_path / "axis.safetensors")
    cap = CapConfig(_axis(), layers=(1, 2), thresholds=(0.0, 0.0)).save(tmp_path / "cap.json")
    argv = ["monitor", "--axis", str(axis), "--cap", str(cap), "--threshold", "1"]
    line = _error(capsys, [*argv, "--monitor-layers", "1", "--trigger-layer", "3", "--script", "x"])
    assert "x: no such file, and no shipped conversation" in line
    line = _error(
        capsys,
        [*argv, "--monitor-layers", "1", "--trigger-layer", "3", "--script", "coding_control"],
    )
    assert "--trigger-layer 3 is not a monitored layer [1]" in line


def test_persona_flags_take_their_help_from_the_config_docs(capsys) -> None:
    """--help of the persona flags is PersonaData's field documentation, on both commands."""
    from axislens.cli.app import field_docs

    docs = field_docs("jobs/specs.py", "PersonaData")
    assert set(docs) >= {"n_prompts", "n_questions", "default_prompts", "default_questions"}
    for name in ("collect", "demo"):
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        for field in ("n_prompts", "default_questions"):
            assert " ".join(docs[field].split()[:4]) in " ".join(text.split()), (name, field)


def test_steer_reports_the_step_against_the_residual_norm_and_warns_when_large(
    tiny_llama, tmp_path, capsys, monkeypatch
):
    """`steer` prints |c v| / mean residual norm at each steered layer, computed independently
    here, and warns above half the norm."""
    from axislens.cli import steer as cli_steer
    from axislens.interventions.attach import residual_norms
    from axislens.model.chat import format_conversation

    monkeypatch.setattr(cli_steer, "load_from_args", lambda args: tiny_llama)
    axis = _axis()
    path = axis.save(tmp_path / "axis.safetensors")
    conv = format_conversation(
        tiny_llama, [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    norms = residual_norms(tiny_llama, [conv], [1, 2])
    base = ["steer", "--axis", str(path), "--layers", "1:3", "--max-new-tokens", "1"]
    small = 0.1 * float(norms[1]) / float(axis.vectors[1].norm())
    assert main([*base, f"--coeff={small}", "hi"]) == 0
    out = capsys.readouterr().out
    assert "L1 0.10" in out and "warning" not in out
    share2 = small * float(axis.vectors[2].norm()) / float(norms[2])
    assert f"L2 {share2:.2f}" in out
    assert main([*base, "--norm-units", "--coeff=-0.8", "hi"]) == 0
    out = capsys.readouterr().out
    assert "L1 0.80, L2 0.80" in out and "warning: the step is 0.80 of the residual norm" in out


def test_device_auto_is_cuda_then_mps_then_cpu(monkeypatch) -> None:
    import torch

    from axislens.model.loading import auto_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert auto_device() == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert auto_device() == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device() == "cuda"
