"""Models larger than one device: ``load_model(device_map=..., offload_folder=...)`` through
accelerate's dispatch, checked on CPU with half the layers offloaded to disk."""

from __future__ import annotations

import pytest
import torch

import axislens
from axislens.directions import Direction
from axislens.interventions.attach import residual_norms, steer
from axislens.model.layers import layer_device
from axislens.model.loading import ModelError
from axislens.monitoring.projection import project_conversation
from axislens.store import ActivationStore

DISK_HALF = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.layers.2": "disk",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}

CONVS = [
    [
        {"role": "system", "content": f"You are a {r}."},
        {"role": "user", "content": f"Question {i}: who are you?"},
        {"role": "assistant", "content": f"I am a {r}. " * (1 + i)},
    ]
    for i, r in enumerate(["ghost", "pirate", "tutor"])
]


@pytest.fixture(scope="module")
def models(tiny_llama, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_llama.original_model.config).save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    plain = axislens.load_model(folder)
    off = tmp_path_factory.mktemp("offload")
    split = axislens.load_model(folder, device_map=DISK_HALF, offload_folder=off)
    return plain, split


def test_half_the_layers_on_disk_really_are_offloaded(models) -> None:
    _, split = models
    assert {p.device.type for p in split.blocks[3].parameters()} == {"meta"}
    assert {p.device.type for p in split.blocks[0].parameters()} == {"cpu"}
    assert layer_device(split, 3) == torch.device("cpu")  # its execution device, not meta


def test_disk_offload_gives_the_same_span_means(models, tmp_path) -> None:
    plain, split = models
    axislens.collect(plain, CONVS, tmp_path / "a", batch_size=2, progress=False)
    axislens.collect(split, CONVS, tmp_path / "b", batch_size=2, progress=False)
    ids = sorted(ActivationStore.open(tmp_path / "a").collected_ids())
    a = ActivationStore.open(tmp_path / "a").activations(ids=ids)
    b = ActivationStore.open(tmp_path / "b").activations(ids=ids)
    assert a.shape == (3, 4, 64)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def test_steering_norms_and_monitoring_follow_offloaded_layers(models) -> None:
    plain, split = models
    g = torch.Generator().manual_seed(0)
    d = Direction(torch.randn(4, 64, generator=g), method="planted")
    toks = torch.randint(10, 4000, (9,), generator=g)[None]
    outs = []
    for m in (plain, split):
        with torch.no_grad(), steer(m, d, -2.0, [1, 3]):
            outs.append(m(toks))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(plain(toks), outs[0])  # the steer did something
    convs = [axislens.format_conversation(m, CONVS[0]) for m in (plain, split)]
    torch.testing.assert_close(
        residual_norms(split, [convs[1]]), residual_norms(plain, [convs[0]]), rtol=1e-5, atol=0
    )
    got = project_conversation(split, d, CONVS[1], layers=[1, 3])
    ref = project_conversation(plain, d, CONVS[1], layers=[1, 3])
    assert len(got.assistant) == len(ref.assistant) == 1
    torch.testing.assert_close(
        got.assistant[0].projections, ref.assistant[0].projections, rtol=1e-5, atol=1e-5
    )


def test_device_map_arguments_are_checked(tmp_path) -> None:
    with pytest.raises(ModelError, match="not both"):
        axislens.load_model("smollm2-135m-instruct", device="cuda", device_map="auto")
    with pytest.raises(ModelError, match="give offload_folder"):
        axislens.load_model("smollm2-135m-instruct", device_map={"model": "disk"})
    with pytest.raises(ModelError, match="need a device_map"):
        axislens.load_model("smollm2-135m-instruct", max_memory={0: "1GiB"})
    with pytest.raises(ModelError, match="device_map 'everywhere'"):
        axislens.load_model("smollm2-135m-instruct", device_map="everywhere")
