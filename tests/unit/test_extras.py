"""Lean installs: a missing extra is one line naming the pip command; base models fail chat at
once; the first conversion of an embedded model announces itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from axislens.cli import main
from axislens.directions import Direction
from axislens.extras import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[2]


def _missing(monkeypatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # `import m` now raises ImportError


def test_extras_in_pyproject_match_the_table():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        names = {d.split(">")[0].split("=")[0].split("<")[0] for d in extras[extra]}
        assert names == set(modules), extra
        assert not any(d.startswith(modules) for d in meta["dependencies"]), extra
    assert "axislens[serve,judge,embedded]" in extras["dev"]
    assert any(d.startswith("playwright") for d in extras["dev"])
    assert any(d.startswith("pandas") for d in meta["dependencies"])


@pytest.mark.parametrize(("module", "extra"), [(m, e) for e, ms in EXTRAS.items() for m in ms])
def test_require_names_the_pip_command(monkeypatch, module, extra):
    _missing(monkeypatch, module)
    with pytest.raises(MissingExtra) as err:
        require(module, extra, "this feature")
    text = str(err.value)
    assert "\n" not in text and f"pip install 'axislens[{extra}]'" in text
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)


def test_openai_judge_without_openai(monkeypatch):
    from axislens.collection.judges import OpenAIJudge

    _missing(monkeypatch, "openai")
    with pytest.raises(MissingExtra, match=r"pip install 'axislens\[judge\]'"):
        OpenAIJudge("gpt-x", base_url="http://127.0.0.1:1/v1")


def test_server_without_fastapi(monkeypatch, tiny_llama):
    from axislens.serving.engine import create_app

    _missing(monkeypatch, "fastapi")
    with pytest.raises(MissingExtra, match=r"pip install 'axislens\[serve\]'"):
        create_app(tiny_llama, name="tiny")


def test_gguf_export_without_gguf(monkeypatch, tmp_path):
    _missing(monkeypatch, "gguf")
    axis = Direction(torch.ones(3, 4), method="mean_diff")
    with pytest.raises(MissingExtra, match=r"pip install 'axislens\[embedded\]'"):
        axis.to_gguf(tmp_path / "a.gguf")


def test_collect_engine_without_openai_is_one_line(monkeypatch, capsys, tmp_path):
    _missing(monkeypatch, "openai")
    rc = main(
        [
            "collect",
            "--model",
            "smollm2-135m-instruct",
            "--out",
            str(tmp_path / "x"),
            "--roles",
            "1",
            "--prompts",
            "1",
            "--questions",
            "1",
            "--engine-url",
            "http://127.0.0.1:1/v1",
            "--engine-model",
            "m",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "pip install 'axislens[judge]'" in err


def test_chat_on_a_base_model_fails_at_once(monkeypatch, capsys, tmp_path):
    import axislens.model.loading as loading

    monkeypatch.setattr(loading, "_prepare", lambda *a, **k: pytest.fail("no conversion"))
    assert main(["chat", "--model", "gemma-3-270m", "hi"]) == 2
    assert "base model" in capsys.readouterr().err
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    assert main(["chat", "--model", str(folder), "hi"]) == 2
    assert "no chat template" in capsys.readouterr().err


def test_first_conversion_announces_itself(monkeypatch, tmp_path, capsys):
    from axislens.model.loading import prepare_tokenizer

    monkeypatch.setenv("AXISLENS_CACHE", str(tmp_path))
    path = prepare_tokenizer("smollm2-135m-instruct")
    err = capsys.readouterr().err
    assert "first use of the embedded model 'smollm2-135m-instruct'" in err
    assert "converting smollm2-135m-instruct" in err and "2/2" in err  # the progress bar
    assert path.is_relative_to(tmp_path)
    prepare_tokenizer("smollm2-135m-instruct")  # cached: silent
    assert "first use" not in capsys.readouterr().err
