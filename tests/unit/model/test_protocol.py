"""The typed model boundary: what load_model / tiny_model return satisfies axislens.Model."""

from __future__ import annotations

import axislens
from axislens.model import Model


def test_bridge_satisfies_the_model_protocol(tiny_llama) -> None:
    assert isinstance(tiny_llama, Model)
    assert axislens.Model is Model


def test_a_plain_hf_model_does_not(tiny_llama) -> None:
    # The HF model inside the bridge has no hook points: the Protocol tells them apart.
    assert not isinstance(tiny_llama.original_model, Model)
