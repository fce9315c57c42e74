"""Regression pins against 0.1: exact greedy outputs of the embedded model.

The expected values below were *observed* by running the 0.1 decode loops (``_generate_batch``,
``ChatSession._generate`` and the sweep's own prefix KV cache) before they were replaced by the
one decode-step iterator (:func:`axislens.model.decoding.decode_steps`). Greedy decoding is
deterministic, so the new loop must reproduce them token for token; the sweep's numbers must
agree to float rounding.
"""

from __future__ import annotations

import pytest
import torch

import axislens
from axislens.directions import CapConfig, Direction
from axislens.evals.sweeps import layer_sweep
from axislens.model.decoding import SamplingConfig, generate_text
from axislens.monitoring.session import chat_session

pytestmark = pytest.mark.slow


def _axis(model) -> Direction:
    g = torch.Generator().manual_seed(7)
    return Direction(
        torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g), method="planted"
    )


def _user(model, text: str):
    return axislens.format_conversation(
        model, [{"role": "user", "content": text}], add_generation_prompt=True
    )


def test_generate_text_greedy_pin(smol):
    prompts = ["What is the capital of France?", "Write a haiku about the sea.", "Hi"]
    out = generate_text(
        smol,
        [_user(smol, p) for p in prompts],
        SamplingConfig(max_new_tokens=20, temperature=0.0),
        batch_size=2,  # one padded batch of two, one batch of one
    )
    assert out == [
        "The capital of France is Paris.",
        "The waves of the sea, a silent beauty,\nA gentle lapping of the shore,",
        "Hello! How can I assist you today?",
    ]


def test_chat_session_conditional_cap_pin(smol):
    axis = _axis(smol)
    cap = CapConfig(axis, layers=(10, 15), thresholds=(10.0, 5.0))
    sampling = SamplingConfig(max_new_tokens=16, temperature=0.0)
    s = chat_session(
        smol,
        axis=axis,
        cap=cap,
        monitor_layers=[10, 15],
        drift_threshold=-4.9,
        sampling=sampling,
    )
    r = s.send("Tell me about yourself.")
    # The running mean at layer 10 drops below -4.9 after the second reply token, so the cap
    # engages mid-reply, and it changes the reply (uncapped it continues "... designed to
    # support and inspire. I'm a").
    assert r.capped and r.capped_from == 2
    assert r.n_tokens == 16
    assert r.reply == "I'm a curious and compassionate AI. I'm here to help you explore the"
    assert not r.below_threshold
    assert r.projections[10] == pytest.approx(-1.7230857852846384, abs=1e-4)
    assert r.projections[15] == pytest.approx(-11.974105089902878, abs=1e-4)
    # Without the cap the same session replies as 0.1 did.
    plain = chat_session(smol, axis=axis, monitor_layers=[10, 15], sampling=sampling)
    p = plain.send("Tell me about yourself.")
    assert p.reply == ("I'm a curious and compassionate AI designed to support and inspire. I'm a")
    assert p.projections[10] == pytest.approx(-3.118218442425132, abs=1e-4)
    assert p.projections[15] == pytest.approx(-12.657, abs=1e-3)


def test_layer_sweep_pin(smol):
    axis = _axis(smol)
    res = layer_sweep(
        smol,
        axis,
        ["Who are you?", "Tell me a story."],
        layers=[5, 20],
        strengths=(-4.0, 4.0),
        readout_layers=(10, -1),
        continuations={"ai": "I am an AI"},
        generate=SamplingConfig(max_new_tokens=6, temperature=0.0),
    )
    assert res.metrics == ("proj@10", "proj@29", "dproj@10", "dproj@29", "kl", "dlogp:ai")
    want = torch.tensor(
        [
            [
                [-7.535116380730109, 23.04937328337779, -7.720690281630199,
                 12.140021154150945, 3.8453338069054084, -18.998853619002432],
                [2.8173805772455864, 22.06422276873394, 2.631806676345496,
                 11.154870639507099, 2.1296076947838865, -9.214567860771773],
            ],
            [
                [0.18557390090009052, -3.5671460966170363, 0.0,
                 -14.47649822584388, 0.37391372703598214, -1.9017272042065985],
                [0.18557390090009052, 39.321423307093404, 0.0,
                 28.412071177866558, 0.683897891050274, -3.7105800768730246],
            ],
        ],
        dtype=torch.float64,
    )  # fmt: skip
    torch.testing.assert_close(res.values, want, atol=1e-4, rtol=1e-5)
    assert res.baseline["proj@10"] == pytest.approx(0.18557390090009052, abs=1e-4)
    assert res.baseline["proj@29"] == pytest.approx(10.909352129226843, abs=1e-4)
    assert res.baseline_texts == ("I'm here to help with", "The story of a young woman")
    assert [(t.layer, t.strength, t.prompt, t.text) for t in res.texts] == [
        (5, -4.0, 0, "{ad**mentador"),
        (5, -4.0, 1, "{ad**mentador"),
        (5, 4.0, 0, "You are you are a bit"),
        (5, 4.0, 1, "This is a bit of light"),
        (20, -4.0, 0, "I'm Luminarium,"),
        (20, -4.0, 1, "The story I'm about to"),
        (20, 4.0, 0, "The sun, the moon,"),
        (20, 4.0, 1, "The story of a moonlit"),
    ]
