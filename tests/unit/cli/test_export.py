"""``axislens export --vllm``: the file equals to_vllm's for the same cap or steer, no model loads,
and bad combinations are one-line errors."""

from __future__ import annotations

import pytest
import torch

from axislens.cli.app import main
from axislens.directions import CapConfig, Direction
from axislens.interventions.attach import Intervention, cap_intervention
from axislens.interventions.operations import Add, Response
from axislens.interventions.vllm_files import to_vllm


def _same_file(a, b) -> bool:
    """Same tensors (bit for bit) and metadata; safetensors orders the header freely."""
    from safetensors import safe_open

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        if fa.metadata() != fb.metadata() or set(fa.keys()) != set(fb.keys()):
            return False
        return all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())  # noqa: SIM118


def _axis(tmp_path):
    axis = Direction(
        torch.randn(8, 32, generator=torch.Generator().manual_seed(0)), method="mean_diff"
    )
    axis.save(tmp_path / "axis.safetensors")
    return axis


def test_a_cap_exports_as_to_vllm_writes_it(tmp_path, capsys):
    axis = _axis(tmp_path)
    cap = CapConfig(axis, layers=(3, 5), thresholds=(0.2, -0.1))
    cap.save(tmp_path / "cap.json")
    assert (
        main(
            [
                "export",
                "--vllm",
                str(tmp_path / "cli.safetensors"),
                "--cap",
                str(tmp_path / "cap.json"),
            ]
        )
        == 0
    )
    to_vllm(tmp_path / "py.safetensors", cap_intervention(CapConfig.load(tmp_path / "cap.json")))
    assert _same_file(tmp_path / "cli.safetensors", tmp_path / "py.safetensors")
    assert "cap at layers 3, 5, positions all" in capsys.readouterr().out


def test_a_steer_exports_with_its_rule(tmp_path):
    axis = _axis(tmp_path)
    argv = ["export", "--vllm", str(tmp_path / "cli.safetensors"), "--axis", str(tmp_path / "axis.safetensors"),
            "--layers", "2:4", "--coeff", "-1.5", "--positions", "response"]  # fmt: skip
    assert main(argv) == 0
    iv = Intervention(
        Add(-1.5), Direction.load(tmp_path / "axis.safetensors"), slice(2, 4), positions=Response()
    )
    to_vllm(tmp_path / "py.safetensors", iv)
    assert _same_file(tmp_path / "cli.safetensors", tmp_path / "py.safetensors")
    del axis


def test_bad_combinations_are_one_line_errors(tmp_path, capsys):
    _axis(tmp_path)
    out = str(tmp_path / "x.safetensors")
    axis = str(tmp_path / "axis.safetensors")
    cases = [
        (["--axis", axis, "--layers", "2"], "--axis needs --layers and --coeff"),
        (["--axis", axis, "--layers", "2", "--coeff", "1", "--positions", "last"], "vLLM runs all, prompt or response"),
        (["--cap", "cfg.pt"], "needs --n-layers"),
        (["--axis", axis, "--cap", "c.json"], "not allowed with argument"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(["export", "--vllm", out, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_cap_and_out_paths_fail_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """`cap --cap /nonexistent`, a garbage cap file and `axis --out` into an unwritable place are
    one-line errors naming the path, raised before the (slow) model load or computation."""
    from axislens.cli import app

    monkeypatch.setattr(app, "load_from_args", lambda args: pytest.fail("the model was loaded"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x89\xff\x00not a cap")
    cases = [
        (["cap", "--cap", str(tmp_path / "none.json"), "hi"], "no such CapConfig file"),
        (["cap", "--cap", str(tmp_path / "none.pt"), "--experiment", "0", "hi"], "no such capping config"),
        (["cap", "--cap", str(garbage), "hi"], f"{garbage}: not a JSON CapConfig"),
        (["serve", "--cap", str(tmp_path / "none.json")], "no such CapConfig file"),
        (["axis", "--store", str(tmp_path), "--out", "/proc/1/x"], "/proc/1/x: cannot write"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
