"""Known models: the layers the paper's public code uses, and the short names its prompts use.

One table, :data:`KNOWN_MODELS`, model-free (no TransformerLens): for each model the public
assistant-axis code configures, its depth, its *target layer* (``MODEL_CONFIGS[...]
["target_layer"]`` in ``assistant_axis/models.py``: where the axis and persona space are read), its
*cap window* (the capped layers of the shipped capping configs; the public ids
``layers_46:54`` / ``layers_56:72`` are stop-exclusive) and its *short name* (what ``{model_name}``
in the default prompts renders to). The three embedded models have no public entry: their rows use
the public code's own fallback for the target (``n_layers // 2``) and axislens' depth rule for the
cap window, and say so in ``source``.

For any other model, :func:`target_layer` and :func:`cap_window` fall back to the same rules and
report ``"fallback"``; :func:`model_short_name` follows the public ``get_config`` inference
(``gemma`` -> ``Gemma``, ``qwen`` -> ``Qwen``, ``llama`` -> ``Llama``, ``mistral`` -> ``Mistral``,
else the first ``-`` part of the last path component).

Example:
    >>> cap_window("Qwen/Qwen3-32B", 64)
    ((46, 47, 48, 49, 50, 51, 52, 53), 'public capping config layers_46:54')
    >>> target_layer("google/gemma-2-27b-it", 46)[0], model_short_name("meta-llama/Llama-3.3-70B-Instruct")
    (22, 'Llama')
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CAP_DEPTH",
    "KNOWN_MODELS",
    "KnownModel",
    "cap_window",
    "default_cap_layers",
    "depth_cap_layers",
    "job_layers",
    "known_model",
    "model_short_name",
    "target_layer",
]

CAP_DEPTH = (0.70, 0.85)
"""Fallback cap window as a fraction of model depth (stored layers ``l`` with
``0.70 <= l / n_layers < 0.85``), an axislens rule read off the two public windows: Qwen3-32B
46-53 of 64 (72-83%) and Llama-3.3-70B 56-71 of 80 (70-89%)."""


def depth_cap_layers(n_layers: int, stored: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The depth-rule window (:data:`CAP_DEPTH`) among ``stored`` (default every layer); at
    least the one layer nearest 77.5% of the depth."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    pool = tuple(range(n_layers)) if stored is None else tuple(stored)
    if not pool:
        raise ValueError("depth_cap_layers needs at least one stored layer")
    lo, hi = CAP_DEPTH
    chosen = tuple(la for la in pool if lo <= la / n_layers < hi)
    return chosen or (min(pool, key=lambda la: abs(la / n_layers - (lo + hi) / 2)),)


@dataclass(frozen=True, slots=True)
class KnownModel:
    """One row of :data:`KNOWN_MODELS`; ``cap_layers`` is empty where no window is known."""

    model_id: str
    n_layers: int
    short_name: str
    target_layer: int
    cap_layers: tuple[int, ...]
    source: str
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for layer in (self.target_layer, *self.cap_layers):
            if not 0 <= layer < self.n_layers:
                raise ValueError(
                    f"KnownModel {self.model_id}: layer {layer} outside 0..{self.n_layers - 1}"
                )


_PUBLIC = "public assistant-axis MODEL_CONFIGS"
_EMBEDDED = (
    "embedded; no public entry: target n_layers // 2 (public fallback), cap window by depth rule"
)

KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("google/gemma-2-27b-it", 46, "Gemma", 22, (), _PUBLIC + "; no public cap window"),
    KnownModel(
        "Qwen/Qwen3-32B",
        64,
        "Qwen",
        32,
        tuple(range(46, 54)),
        _PUBLIC + "; cap window: public capping config layers_46:54",
    ),
    KnownModel(
        "meta-llama/Llama-3.3-70B-Instruct",
        80,
        "Llama",
        40,
        tuple(range(56, 72)),
        _PUBLIC + "; cap window: public capping config layers_56:72",
    ),
    KnownModel("google/gemma-2-9b-it", 42, "Gemma", 21, (), _PUBLIC + "; no public cap window"),
    KnownModel("Qwen/Qwen2.5-32B-Instruct", 64, "Qwen", 32, (), _PUBLIC + "; no public cap window"),
    KnownModel("Qwen/Qwen2.5-7B-Instruct", 28, "Qwen", 14, (), _PUBLIC + "; no public cap window"),
    KnownModel(
        "meta-llama/Llama-3.1-8B-Instruct", 32, "Llama", 16, (), _PUBLIC + "; no public cap window"
    ),
    KnownModel(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        30,
        "SmolLM2",
        15,
        depth_cap_layers(30),
        _EMBEDDED,
        ("smollm2-135m-instruct",),
    ),
    KnownModel(
        "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        24,
        "Qwen",
        12,
        depth_cap_layers(24),
        _EMBEDDED,
        ("qwen2.5-coder-0.5b-instruct",),
    ),
    KnownModel(
        "google/gemma-3-270m", 18, "Gemma", 9, depth_cap_layers(18), _EMBEDDED, ("gemma-3-270m",)
    ),
)
"""Target layers and cap windows as the public code gives them (plus the embedded models)."""


def known_model(model_id: str) -> KnownModel | None:
    """The table row of ``model_id`` (a hub id, an embedded name, case-insensitive), or None."""
    key = model_id.strip().lower()
    for m in KNOWN_MODELS:
        if key == m.model_id.lower() or key in m.aliases:
            return m
    return None


def _checked(m: KnownModel, n_layers: int | None) -> KnownModel:
    if n_layers is not None and n_layers != m.n_layers:
        raise ValueError(
            f"{m.model_id} has {m.n_layers} layers in the known-model table, but the model at "
            f"hand has {n_layers}; is this the same model?"
        )
    return m


def model_short_name(model_id: str) -> str:
    """What ``{model_name}`` renders to: the table's short name, else the public inference."""
    m = known_model(model_id)
    if m is not None:
        return m.short_name
    low = model_id.lower()
    for key, name in (
        ("gemma", "Gemma"),
        ("qwen", "Qwen"),
        ("llama", "Llama"),
        ("mistral", "Mistral"),
    ):
        if key in low:
            return name
    return model_id.rstrip("/").split("/")[-1].split("-")[0] or model_id


def target_layer(model_id: str, n_layers: int) -> tuple[int, str]:
    """``(layer, source)``: the table's target layer, else ``n_layers // 2`` (source
    ``"fallback: n_layers // 2"``, the public code's own rule for unknown models)."""
    m = known_model(model_id)
    if m is not None:
        return _checked(m, n_layers).target_layer, m.source
    return n_layers // 2, "fallback: n_layers // 2"


def cap_window(model_id: str, n_layers: int) -> tuple[tuple[int, ...], str]:
    """``(layers, source)``: the known cap window, else the depth rule (source starts with
    ``"fallback"``)."""
    m = known_model(model_id)
    if m is not None and _checked(m, n_layers).cap_layers:
        public = "public capping config" in m.source
        src = m.source.split("cap window: ")[-1] if public else "depth rule (embedded model)"
        return m.cap_layers, src
    why = "no public cap window" if m is not None else "model not in the known-model table"
    lo, hi = CAP_DEPTH
    return (
        depth_cap_layers(n_layers),
        f"fallback: depth rule {lo:.0%}-{hi:.0%} of {n_layers} layers ({why})",
    )


def default_cap_layers(
    stored: Sequence[int], n_model_layers: int, model_id: str | None = None
) -> list[int]:
    """The cap window of ``model_id`` from the known-model table (:func:`cap_window`:
    Qwen3-32B 46-53, Llama-3.3-70B 56-71, ...) when all of it is stored; otherwise, as a
    *fallback* (with a warning saying so), the stored layers at 70%-85% of the model's depth
    (:data:`CAP_DEPTH`; at least the one nearest 77.5%).

    Example:
        >>> default_cap_layers(range(64), 64, "Qwen/Qwen3-32B")
        [46, 47, 48, 49, 50, 51, 52, 53]
    """
    if model_id is not None:
        try:
            window, source = cap_window(model_id, n_model_layers)
        except ValueError as err:  # same name, another depth: not the tabled model
            window, source = (), f"fallback ({err})"
        if not source.startswith("fallback") and set(window) <= set(stored):
            return list(window)
        why = source if source.startswith("fallback") else f"{source}, not all stored"
    else:
        why = "no model id"
    chosen = list(depth_cap_layers(n_model_layers, tuple(stored)))
    warnings.warn(
        f"cap layers {chosen}: depth-rule fallback ({why}); pass cap layers explicitly to override",
        UserWarning,
        stacklevel=2,
    )
    return chosen


def job_layers(n_layers: int, model_id: str = "") -> tuple[int, list[int], int, str]:
    """``(target layer, cap window, measure layer, where they come from)`` for a job on a model
    of ``n_layers``: the known-model table, else the fallbacks (``n_layers // 2``; the depth
    rule). The measure layer (where drift is tracked) is the last capped layer.

    Example:
        >>> job_layers(64, "Qwen/Qwen3-32B")[:3]
        (32, [46, 47, 48, 49, 50, 51, 52, 53], 53)
    """
    try:
        mid, mid_src = target_layer(model_id, n_layers)
        caps, cap_src = cap_window(model_id, n_layers)
    except ValueError as err:  # a tabled name with another depth (e.g. a truncated model)
        mid, mid_src = n_layers // 2, f"fallback: n_layers // 2 ({err})"
        caps, cap_src = cap_window("", n_layers)
    return mid, list(caps), caps[-1], f"target layer: {mid_src}; cap layers: {cap_src}"
