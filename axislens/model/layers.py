"""Hook-point names and layer selections: the one place layers are parsed and resolved.

TransformerLens names residual-stream hook points ``blocks.{l}.hook_resid_pre/mid/post`` and
the sublayer outputs ``blocks.{l}.hook_attn_out`` / ``hook_mlp_out``; axislens refers to them by
their short names (``"resid_post"``). A *layer selection* is an int, a sequence or range of
ints, or a slice (negative indices count from the end); the CLI writes the same thing as text,
``"12:16"`` (stop-exclusive), ``"-4:"``, ``"3"`` or ``"1,5,-1"``.

Example:
    >>> hook_name("resid_post", 3)
    'blocks.3.hook_resid_post'
    >>> resolve_layers(parse_layers("-2:"), 30)
    (28, 29)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from axislens.directions import HOOKS, HookName, check_hook

if TYPE_CHECKING:
    from axislens.model.protocol import Model

__all__ = [
    "HOOKS",
    "HookShort",
    "LayerSpec",
    "hook_name",
    "layer_device",
    "parse_cap_layers",
    "parse_layers",
    "resolve_layers",
]

HookShort = HookName
"""Deprecated spelling of :data:`axislens.directions.HookName` (kept for 0.2 imports)."""

LayerSpec = int | Sequence[int] | slice | range
"""Layers: an int, a sequence or range of ints, or a slice; negative indices count from the end."""


def hook_name(hook: str, layer: int) -> str:
    """``("resid_post", 3) -> "blocks.3.hook_resid_post"``; raises on an unknown hook."""
    return f"blocks.{layer}.hook_{check_hook(hook)}"


def resolve_layers(
    layers: LayerSpec | None, n_layers: int, where: str = "layers"
) -> tuple[int, ...]:
    """Normalise a layer selection against a model of ``n_layers`` layers.

    ``None`` means every layer. Negative indices count from the end. An empty selection, a
    layer out of range, a non-integer or a repeated layer raises ``ValueError`` naming ``where``.

    Example:
        >>> resolve_layers(slice(-3, None), 30)
        (27, 28, 29)
        >>> resolve_layers([0, -1], 30)
        (0, 29)
    """
    if layers is None:
        return tuple(range(n_layers))
    if isinstance(layers, slice):
        out = tuple(range(n_layers)[layers])
        if not out:
            raise ValueError(f"{where}: {layers} selects no layer of a {n_layers}-layer model")
        return out
    if isinstance(layers, bool):
        raise ValueError(f"{where}: layers must be ints, got {layers!r}")
    seq: Sequence[object]
    if isinstance(layers, numbers.Integral):
        seq = (int(layers),)
    elif isinstance(layers, (Sequence, range)) and not isinstance(layers, (str, bytes)):
        seq = layers
    else:
        raise ValueError(
            f"{where}: expected an int, a sequence of ints, a slice or a range, got {layers!r}"
        )
    if not seq:
        raise ValueError(f"{where}: no layer given")
    resolved: list[int] = []
    for layer in seq:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise ValueError(f"{where}: layers must be ints, got {layer!r}")
        ll = int(layer)
        if not -n_layers <= ll < n_layers:
            raise ValueError(f"{where}: layer {ll} out of range for a model with {n_layers} layers")
        resolved.append(ll % n_layers)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{where}: repeated layers {list(seq)}")
    return tuple(resolved)


def parse_layers(text: str, where: str = "layers") -> slice | tuple[int, ...]:
    """Parse the one layer syntax of the CLI and config files.

    ``"12:16"`` -> ``slice(12, 16)`` (stop-exclusive, like Python and the paper's code);
    ``"-4:"`` -> ``slice(-4, None)``; ``"3"`` -> ``(3,)``; ``"1,5,-1"`` -> ``(1, 5, -1)``;
    ``"all"`` -> ``slice(None)``.

    Example:
        >>> parse_layers("46:54")
        slice(46, 54, None)
        >>> parse_layers("1,5,-1")
        (1, 5, -1)
    """
    t = text.strip()
    if t == "all":
        return slice(None)
    try:
        if ":" in t:
            parts = [int(p) if p.strip() else None for p in t.split(":")]
            if len(parts) > 3 or (parts[-1] == 0 and len(parts) == 3):
                raise ValueError
            return slice(*parts)
        out = tuple(int(p) for p in t.split(","))
    except ValueError:
        raise ValueError(
            f"{where}: cannot parse {text!r}; use start:stop (stop-exclusive), a single layer, "
            "a comma list such as 1,5,-1, or 'all'"
        ) from None
    return out


def layer_device(model: Model, layer: int) -> torch.device:
    """Device holding block ``layer``'s weights (differs per layer when a model is split over
    several GPUs with a ``device_map``); ``model.cfg.device`` when it cannot be told.

    A block offloaded by accelerate (``"cpu"``/``"disk"`` in the ``device_map``) keeps its
    weights on the ``meta`` device between forwards; its execution device (where its
    activations live) is the answer then."""
    try:
        block = model.blocks[layer]
    except (AttributeError, IndexError, TypeError):
        return torch.device(model.cfg.device)
    for mod in (block, getattr(block, "original_component", None)):
        dev = getattr(getattr(mod, "_hf_hook", None), "execution_device", None)
        if dev is not None:
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    for param in block.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device(model.cfg.device)


def parse_cap_layers(
    text: str, stored: Sequence[int], n_model_layers: int | None = None
) -> list[int]:
    """Cap layers from :func:`parse_layers` syntax: ``"all"`` (every stored layer); ``"21:26"``
    (stop excluded, as in Python and the public ids); ``"-4:"``; ``"21,23"``. Negative layers
    count from ``n_model_layers`` (default: the last stored layer + 1).

    Example:
        >>> parse_cap_layers("-2:", range(10))
        [8, 9]
        >>> parse_cap_layers("all", [3, 4])
        [3, 4]
    """
    if text.strip() == "all":
        return list(stored)
    n = n_model_layers if n_model_layers is not None else max(stored) + 1
    return list(resolve_layers(parse_layers(text, "--cap-layers"), n, "--cap-layers"))
