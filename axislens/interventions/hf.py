"""Steer, ablate and cap a plain Hugging Face ``transformers`` model, without TransformerLens.

The same typed ops and compiled kernels as the bridge path (:func:`axislens.interventions.attach.
compile_kernels`), attached as PyTorch hooks on the decoder layers (``model.model.layers[l]`` for
llama, qwen2, gemma2 and most decoder-only models; found by :func:`decoder_layers`). Layer ``l``
here is TransformerLens' block ``l``:

- ``resid_post`` (default): the output of decoder layer ``l`` (``blocks.{l}.hook_resid_post``,
  HF ``hidden_states[l + 1]``), edited by a forward hook;
- ``resid_pre``: its input (``blocks.{l}.hook_resid_pre``), edited by a forward pre-hook.

Positions (:class:`~axislens.interventions.operations.Prompt`, ``Response``, ...) follow the same
rules as :func:`axislens.intervene`, KV-cached generation included. Hooks are removed in
``finally``; the model's weights and modules are never changed. Importing this module does not
import TransformerLens.

Example:
    Needs a real model (not run by the doctest suite).

    >>> from transformers import AutoModelForCausalLM  # doctest: +SKIP
    >>> from axislens import hf  # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> with hf.steer(model, Direction.load("axis.safetensors"), -4.0, layers=slice(12, 16)):  # doctest: +SKIP
    ...     out = model.generate(**inputs)
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from axislens.directions import CapConfig, CeilingCap, Direction
from axislens.interventions.attach import (
    Intervention,
    _hook,
    _Tracker,
    cap_intervention,
    compile_kernels,
)
from axislens.interventions.operations import Ablate, Add, All, Positions
from axislens.model.layers import LayerSpec

__all__ = ["ablate", "cap", "decoder_layers", "intervene", "steer"]

HF_HOOKS = ("resid_post", "resid_pre")
_LAYER_LIST_NAMES = ("layers", "h", "blocks", "layer")


def _n_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None)
    return int(n) if isinstance(n, int) else None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a ``transformers`` causal LM, in order.

    ``model.model.layers`` (llama, qwen2, gemma2, mistral, ...), else the one ``nn.ModuleList``
    named ``layers``/``h``/``blocks`` whose length is ``config.num_hidden_layers`` (the text
    model's, so a vision tower is never picked). Raises naming the model class when none or
    several match.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> len(decoder_layers(hf_model)) == hf_model.config.num_hidden_layers  # doctest: +SKIP
        True
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"axislens.hf needs a torch nn.Module, got {type(model).__name__}")
    if hasattr(model, "original_model") and hasattr(model, "hook_dict"):
        raise ValueError(
            "axislens.hf is for plain transformers models; this is a TransformerBridge "
            "(use axislens.steer / ablate / cap, or pass model.original_model)"
        )
    n = _n_layers(model)
    inner = getattr(model, "model", None)
    direct = getattr(inner, "layers", None)
    if isinstance(direct, nn.ModuleList) and (n is None or len(direct) == n):
        return direct
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList)
        and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES
        and (n is None or len(m) == n)
        and not any(part in name for part in ("vision", "visual", "encoder", "audio"))
    ]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(name for name, _ in found)})"
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: {what} candidate "
            f"nn.ModuleList with {n} layers"
        )
    return found[0][1]


def _device(layer: nn.Module, fallback: torch.device) -> torch.device:
    try:
        return next(layer.parameters()).device
    except StopIteration:
        return fallback


def _model_dtype(model: nn.Module) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _hidden_size(model: nn.Module, layers: nn.ModuleList) -> int:
    config = getattr(model, "config", None)
    text = (
        config.get_text_config()
        if config is not None and hasattr(config, "get_text_config")
        else config
    )
    d = getattr(text, "hidden_size", None)
    if isinstance(d, int):
        return d
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if isinstance(emb, nn.Embedding):
        return int(emb.embedding_dim)
    raise ValueError(
        f"cannot tell the hidden size of {type(model).__name__} (no config.hidden_size)"
    )


def _post_hook(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A module forward hook editing the layer's hidden states (a tensor or a tuple's first)."""

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        h = output[0] if isinstance(output, tuple) else output
        new = fn(h, None)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def _pre_hook(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A forward pre-hook (with kwargs) editing the layer's input hidden states."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and torch.is_tensor(args[0]):
            new = fn(args[0], None)
            return None if new is None else ((new, *args[1:]), kwargs)
        h = kwargs.get("hidden_states")
        if not torch.is_tensor(h):
            raise ValueError(f"{type(module).__name__} was called without hidden_states")
        new = fn(h, None)
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


@contextlib.contextmanager
def intervene(
    model: nn.Module, *interventions: Intervention, prompt_len: int | None = None
) -> Iterator[nn.Module]:
    """Attach ``interventions`` to a plain ``transformers`` model for the ``with`` block.

    The plain-HF twin of :func:`axislens.intervene`: same validation (nothing is attached if one
    intervention is wrong), same kernels, same position rules; hooks ``resid_post`` and
    ``resid_pre`` only. Yields the model; every hook is removed in ``finally``.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> with intervene(hf_model, Intervention(Ablate(), axis, layers=[10])):  # doctest: +SKIP
        ...     logits = hf_model(ids).logits
    """
    if prompt_len is not None and (isinstance(prompt_len, bool) or operator.index(prompt_len) < 0):
        raise ValueError(f"prompt_len must be a non-negative int, got {prompt_len!r}")
    layers = decoder_layers(model)
    n_layers, d_model = len(layers), _hidden_size(model, layers)
    dtype = torch.promote_types(_model_dtype(model), torch.float32)
    fallback = next(model.parameters()).device
    tracker = _Tracker(prompt_len)
    plan: list[tuple[str, int, Callable[..., Any]]] = []
    for k, iv in enumerate(interventions):
        if not isinstance(iv, Intervention):
            raise ValueError(
                f"intervention #{k}: expected an Intervention, got {type(iv).__name__}"
            )
        where = f"intervention #{k} ({type(iv.op).__name__})"
        if iv.hook not in HF_HOOKS:
            raise ValueError(
                f"{where}: axislens.hf supports hooks {list(HF_HOOKS)}, got {iv.hook!r} "
                "(use the TransformerLens bridge for the others)"
            )
        kernels = compile_kernels(
            iv, n_layers, d_model, dtype, lambda i: _device(layers[i], fallback), where
        )
        assert iv.hook is not None
        plan += [
            (iv.hook, layer, _hook(kernel, iv.positions, tracker)) for layer, kernel in kernels
        ]
    handles: list[Any] = []
    try:
        if any(not isinstance(iv.positions, All) for iv in interventions):
            handles.append(model.register_forward_pre_hook(tracker.pre_hook, with_kwargs=True))
        for hook, layer, fn in plan:
            if hook == "resid_post":
                handles.append(layers[layer].register_forward_hook(_post_hook(fn)))
            else:
                handles.append(
                    layers[layer].register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
                )
        yield model
    finally:
        for handle in handles:
            handle.remove()


def steer(
    model: nn.Module,
    direction: Direction,
    coeff: float | Sequence[float],
    layers: LayerSpec,
    *,
    hook: str | None = None,
    positions: Positions | None = None,
    norm_units: torch.Tensor | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[nn.Module]:
    """``with hf.steer(model, axis, -4.0, slice(12, 16)):`` adds ``coeff * v`` at those layers'
    outputs (the twin of :func:`axislens.steer`)."""
    iv = Intervention(
        Add(coeff),
        direction,
        layers,
        hook=hook,  # type: ignore[arg-type]
        positions=positions or All(),
        norm_units=norm_units,
    )
    return intervene(model, iv, prompt_len=prompt_len)


def ablate(
    model: nn.Module,
    direction: Direction,
    layers: LayerSpec,
    coeff: float | Sequence[float] = 0.0,
    *,
    hook: str | None = None,
    positions: Positions | None = None,
    norm_units: torch.Tensor | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[nn.Module]:
    """``with hf.ablate(model, axis, [10]):`` projects the direction out (adds ``coeff * v``
    back); the twin of :func:`axislens.ablate`."""
    iv = Intervention(
        Ablate(coeff),
        direction,
        layers,
        hook=hook,  # type: ignore[arg-type]
        positions=positions or All(),
        norm_units=norm_units,
    )
    return intervene(model, iv, prompt_len=prompt_len)


def cap(
    model: nn.Module,
    cap_config: CapConfig | CeilingCap,
    *,
    positions: Positions | None = None,
    prompt_len: int | None = None,
) -> contextlib.AbstractContextManager[nn.Module]:
    """``with hf.cap(model, cap_config):`` applies an activation cap (floor convention; a public
    :class:`~axislens.directions.CeilingCap` is converted); the twin of :func:`axislens.cap`."""
    iv = cap_intervention(cap_config, n_layers=len(decoder_layers(model)), positions=positions)
    return intervene(model, iv, prompt_len=prompt_len)
