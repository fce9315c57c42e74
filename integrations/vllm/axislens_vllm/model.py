"""Intervention-capable subclasses of vLLM's decoder models.

Each ``*ForCausalLM`` here is vLLM's own class with two additions:

- after construction, every decoder layer that a loaded intervention touches becomes an
  instance of a subclass of its own class (same parameters, same weight names) whose forward
  moves the stream after the block by the kernel of :mod:`axislens_vllm.spec`, on registered
  float32 buffers (``axislens_u``: ``[K, S, d]``, ``axislens_c``: ``[K, 4, S]`` over ``S``
  slots, slot 0 doing nothing);
- before each forward, the token -> slot map (``axislens_slots``, a buffer the layers share) is
  filled from the request routing of :mod:`axislens_vllm.routing` and the batch layout in vLLM's
  forward context. With only a default intervention at all positions the map is constant and
  written once.

A vLLM decoder layer returns ``(hidden, residual)`` whose sum is the stream after the layer, so
the kernel adds its move to ``hidden``. Tokens in slot 0 get an exact zero added.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import nn

from axislens_vllm.spec import (
    ENV_DEBUG,
    NOOP,
    Spec,
    SpecError,
    configured,
    default_name,
    read_spec,
    slot_names,
    static_name,
)

ARCHITECTURES = {
    "LlamaForCausalLM": "vllm.model_executor.models.llama",
    "MistralForCausalLM": "vllm.model_executor.models.mistral",
    "Qwen2ForCausalLM": "vllm.model_executor.models.qwen2",
    "Qwen3ForCausalLM": "vllm.model_executor.models.qwen3",
    "Gemma2ForCausalLM": "vllm.model_executor.models.gemma2",
    "Gemma3ForCausalLM": "vllm.model_executor.models.gemma3",
}
"""The architectures the plugin overrides, and where vLLM defines each."""

_RULE = {"all": 0, "prompt": 1, "response": 2}


def move(
    hidden: torch.Tensor,
    residual: torch.Tensor,
    u: torch.Tensor,
    c: torch.Tensor,
    slots: torch.Tensor,
    fires: torch.Tensor | None = None,
) -> torch.Tensor:
    """``hidden`` moved by the ``K`` entries of each token's slot (``u``: ``[K, S, d]``,
    ``c``: ``[K, 4, S]``, ``slots``: ``[T]``), in float32, entries in order. ``fires``
    (``[S]``, debug mode) counts, per slot, the tokens a cap term (``lo`` or ``hi``) moved."""
    onehot = (slots.unsqueeze(-1) == torch.arange(u.shape[1], device=slots.device)).to(
        torch.float32
    )
    h = hidden.to(torch.float32)
    stream = h + residual.to(torch.float32)
    for k in range(u.shape[0]):
        uk, ck = u[k], c[k]
        p = stream @ uk.T  # [T, S]
        floor, ceiling = torch.relu(ck[2] - p), torch.relu(p - ck[3])
        coef = ck[0] * p + ck[1] + floor - ceiling
        if fires is not None:
            fires += (((floor + ceiling) > 0).to(torch.float32) * onehot).sum(0).to(fires.dtype)
        delta = (coef * onehot) @ uk  # [T, d]; exactly zero in slot 0
        h = h + delta
        stream = stream + delta
    return h.to(hidden.dtype)


def _layer_class(base: type[nn.Module]) -> type[nn.Module]:
    def forward(
        self: Any,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        hidden, residual = base.forward(self, positions, hidden_states, residual, *args, **kwargs)
        slots = self.axislens_slots[: hidden.shape[0]]
        fires = getattr(self, "axislens_fires", None)
        return move(hidden, residual, self.axislens_u, self.axislens_c, slots, fires), residual

    return type(f"Axislens{base.__name__}", (base,), {"forward": forward})


def _specs(n_layers: int, d_model: int) -> list[Spec]:
    specs = [read_spec(path, name) for name, path in sorted(configured().items())]
    for spec in specs:
        spec.check_model(n_layers, d_model)
    return specs


def _tables(
    specs: list[Spec], layer: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``u`` ``[K, S, d]`` and ``c`` ``[K, 4, S]`` of one layer, slot 0 a no-op."""
    k = max(int((s.u[:, layer] != 0).any(dim=-1).sum()) for s in specs) or 1
    d = specs[0].d_model
    u = torch.zeros(k, len(specs) + 1, d)
    c = torch.tensor(NOOP).view(1, 4, 1).repeat(k, 1, len(specs) + 1)
    for s_i, spec in enumerate(specs, start=1):
        rows = [j for j in range(spec.u.shape[0]) if bool((spec.u[j, layer] != 0).any())]
        for k_i, j in enumerate(rows):
            u[k_i, s_i] = spec.u[j, layer]
            c[k_i, :, s_i] = spec.coef[j, layer]
    return u.to(device), c.to(device)


def install(model: nn.Module, vllm_config: Any) -> None:
    """Turn the touched decoder layers of ``model`` (a ``*ForCausalLM``) into intervening ones."""
    config = vllm_config.model_config.hf_config
    config = getattr(config, "text_config", config)
    n_layers, d_model = int(config.num_hidden_layers), int(config.hidden_size)
    specs = _specs(n_layers, d_model)
    inner = model.model
    layers = inner.layers
    start, end = getattr(inner, "start_layer", 0), getattr(inner, "end_layer", len(layers))
    touched = sorted({la for s in specs for la in s.layers if start <= la < end})
    debug = os.environ.get(ENV_DEBUG, "") not in ("", "0")
    dynamic = static_name() is None
    if dynamic:
        _check_dynamic_ok(vllm_config)
    device = next(model.parameters()).device
    max_tokens = int(vllm_config.scheduler_config.max_num_batched_tokens) + 64
    default = default_name()
    fill = slot_names().index(default) + 1 if default is not None else 0
    slots = torch.full((max_tokens,), fill, dtype=torch.long, device=device)
    model.register_buffer("axislens_slots", slots, persistent=False)
    model.axislens_dynamic = dynamic
    model.axislens_rules = torch.tensor([0] + [_RULE[s.positions] for s in specs], device=device)
    for la in touched:
        layer = layers[la]
        layer.__class__ = _layer_class(type(layer))
        u, c = _tables(specs, la, device)
        layer.register_buffer("axislens_u", u, persistent=False)
        layer.register_buffer("axislens_c", c, persistent=False)
        layer.register_buffer("axislens_slots", slots, persistent=False)
        if debug:
            fires = torch.zeros(len(specs) + 1, dtype=torch.long, device=device)
            layer.register_buffer("axislens_fires", fires, persistent=False)
    model.axislens_layers = tuple(touched)


def _check_dynamic_ok(vllm_config: Any) -> None:
    """Per-request routing reads the batch layout each step: refuse set-ups that break it."""
    cache = vllm_config.cache_config
    if getattr(cache, "enable_prefix_caching", False):
        raise SpecError(
            "axislens: per-request interventions (several names, no AXISLENS_VLLM_DEFAULT, or a "
            "prompt/response position rule) need --no-enable-prefix-caching: a cached prefix "
            "computed under one intervention would be reused under another"
        )
    mode = getattr(vllm_config.compilation_config, "cudagraph_mode", None)
    if mode is not None and str(getattr(mode, "name", mode)) != "NONE":
        raise SpecError(
            f"axislens: per-request interventions need CUDA graphs off (--enforce-eager or "
            f"-cc.cudagraph_mode=NONE); this engine has cudagraph_mode={getattr(mode, 'name', mode)}"
        )


def route(model: nn.Module, positions: torch.Tensor) -> None:
    """Fill the token -> slot map for this forward from the batch layout and the routing table."""
    if not getattr(model, "axislens_dynamic", False):
        return
    from vllm.forward_context import get_forward_context, is_forward_context_available

    from axislens_vllm.routing import ROUTES

    n_tokens = positions.shape[-1]
    out = model.axislens_slots
    out[:n_tokens].zero_()
    meta = get_forward_context().attn_metadata if is_forward_context_available() else None
    if isinstance(meta, list):
        meta = meta[0] if meta else None
    if isinstance(meta, dict):
        meta = next(iter(meta.values()), None)
    qsl = getattr(meta, "query_start_loc", None)
    if qsl is None:  # a profiling or warm-up run: nothing to route
        return
    qsl = qsl.to(positions.device)
    n_reqs = qsl.shape[0] - 1
    counts = qsl[1:] - qsl[:-1]
    total = int(qsl[-1])
    slot, plen = ROUTES.tensors(n_reqs, positions.device)
    req = torch.repeat_interleave(torch.arange(n_reqs, device=positions.device), counts)
    tok_slot, tok_plen = slot[req], plen[req]
    pos = positions.reshape(-1, n_tokens)[0][:total]
    rule = model.axislens_rules[tok_slot]
    keep = (rule == 0) | ((rule == 1) & (pos < tok_plen)) | ((rule == 2) & (pos >= tok_plen))
    out[:total] = torch.where(keep, tok_slot, torch.zeros_like(tok_slot))


def fire_counts(model: nn.Module) -> dict[int, dict[str, int]]:
    """Debug mode (``AXISLENS_VLLM_DEBUG=1`` at start): per intervening layer and loaded name,
    the tokens a cap term moved since the engine started (or since :func:`reset_fire_counts`)."""
    names = slot_names()
    out = {}
    for la in getattr(model, "axislens_layers", ()):
        fires = getattr(model.model.layers[la], "axislens_fires", None)
        if fires is None:
            raise SpecError(f"axislens: fire counts need {ENV_DEBUG}=1 when the engine starts")
        counts = fires.tolist()
        out[la] = {name: int(counts[i + 1]) for i, name in enumerate(names)}
    return out


def reset_fire_counts(model: nn.Module) -> None:
    """Zero the debug fire counts."""
    for la in getattr(model, "axislens_layers", ()):
        fires = getattr(model.model.layers[la], "axislens_fires", None)
        if fires is not None:
            fires.zero_()


def update(model: nn.Module, name: str, path: str) -> None:
    """Replace the values of the loaded intervention ``name`` in place (for sweeps through
    ``LLM.apply_model``; reset the prefix cache afterwards). The file may touch only the layers the
    engine started with, with no more entries per layer, and keep its position rule."""
    names = slot_names()
    if name not in names:
        raise SpecError(f"axislens: {name!r} is not loaded; loaded: {names}")
    s_i = names.index(name) + 1
    layers = model.model.layers
    spec = read_spec(path, name)
    first = layers[model.axislens_layers[0]] if model.axislens_layers else None
    spec.check_model(
        len(layers), int(first.axislens_u.shape[-1]) if first is not None else spec.d_model
    )
    if int(model.axislens_rules[s_i]) != _RULE[spec.positions]:
        raise SpecError(f"{path}: position rule {spec.positions!r} differs from the loaded one")
    outside = sorted(set(spec.layers) - set(model.axislens_layers))
    if outside:
        raise SpecError(
            f"{path}: touches layers {outside}, which the engine did not start with "
            f"(it intervenes at {list(model.axislens_layers)}); restart with a file covering them"
        )
    tables = {}
    for la in model.axislens_layers:
        held = layers[la].axislens_u
        u, c = _tables([spec], la, held.device)
        if u.shape[0] > held.shape[0]:
            raise SpecError(
                f"{path}: {u.shape[0]} entries at layer {la}; the engine holds {held.shape[0]}"
            )
        tables[la] = (u, c)
    for la, (u, c) in tables.items():  # checked everything first: no half-updated engine
        layer = layers[la]
        layer.axislens_u[:, s_i].zero_()
        layer.axislens_c[:, :, s_i] = torch.tensor(NOOP, device=u.device).view(1, 4)
        layer.axislens_u[: u.shape[0], s_i] = u[:, 1]
        layer.axislens_c[: u.shape[0], :, s_i] = c[:, :, 1]


def _subclass(arch: str) -> type[nn.Module]:
    base = getattr(importlib.import_module(ARCHITECTURES[arch]), arch)

    def __init__(self: Any, *, vllm_config: Any, prefix: str = "", **kwargs: Any) -> None:
        base.__init__(self, vllm_config=vllm_config, prefix=prefix, **kwargs)
        install(self, vllm_config)

    def forward(
        self: Any, input_ids: Any, positions: torch.Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        route(self, positions)
        return base.forward(self, input_ids, positions, *args, **kwargs)

    return type(arch, (base,), {"__init__": __init__, "forward": forward, "__module__": __name__})


def __getattr__(name: str) -> type[nn.Module]:
    # vLLM's registry imports "axislens_vllm.model:<Arch>" lazily, in the process that loads it.
    if name in ARCHITECTURES:
        cls = _subclass(name)
        globals()[name] = cls
        return cls
    raise AttributeError(name)
