"""Trait vectors filtered on the 0-100 trait scale: positive > 50, negative < 50 (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from axislens.analysis.traits import TraitFilter, trait_vectors
from tests.unit.analysis.test_analysis import LAYERS, D, Planted, unit


def test_trait_filter_keeps_pos_above_and_neg_below(tmp_path):
    p = Planted(n_roles=2)
    rng = np.random.default_rng(1)
    u = np.stack([unit(rng.normal(size=D)) for _ in LAYERS])
    pos_scores = [90, 51, 50, 3, None, 100]
    neg_scores = [0, 49, 50, 85, None, 10]
    for i, (sp, sn) in enumerate(zip(pos_scores, neg_scores, strict=True)):
        for kind, s, sign in (("trait_pos", sp, 1), ("trait_neg", sn, -1)):
            rid = f"trait/calm/{kind}/q{i:03d}"
            p.add(rid, kind, "calm", sign * (i + 1) * u + rng.normal(size=u.shape))
            p.scores[rid] = s
    store = p.store(tmp_path / "s")
    tv = trait_vectors(store)
    kept_pos = [i for i, s in enumerate(pos_scores) if s is not None and s > 50]
    kept_neg = [i for i, s in enumerate(neg_scores) if s is not None and s < 50]
    assert tv.counts_pos == (len(kept_pos),) and tv.counts_neg == (len(kept_neg),)
    ref = np.mean([p.acts[f"trait/calm/trait_pos/q{i:03d}"] for i in kept_pos], 0) - np.mean(
        [p.acts[f"trait/calm/trait_neg/q{i:03d}"] for i in kept_neg], 0
    )
    np.testing.assert_allclose(tv.vectors[0].numpy(), ref, rtol=1e-12)
    assert tv.provenance["score_filter"] == {"pos_above": 50, "neg_below": 50}
    everything = trait_vectors(store, score_filter=None)
    assert everything.counts_pos == (6,) and everything.counts_neg == (6,)
    strict = trait_vectors(store, score_filter=TraitFilter(pos_above=89, neg_below=5))
    assert strict.counts_pos == (2,) and strict.counts_neg == (1,)
    unscored = p.store(tmp_path / "u", scores=False)
    with pytest.raises(ValueError, match="no judge scores for the 'trait_pos'"):
        trait_vectors(unscored)
    with pytest.raises(ValueError, match=r"TraitFilter.pos_above must be an int in 0..100"):
        TraitFilter(pos_above=101)
