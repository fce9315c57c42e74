"""The collect job's steps (:mod:`axislens.jobs.collect` runs them in order): the run's items
and manifest provenance, the store, and the generation stage.

Example:
    >>> from axislens.jobs import CollectConfig, PersonaData
    >>> from axislens.personas import load_personas
    >>> cat = load_personas()
    >>> cfg = CollectConfig("runs/x", PersonaData(roles=4, n_questions=3, default_questions=12))
    >>> provenance(cfg, cat, cat.pick_roles(4), None)["generation"]["design"]["name"]
    'rotated'
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from axislens.collection.activations import collection_manifest
from axislens.collection.responses import (
    BridgeBackend,
    design_record,
    generate_run,
    generation_provenance,
    persona_items,
)
from axislens.model.layers import hook_name
from axislens.model.loading import model_provenance
from axislens.presets import model_short_name
from axislens.store import ActivationStore

if TYPE_CHECKING:
    from axislens.jobs.collect import CollectConfig
    from axislens.model.protocol import Model
    from axislens.personas import Personas

__all__ = ["create_store", "generate_stage", "items_for", "provenance"]


def provenance(cfg: CollectConfig, cat: Personas, roles: list[str] | None, engine: Any) -> dict:
    """The manifest's ``personas`` and ``generation`` fields: the catalogue's hashes, the
    sampling settings, the item counts and roles, the design and the engine."""
    n_roles = len(roles) if roles is not None else len(cat.roles)
    d = cfg.data
    defaults = {
        **({"default_prompts": d.default_prompts} if d.default_prompts is not None else {}),
        **({"default_questions": d.default_questions} if d.default_questions is not None else {}),
    }
    prov = generation_provenance(
        cat,
        cfg.sampling,
        n_prompts=d.n_prompts,
        n_questions=d.n_questions,
        roles=roles,
        design=design_record(n_roles, d.n_questions, d.default_questions, d.design),
        **defaults,
        **({"engine": engine.name} if engine is not None else {}),
    )
    return {"personas": prov["personas"]} if cfg.mode == "prefill" else prov


def items_for(cfg: CollectConfig, model: Model, cat: Personas, roles: list[str] | None) -> list:
    """The whole run's items, in order (rotation follows each role's place in them); ``roles``
    is ``cat.pick_roles(cfg.data.roles)``, resolved once by the caller."""
    d = cfg.data
    return persona_items(
        cat,
        roles=roles,
        n_prompts=d.n_prompts,
        n_questions=d.n_questions,
        include_default=d.include_default,
        model_name=model_short_name(model_provenance(model).model_id),
        default_prompts=d.default_prompts,
        default_questions=d.default_questions,
        design=d.design,
    )


def generate_stage(
    cfg: CollectConfig,
    model: Model,
    cat: Personas,
    store: ActivationStore,
    every: list,
    roles: list[str] | None,
    backend: Any,
    launch: Any,
    progress: bool,
) -> tuple[list, int, int, float]:
    """The generation stage: ``(every record, new responses, their tokens, seconds)``. An
    engine's tokens are counted with the local tokenizer."""
    t0 = time.perf_counter()
    bridge = BridgeBackend(model, cfg.batch_size)
    records, new = generate_run(
        model,
        cat,
        store,
        every,
        cfg.sampling,
        engine=backend or bridge,
        batch_size=cfg.batch_size,
        launch=launch,
        roles=roles or [r.name for r in cat.spread_roles()],
        progress=progress,
    )
    tokens = bridge.tokens
    if backend is not None:
        tokens = sum(
            len(model.tokenizer(r.messages[-1]["content"], add_special_tokens=False).input_ids)
            for r in new
        )
    return records, len(new), tokens, time.perf_counter() - t0


def create_store(
    cfg: CollectConfig, model: Model, prov: dict, policy: Any, layers: Sequence[int], writer: Any
) -> ActivationStore:
    """Create (or check) the store before any work: a mismatched model, hooks, span, catalogue
    or sampling fails fast, and so does an unwritable folder or a hook the model lacks (a typo
    must not become the store's identity)."""
    for h in cfg.layout.hooks:
        if hook_name(h, 0) not in model.hook_dict:
            raise ValueError(f"hooks: the model has no hook point {hook_name(h, 0)!r}")
    manifest = collection_manifest(
        model, cfg.layout.hooks, layers, policy, prov, cfg.layout.store_dtype
    )
    return ActivationStore.create(cfg.out, manifest, writer=writer, force=cfg.layout.force)
