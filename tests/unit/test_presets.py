"""The known-model table: public target layers and cap windows; depth rule only as a fallback."""

from __future__ import annotations

import pytest

from axislens.presets import (
    KNOWN_MODELS,
    cap_window,
    default_cap_layers,
    depth_cap_layers,
    job_layers,
    known_model,
    model_short_name,
    target_layer,
)


def test_public_windows_and_targets():
    assert cap_window("Qwen/Qwen3-32B", 64)[0] == tuple(range(46, 54))  # layers_46:54
    assert cap_window("meta-llama/Llama-3.3-70B-Instruct", 80)[0] == tuple(range(56, 72))
    assert target_layer("google/gemma-2-27b-it", 46)[0] == 22
    assert target_layer("Qwen/Qwen3-32B", 64)[0] == 32
    assert target_layer("meta-llama/Llama-3.3-70B-Instruct", 80)[0] == 40
    layers, src = cap_window("google/gemma-2-27b-it", 46)
    assert src.startswith("fallback") and "no public cap window" in src
    assert layers == depth_cap_layers(46)


def test_embedded_models_are_tabled_and_unknowns_fall_back():
    for name, n in (
        ("smollm2-135m-instruct", 30),
        ("qwen2.5-coder-0.5b-instruct", 24),
        ("gemma-3-270m", 18),
    ):
        m = known_model(name)
        assert m is not None and m.n_layers == n and m.target_layer == n // 2
        assert cap_window(name, n)[0] == depth_cap_layers(n)
    assert target_layer("someone/unknown-7b", 32) == (16, "fallback: n_layers // 2")
    assert cap_window("someone/unknown-7b", 32)[1].startswith("fallback: depth rule")
    assert all(0 <= la < m.n_layers for m in KNOWN_MODELS for la in m.cap_layers)
    with pytest.raises(ValueError, match="has 64 layers in the known-model table"):
        cap_window("Qwen/Qwen3-32B", 4)
    assert model_short_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2"


def test_default_cap_layers_uses_the_table_and_warns_on_fallback():
    assert default_cap_layers(list(range(64)), 64, "Qwen/Qwen3-32B") == list(range(46, 54))
    assert default_cap_layers(list(range(80)), 80, "meta-llama/Llama-3.3-70B-Instruct") == list(
        range(56, 72)
    )
    with pytest.warns(UserWarning, match="depth-rule fallback"):
        got = default_cap_layers(list(range(0, 64, 2)), 64, "Qwen/Qwen3-32B")  # window not stored
    assert got == [46, 48, 50, 52, 54]
    with pytest.warns(UserWarning, match="model not in the known-model table"):
        assert default_cap_layers(list(range(10)), 10, "x/y") == [7, 8]
    mid, caps, measure, note = job_layers(46, "google/gemma-2-27b-it")
    assert mid == 22 and caps == list(depth_cap_layers(46)) and measure == caps[-1]
    assert "fallback" in note and "MODEL_CONFIGS" in note
    assert job_layers(4, "Qwen/Qwen3-32B")[0] == 2  # a tabled name at another depth: fallback
