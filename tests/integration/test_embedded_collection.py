from __future__ import annotations

import pytest
import torch

import axislens
from axislens.collection.activations import collect
from axislens.store import ActivationStore


def _convs(n: int) -> list[list[dict[str, str]]]:
    roles = ["ghost", "pirate", "tutor", "oracle", "reviewer", "leviathan"]
    out = []
    for i in range(n):
        r = roles[i % len(roles)]
        out.append(
            [
                {"role": "system", "content": f"You are a {r}."},
                {"role": "user", "content": f"Question number {i}: who are you?"},
                {"role": "assistant", "content": f"I am a {r}. " * (1 + i % 4)},
            ]
        )
    return out


def _hf_reference(model, messages, layers):
    """Independent check: plain HF forward hooks on the decoder layers + own span arithmetic."""
    conv = axislens.format_conversation(model, messages)
    captured = {}
    handles = [
        model.original_model.model.layers[layer].register_forward_hook(
            lambda mod, inp, out, layer=layer: captured.__setitem__(
                layer, (out[0] if isinstance(out, tuple) else out).detach()
            )
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            model.original_model(conv.input_ids[None])
    finally:
        for h in handles:
            h.remove()
    span = conv.spans_of("assistant")[-1]
    return torch.stack(
        [captured[layer][0, span.start : span.end].double().mean(0) for layer in layers]
    )


@pytest.mark.slow
def test_collect_matches_plain_hf_hooks_on_embedded_model(smol, tmp_path):
    convs = _convs(4)
    layers = [0, 7, 15, 29]
    collect(smol, convs, tmp_path / "s", layers=layers, batch_size=4, progress=False)
    got = ActivationStore.open(tmp_path / "s").activations("resid_post", kind="conversation")
    for i, messages in enumerate(convs):
        ref = _hf_reference(smol, messages, layers)
        rel = ((got[i].double() - ref).norm(dim=-1) / ref.norm(dim=-1)).max()
        assert rel < 1e-4
