"""Per-token projections of stored responses on a direction: one teacher-forced model pass.

The store keeps span *means* only; a cap acts on every token, so calibrating ``tau`` per token
(:func:`axislens.analysis.thresholds.calibrate_cap` with ``unit="token"``) needs the token-level
projections, which this module computes with the model the store was collected from. Each item is
formatted and fitted exactly as :func:`~axislens.collection.activations.collect` did (same span
policy, from the store's manifest), so the mean of an item's token projections equals the
projection of its stored span mean (to float32 rounding).

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> tok = token_projections(model, store, axis, layers=range(21, 26))  # doctest: +SKIP
    >>> cap = calibrate_cap(store, axis, layers=range(21, 26), unit="token", tokens=tok)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from axislens.analysis.thresholds import Pool, TokenProjections, direction_fingerprint
from axislens.analysis.vectors import StoreSource, check_direction, open_source
from axislens.collection.activations import check_store_model, prepare_item, span_policy
from axislens.directions import Direction
from axislens.model.layers import hook_name
from axislens.model.protocol import Model

__all__ = ["token_projections"]


class _Stop(Exception):
    pass


@torch.no_grad()
def token_projections(
    model: Model,
    source: StoreSource,
    direction: Direction,
    *,
    layers: Iterable[int],
    pool: Pool | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> TokenProjections:
    """Projections ``h_t · v̂_l`` (float64 dot products of the float32 activations) of every
    token the store's span policy averages, for each collected item of ``pool`` (default
    ``Pool()``), at ``layers`` and ``direction.hook``.

    Refuses a store collected from another model. Right-padded batches (causal attention keeps
    real tokens blind to the pads); the forward stops after the last needed layer.
    """
    src = open_source(source, direction.hook)
    check_direction(
        direction, d_model=src.d_model, hook=src.hook, model_id=src.model_id, where=src.where
    )
    for store in src.stores:
        check_store_model(store, model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cols = tuple(layers)
    if not cols:
        raise ValueError("token_projections needs at least one layer")
    for layer in cols:
        if not 0 <= layer < int(model.cfg.n_layers):
            raise ValueError(
                f"layer {layer} is out of range for a {model.cfg.n_layers}-layer model"
            )
    chosen = pool if pool is not None else Pool()
    policy = span_policy(str(src.manifest.get("span", "response")))
    limit = int(model.cfg.n_ctx)
    units = [direction.unit(layer).double() for layer in cols]
    items = chosen.select(src)
    prepared = []
    for _k, rec in items:
        p = prepare_item(model, rec, policy, limit)
        if p.ids is None or p.weights is None:
            raise ValueError(f"item {rec.id!r} cannot be refitted: {p.record.skipped}")
        prepared.append(p)
    device = model.cfg.device
    pad = int(model.tokenizer.pad_token_id)
    last = max(cols)
    out: list[torch.Tensor] = []
    bar = tqdm(total=len(prepared), desc="token projections", disable=not progress)
    try:
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            width = max(len(p.ids) for p in chunk if p.ids is not None)
            batch = torch.full((len(chunk), width), pad, dtype=torch.long)
            for i, p in enumerate(chunk):
                assert p.ids is not None
                batch[i, : len(p.ids)] = p.ids
            proj = torch.empty(len(chunk), len(cols), width, dtype=torch.float64)

            def make(j: int, layer: int, dest: torch.Tensor = proj) -> Any:
                def fn(act: torch.Tensor, hook: Any) -> None:
                    dest[:, j] = (act.double() @ units[j].to(act.device)).cpu()
                    if layer == last:
                        raise _Stop

                return fn

            fwd = [
                (hook_name(direction.hook, layer), make(j, layer)) for j, layer in enumerate(cols)
            ]
            try:
                with model.hooks(fwd_hooks=fwd):
                    model(batch.to(device), return_type=None)
            except _Stop:
                pass
            else:
                raise RuntimeError(f"the hook at layer {last} never fired")
            for i, p in enumerate(chunk):
                assert p.weights is not None
                keep = (p.weights > 0).nonzero()[:, 0]
                out.append(proj[i][:, keep].T.contiguous())  # [token, layer]
            bar.update(len(chunk))
    finally:
        bar.close()
    return TokenProjections(
        ids=tuple(p.record.id for p in prepared),
        layers=cols,
        values=tuple(out),
        hook=direction.hook,
        fingerprint=direction_fingerprint(direction, cols),
        provenance={
            "stores": [str(s.root) for s in src.stores],
            "span": policy.name,
            "pool": chosen.describe(),
        },
    )
