"""Shared fixtures: tiny random models (fast, default) and the embedded real model (slow)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault(
    "AXISLENS_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "axislens")
)

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_llama():
    import axislens

    return axislens.tiny_model("llama", n_layers=4, d_model=64, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen():
    import axislens

    return axislens.tiny_model("qwen2", n_layers=3, d_model=64, seed=1)


@pytest.fixture(scope="session")
def tiny_gemma():
    import axislens

    return axislens.tiny_model("gemma2", n_layers=3, d_model=64, seed=2)


@pytest.fixture(scope="session")
def smol():
    """The default embedded real model (SmolLM2-135M-Instruct)."""
    import axislens

    return axislens.load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizers():
    from axislens.model.loading import load_tokenizer

    return {
        name: load_tokenizer(name)
        for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m")
    }
