from __future__ import annotations

import pytest

from axislens.collection.activations import collect
from axislens.store import ActivationStore
from tests.unit.collection.test_store_activations import _convs, _hf_reference


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
