"""token_projections: per-token projections whose mean is the stored span-mean projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axislens.analysis.thresholds import Pool, calibrate_cap, project_store
from axislens.collection.activations import collect
from axislens.collection.tokens import token_projections
from axislens.directions import Direction
from axislens.store import ItemRecord


def _records() -> list[ItemRecord]:
    out = []
    for i in range(5):
        kind, role = ("default", "default") if i < 2 else ("role", f"r{i}")
        msgs = (
            {"role": "system", "content": f"You are {role}."},
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": "Yes, indeed. " * (1 + i)},
        )
        out.append(ItemRecord(f"{kind}/{role}/p0/q{i}", kind, role, 0, f"q{i}", msgs))  # type: ignore[arg-type]
    return out


def test_token_mean_equals_stored_span_mean_projection(tiny_llama, tmp_path):
    store_dir = tmp_path / "s"
    collect(tiny_llama, _records(), store_dir, batch_size=2, progress=False)
    g = torch.Generator().manual_seed(0)
    n, d = int(tiny_llama.cfg.n_layers), int(tiny_llama.cfg.d_model)
    axis = Direction(torch.randn(n, d, generator=g), method="test")
    layers = (1, 3)
    tok = token_projections(tiny_llama, store_dir, axis, layers=layers, batch_size=3)
    tok1 = token_projections(tiny_llama, store_dir, axis, layers=layers, batch_size=1)
    proj = project_store(store_dir, axis, layers=layers)
    assert tok.ids == proj.ids
    for i in range(len(tok.ids)):
        v = tok.values[i]
        assert v.shape[0] > 1
        torch.testing.assert_close(v, tok1.values[i], rtol=0, atol=1e-4)  # padding invisible
        torch.testing.assert_close(v.mean(0), proj.values[i], rtol=0, atol=1e-4)
    cap = calibrate_cap(store_dir, axis, layers=[3], unit="token", tokens=tok, pool=Pool.all())
    ref = np.concatenate([v[:, 1].numpy() for v in tok.values])
    # calibrate_cap takes np.percentile(axis=0) of its own stacking: a tolerance, not bits
    assert cap.thresholds[0] == pytest.approx(np.percentile(ref, 25), rel=1e-12, abs=1e-12)
    only = token_projections(tiny_llama, store_dir, axis, layers=[3], pool=Pool.default_only())
    assert len(only.ids) == 2
    with pytest.raises(ValueError, match="out of range"):
        token_projections(tiny_llama, store_dir, axis, layers=[n])
