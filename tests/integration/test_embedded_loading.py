from __future__ import annotations

import shutil

import pytest
import torch

import axislens
from axislens.model.loading import EMBEDDED_MODELS, model_provenance


@pytest.mark.slow
def test_embedded_model_loads_with_provenance(smol):
    assert (smol.cfg.n_layers, smol.cfg.d_model) == (30, 576)
    prov = model_provenance(smol)
    assert prov.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (
        prov.source == "embedded"
        and prov.weights_sha256 == EMBEDDED_MODELS["smollm2-135m-instruct"].sha256
    )
    assert prov.processing is False and prov.dtype == "float32"


@pytest.mark.slow
def test_prepare_model_second_call_is_free(smol):
    import time

    path = axislens.prepare_model("smollm2-135m-instruct")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = axislens.prepare_model("smollm2-135m-instruct")
    assert again == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.slow
def test_local_folder_loads_same_weights(smol, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(axislens.prepare_model("smollm2-135m-instruct"), folder)
    local = axislens.load_model(folder)
    assert model_provenance(local).source == "local"
    ids = torch.tensor([[1, 2, 3, 4]])
    # exact: the same weight file loaded the same way, the same forward
    assert torch.equal(local(ids, return_type="logits"), smol(ids, return_type="logits"))


@pytest.mark.slow
def test_bridge_generate_matches_hf(smol):
    """Guards the transformers pin: TL 4.3.0 + transformers 5.24.0 generate garbage silently."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        str(axislens.prepare_model("smollm2-135m-instruct")), attn_implementation="eager"
    ).eval()
    prompts = ["Who are you?", "Name three colours of the rainbow."]
    convs = [
        axislens.format_conversation(
            smol, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in prompts
    ]
    sampling = axislens.SamplingConfig(max_new_tokens=24, temperature=0.0)
    ours = axislens.generate_tokens(smol, [c.input_ids for c in convs], sampling, batch_size=2)
    stops = set(axislens.stop_token_ids(smol.tokenizer))
    for conv, mine in zip(convs, ours, strict=True):
        ref = hf.generate(
            conv.input_ids[None], max_new_tokens=24, do_sample=False, eos_token_id=sorted(stops)
        )[0, len(conv) :]
        ref = torch.tensor([t for t in ref.tolist() if t not in stops])
        assert mine.tolist() == ref.tolist()
        # The bridge's own generate agrees too (the pinned-version regression).
        bridge = smol.generate(
            conv.input_ids[None], max_new_tokens=24, do_sample=False, verbose=False
        )[0, len(conv) :]
        assert bridge[: len(mine)].tolist() == mine.tolist()
    assert all(len(set(o.tolist())) > 5 for o in ours)  # a real answer, not a repeated token


@pytest.mark.slow
def test_weightless_load_has_the_models_identity_and_formatting(smol):
    """``weights=False``: the same provenance (so a store it starts resumes on the bridge), the
    same chat token ids, the hook names, and a clear error when run."""
    from axislens.model.loading import ModelError, WeightlessModel, load_model

    light = load_model("smollm2-135m-instruct", weights=False)
    assert isinstance(light, WeightlessModel)
    assert model_provenance(light).to_dict() == model_provenance(smol).to_dict()
    assert set(light.hook_dict) <= set(smol.hook_dict)
    personas = axislens.load_personas()
    for item in axislens.persona_items(
        personas, roles=["pirate", "ghost"], n_prompts=2, n_questions=2
    ):
        a = axislens.format_conversation(light, list(item.messages), add_generation_prompt=True)
        b = axislens.format_conversation(smol, list(item.messages), add_generation_prompt=True)
        assert torch.equal(a.input_ids, b.input_ids)
    with pytest.raises(ModelError, match="loaded without weights"):
        light(torch.tensor([[1, 2]]))
