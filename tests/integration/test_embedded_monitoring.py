"""Transcripts, drift trajectories, the live monitor with its conditional cap, `axislens monitor`."""

from __future__ import annotations

import pytest
import torch

import axislens
from axislens.model.decoding import SamplingConfig
from axislens.monitoring.projection import (
    project_conversation,
)
from axislens.monitoring.session import chat_session
from tests.unit.monitoring.test_monitoring import CONV, _axis


@pytest.mark.slow
def test_embedded_model_projection_and_session(smol):
    axis = _axis(smol, seed=3)
    traj = project_conversation(smol, axis, CONV[:5], layers=[10, 28])  # HF normalises the last
    conv = axislens.format_conversation(smol, CONV[:5])
    with torch.no_grad():
        hidden = smol.original_model(conv.input_ids[None], output_hidden_states=True).hidden_states
    for k, span in enumerate(conv.spans_of("assistant")):
        for j, layer in enumerate((10, 28)):
            v = axis.vectors[layer].double()
            want = hidden[layer + 1][0, span.slice].double() @ (v / v.norm())
            torch.testing.assert_close(
                traj.token_projections[k][j].double(), want, atol=1e-4, rtol=1e-5
            )
    sampling = SamplingConfig(max_new_tokens=8, temperature=0.0)
    s = chat_session(smol, axis=axis, monitor_layers=[15], sampling=sampling)
    r = s.send(CONV[1]["content"])
    prompt = axislens.format_conversation(smol, CONV[1:2], add_generation_prompt=True)
    assert r.reply == axislens.generate_text(smol, [prompt], sampling)[0]
