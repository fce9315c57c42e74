"""Interventions at hook points: ops against float64 references, positions, KV-cache generation
against a full-recompute reference, bit-identical caps, validation, and hook cleanup."""

from __future__ import annotations

import pytest
import torch

import axislens
from axislens.directions import CapConfig
from axislens.interventions.attach import (
    Intervention,
    cap,
    intervene,
    residual_norms,
)
from axislens.interventions.operations import (
    Add,
)
from axislens.model.decoding import SamplingConfig, generate_tokens

POST = "blocks.{}.hook_resid_post"


ROLE_PROMPTS = (
    "You are a ghost haunting an old castle.",
    "You are a pirate captain sailing the seven seas.",
    "You are a medieval bard who sings tales of heroes.",
)


ASSISTANT_PROMPTS = (
    None,
    "You are a helpful AI assistant.",
    "You are an AI assistant created to help users.",
)


@pytest.mark.slow
def test_embedded_model_steering_and_capping(smol):
    """Stand-in axis (no store yet): mean(prefill resid | assistant prompts) - mean(| role
    prompts), all for "Who are you?"."""
    from axislens.evals.sweeps import last_token_resid, prompt_contrast_axis

    model = smol

    def conv(system):
        msgs = [{"role": "system", "content": system}] if system is not None else []
        msgs.append({"role": "user", "content": "Who are you?"})
        return axislens.format_conversation(model, msgs, add_generation_prompt=True)

    pos = [conv(s) for s in ASSISTANT_PROMPTS]
    neg = [conv(s) for s in ROLE_PROMPTS]
    axis = prompt_contrast_axis(model, pos, neg)
    norms = residual_norms(model, pos + neg)
    n = model.cfg.n_layers
    late = list(range(n - 8, n))
    names = [POST.format(la) for la in range(n)]

    def last_proj(c, *ivs):
        with intervene(model, *ivs):
            logits, cache = model.run_with_cache(c.input_ids[None], names_filter=names)
        p = torch.stack(
            [cache[POST.format(la)][0].double() @ axis.unit(la).double() for la in range(n)]
        )
        return logits, p  # [layer, pos]

    base_logits, base = last_proj(pos[0])
    away = Intervention(Add(-0.5), axis, layers=range(8, 14), norm_units=norms)
    _, steered = last_proj(pos[0], away)
    assert bool((steered[late, -1] < base[late, -1]).all())
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.0)
    plain = generate_tokens(model, [pos[0].input_ids], sampling)[0]
    with intervene(model, away):
        moved = generate_tokens(model, [pos[0].input_ids], sampling)[0]
    assert plain.tolist() != moved.tolist(), model.tokenizer.decode(plain)

    # Cap at late layers, thresholds at the 25th percentile of the last-token projections of
    # all six prompts (the paper's recipe, on prompts instead of responses). The assistant prompt
    # stays above them at every token there, so its logits must be bit-identical.
    cap_layers = tuple(range(18, 26))
    acts = last_token_resid(model, pos + neg).double()  # [prompt, layer, d_model]
    pooled = torch.einsum("pld,ld->pl", acts, axis.units().double())
    taus = tuple(float(torch.quantile(pooled[:, la], 0.25)) for la in cap_layers)
    assert all(float(base[la].min()) > t for la, t in zip(cap_layers, taus, strict=True))
    cfg = CapConfig(axis, layers=cap_layers, thresholds=taus, percentile=25.0)
    with cap(model, cfg):
        capped_logits = model(pos[0].input_ids[None])
    assert torch.equal(capped_logits, base_logits)  # exact: an inactive cap is bit-identical
    # Steered away then capped: the cap acts and holds the floor at the capped layers.
    with intervene(model, away), cap(model, cfg):
        _, both = last_proj(pos[0])
    floor = torch.tensor(taus, dtype=torch.float64)[:, None] - 1e-3
    assert bool((both[list(cap_layers)] >= floor).all())
    assert bool((steered[list(cap_layers), -1] < floor[:, 0]).any())


@pytest.mark.slow
def test_embedded_model_store_axis_steers_and_caps(smol, tmp_path):
    """The must-hold with an axis from an activation store (prefill store of 12 roles x 2 prompts
    x 2 questions + the default prompts): steering away lowers later-layer projections and
    changes the greedy self-introduction; a cap calibrated from the store leaves an assistant
    prompt whose projections are above the thresholds bit-identical."""
    from axislens.store import ActivationStore

    personas = axislens.load_personas()
    roles = [r.name for r in personas.spread_roles()[:12]]
    items = axislens.persona_items(personas, roles=roles, n_prompts=2, n_questions=2)
    axislens.collect(smol, items, tmp_path / "store", span="prefill", batch_size=16, progress=False)
    store = ActivationStore.open(tmp_path / "store")
    axis = axislens.assistant_axis(store, min_score=None, min_count=1)
    n = smol.cfg.n_layers
    conv = axislens.format_conversation(
        smol, [{"role": "user", "content": "Who are you?"}], add_generation_prompt=True
    )
    names = [POST.format(la) for la in range(n)]

    def projections(*ivs):
        with intervene(smol, *ivs):
            logits, cache = smol.run_with_cache(conv.input_ids[None], names_filter=names)
        return logits, torch.stack(
            [cache[POST.format(la)][0].double() @ axis.unit(la).double() for la in range(n)]
        )

    base_logits, base = projections()
    norms = residual_norms(smol, [conv])
    away = Intervention(Add(-0.5), axis, layers=range(8, 14), norm_units=norms)
    _, steered = projections(away)
    late = list(range(n - 8, n))
    assert bool((steered[late, -1] < base[late, -1]).all())
    sampling = SamplingConfig(max_new_tokens=16, temperature=0.0)
    plain = generate_tokens(smol, [conv.input_ids], sampling)[0]
    with intervene(smol, away):
        moved = generate_tokens(smol, [conv.input_ids], sampling)[0]
    assert plain.tolist() != moved.tolist()

    # The all pool (roles and defaults item by item): a floor low enough that this assistant
    # prompt sits above it (the default pool's floor sits inside the Assistant's own range).
    cap_cfg = axislens.calibrate_cap(
        store, axis, layers=range(19, 24), percentile=0.25, pool=axislens.Pool.all()
    )
    # Precondition of the claim: every position of this prompt projects above tau there.
    assert all(
        float(base[la].min()) > tau
        for la, tau in zip(cap_cfg.layers, cap_cfg.thresholds, strict=True)
    )
    with cap(smol, cap_cfg):
        capped_logits = smol(conv.input_ids[None])
    assert torch.equal(capped_logits, base_logits)  # exact: an inactive cap is bit-identical
    with intervene(smol, away), cap(smol, cap_cfg):
        _, both = projections()
    floor = torch.tensor(cap_cfg.thresholds, dtype=torch.float64)[:, None] - 1e-3
    assert bool((both[list(cap_cfg.layers)] >= floor).all())
