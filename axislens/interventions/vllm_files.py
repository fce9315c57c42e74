"""Export interventions for the axislens vLLM plugin (``integrations/vllm``, ``axislens-vllm``).

vLLM runs one kernel after the chosen layers' blocks (TransformerLens' ``resid_post``): for each
of ``K`` entries in order, with ``p = h·u``,

    h <- h + (a·p + b + relu(lo - p) - relu(p - hi))·u

Every op of :mod:`axislens.interventions.operations` maps onto it, in the same units as
:func:`axislens.intervene` (raw direction units, or ``norm_units``):

======================  ==========================================
op                      a, b, lo, hi
======================  ==========================================
``Add(c)``              0, ``c·|v|``, -inf, +inf
``Ablate(c)``           -1, ``c·|v|``, -inf, +inf
``MeanAblate(mu)``      -1, ``mu``, -inf, +inf (a number only)
``CapFloor(tau)``       0, 0, ``tau``, +inf
``CapCeiling(tau)``     0, 0, -inf, ``tau``
``ClampBand(lo, hi)``   0, 0, ``lo``, ``hi``
======================  ==========================================

Hooks: ``resid_post`` at layer ``l``, or ``resid_pre`` at ``l > 0`` (the same stream as
``resid_post`` at ``l - 1``). Positions: :class:`All`, :class:`Prompt` or :class:`Response`, one
rule per file. Anything else is refused here, with the reason, rather than approximated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from axislens.directions import CapConfig
from axislens.interventions.attach import Intervention, cap_intervention, compile_kernels
from axislens.interventions.operations import (
    Ablate,
    Add,
    All,
    CapCeiling,
    CapFloor,
    ClampBand,
    MeanAblate,
    Prompt,
    Response,
    _at,
    _Ctx,
)
from axislens.model.layers import resolve_layers
from axislens.store import atomic_write_bytes
from axislens.version import __version__

__all__ = ["VLLM_FORMAT", "to_vllm"]

VLLM_FORMAT = "axislens-vllm/1"
"""The file format the plugin reads (``axislens_vllm.spec.FORMAT``)."""

_RULES = {All: "all", Prompt: "prompt", Response: "response"}


def _entry(iv: Intervention, i: int, n: int, layer: int) -> tuple[float, float, float, float]:
    """``(a, b, lo, hi)`` of ``iv`` at the ``i``-th of its ``n`` layers, ``layer``, in the units
    :func:`axislens.intervene` uses (the same :class:`_Ctx`; ``iv`` already validated by
    :func:`compile_kernels`)."""
    op = iv.op
    scale = None if iv.norm_units is None else float(iv.norm_units[layer])
    v = iv.direction.vectors[layer].double()
    ctx = _Ctx(v, v / v.norm(), scale)

    def along(c: float) -> float:  # the component along u of the move ``c v`` the op adds
        return float(ctx.along(c) @ ctx.u)

    inf = math.inf
    if isinstance(op, Add):
        return 0.0, along(_at(op.coeff, i, n, "Add.coeff")), -inf, inf
    if isinstance(op, Ablate):
        return -1.0, along(_at(op.coeff, i, n, "Ablate.coeff")), -inf, inf
    if isinstance(op, MeanAblate):
        return -1.0, ctx.amount(_at(op.mu, i, n, "MeanAblate.mu")), -inf, inf  # type: ignore[arg-type]
    if isinstance(op, CapFloor):
        return 0.0, 0.0, ctx.amount(_at(op.thresholds, i, n, "CapFloor.thresholds")), inf
    if isinstance(op, CapCeiling):
        return 0.0, 0.0, -inf, ctx.amount(_at(op.thresholds, i, n, "CapCeiling.thresholds"))
    if isinstance(op, ClampBand):
        lo = ctx.amount(_at(op.lo, i, n, "ClampBand.lo"))
        return 0.0, 0.0, lo, ctx.amount(_at(op.hi, i, n, "ClampBand.hi"))
    raise ValueError(f"{type(op).__name__} has no vLLM form")


def _rule(items: list[Intervention]) -> str:
    rules = set()
    for k, iv in enumerate(items):
        rule = _RULES.get(type(iv.positions))
        if rule is None:
            raise ValueError(
                f"intervention #{k}: positions {iv.positions!r} cannot run in vLLM (all, prompt "
                "or response only)"
            )
        rules.add(rule)
    if len(rules) > 1:
        raise ValueError(f"one position rule per vLLM file, got {sorted(rules)}; export them apart")
    return rules.pop()


def to_vllm(
    path: str | Path,
    *items: Intervention | CapConfig,
    model: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``items`` (interventions, or caps: :class:`CapConfig` as :func:`axislens.cap`
    applies it) as one file for the axislens vLLM plugin; they run in the order given.

    ``model`` is the identity to record (default: the first direction's ``provenance["model"]``).
    The plugin refuses the file on an engine whose model has another layer count or width.
    The write is atomic.

    Example:
        >>> cap = CapConfig(axis, layers=(10, 11), thresholds=(0.5, 0.7))
        >>> to_vllm("cap.safetensors", cap)
        PosixPath('cap.safetensors')
    """
    if not items:
        raise ValueError("to_vllm needs at least one intervention or cap")
    ivs = [cap_intervention(x) if isinstance(x, CapConfig) else x for x in items]
    for k, iv in enumerate(ivs):
        if not isinstance(iv, Intervention):
            raise ValueError(
                f"item #{k}: expected an Intervention or CapConfig, got {type(iv).__name__}"
            )
    n_layers, d_model = ivs[0].direction.n_layers, ivs[0].direction.d_model
    rule = _rule(ivs)
    rows: list[tuple[int, torch.Tensor, tuple[float, float, float, float]]] = []
    for k, iv in enumerate(ivs):
        where = f"intervention #{k} ({type(iv.op).__name__})"
        if (iv.direction.n_layers, iv.direction.d_model) != (n_layers, d_model):
            raise ValueError(f"{where}: its direction's shape differs from intervention #0's")
        shift = {"resid_post": 0, "resid_pre": -1}.get(str(iv.hook))
        if shift is None:
            raise ValueError(
                f"{where}: hook {iv.hook!r} cannot run in vLLM (resid_post or resid_pre)"
            )
        if isinstance(iv.op, MeanAblate) and torch.is_tensor(iv.op.mu):
            raise ValueError(
                f"{where}: MeanAblate with a vector mu moves the stream off the direction; vLLM's "
                "kernel moves only along it (use a number)"
            )
        # the checks intervene() makes (layers, norm_units, zero rows, band order), same messages
        compile_kernels(iv, n_layers, d_model, torch.float64, lambda _: "cpu", where)
        layers = resolve_layers(iv.layers, n_layers, where)
        for i, layer in enumerate(layers):
            at = layer + shift
            if at < 0:
                raise ValueError(
                    f"{where}: resid_pre of layer 0 (the embeddings) cannot run in vLLM"
                )
            rows.append((at, iv.direction.unit(layer).double(), _entry(iv, i, len(layers), layer)))
    per_layer: dict[int, list[tuple[torch.Tensor, tuple[float, float, float, float]]]] = {}
    for at, u, coef in rows:
        per_layer.setdefault(at, []).append((u, coef))
    k_max = max(len(v) for v in per_layer.values())
    u_out = torch.zeros(k_max, n_layers, d_model, dtype=torch.float64)
    coef_out = torch.tensor([0.0, 0.0, -math.inf, math.inf], dtype=torch.float64).repeat(
        k_max, n_layers, 1
    )
    for at, entries in per_layer.items():
        for j, (u, coef) in enumerate(entries):
            u_out[j, at] = u
            coef_out[j, at] = torch.tensor(coef, dtype=torch.float64)
    first = ivs[0].direction.provenance
    identity = dict(model) if model is not None else {"model": first.get("model")}
    metadata = {
        "format": VLLM_FORMAT,
        "n_layers": str(n_layers),
        "d_model": str(d_model),
        "positions": rule,
        "model": json.dumps(identity, sort_keys=True, default=str),
        "provenance": json.dumps(
            {
                "interventions": [repr(iv) for iv in ivs],
                "directions": [dict(iv.direction.provenance) for iv in ivs],
                "axislens_version": __version__,
            },
            sort_keys=True,
            default=str,
        ),
        "axislens_version": __version__,
    }
    tensors = {"u": u_out.float().contiguous()}
    for j, key in enumerate(("a", "b", "lo", "hi")):
        tensors[key] = coef_out[..., j].float().contiguous()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, safetensors_bytes(tensors, metadata=metadata))
    return out
