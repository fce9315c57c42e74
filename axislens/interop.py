"""Take a direction or a cap to other tools: steering-vectors, repeng, llama.cpp, the public
assistant-axis capping configs. Model-free; no TransformerLens; each library imports lazily.

Layer convention. Row ``l`` of a ``resid_post`` :class:`~axislens.directions.Direction` lives at
TransformerLens' ``blocks.{l}.hook_resid_post``: the output of Hugging Face decoder layer ``l``
(``model.model.layers[l]``, ``hidden_states[l + 1]``). Every target below adds its vector to the
output of decoder layer ``l`` under the same index, so ``l`` is kept as is:

- steering-vectors: ``SteeringVector.layer_activations[l]`` with ``layer_type="decoder_block"``
  (a forward hook adding ``multiplier * vector`` to ``model.model.layers[l]``'s output);
- repeng: ``ControlVector.directions[l]`` (``ControlModel`` adds ``coeff * direction`` to
  ``model.model.layers[l]``'s output);
- llama.cpp: the GGUF tensor ``direction.{l}`` (added to the output of layer ``l``, 0-based, as
  ``build_cvec(cur, il)`` at the end of each layer; ``direction.0`` is refused by llama.cpp, whose
  buffer has no slot for layer 0).

Example:
    >>> import torch
    >>> from axislens.directions import Direction
    >>> axis = Direction(torch.ones(4, 8), method="mean_diff")
    >>> sorted(control_vector_arrays(axis, layers=[1, 2], coeff=-2.0))
    [1, 2]
"""

from __future__ import annotations

import math
import numbers
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from axislens.extras import require
from axislens.pt_files import capping_config, save_capping_config

if TYPE_CHECKING:
    from axislens.directions import Direction

__all__ = [
    "capping_config",
    "control_vector_arrays",
    "export_gguf",
    "save_capping_config",
    "to_repeng",
    "to_steering_vectors",
]

Layers = int | Sequence[int] | slice | range | None
GGUF_ARCH = "controlvector"


def _rows(direction: Direction, layers: Layers, what: str) -> list[int]:
    """The rows of ``direction`` selected by ``layers`` (``None``: every non-zero row)."""
    n = direction.n_layers
    if direction.hook != "resid_post":
        raise ValueError(
            f"{what} adds to decoder-layer outputs (resid_post); this direction lives at "
            f"{direction.hook!r}"
        )
    if layers is None:
        out = [layer for layer in range(n) if bool(direction.vectors[layer].abs().sum() > 0)]
        if not out:
            raise ValueError(f"{what}: the direction is zero at every layer")
        return out
    if isinstance(layers, slice):
        out = list(range(n)[layers])
    elif isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        out = [int(layers)]
    elif isinstance(layers, (Sequence, range)) and not isinstance(layers, (str, bytes)):
        out = []
        for x in layers:
            if isinstance(x, bool) or not isinstance(x, numbers.Integral):
                raise ValueError(f"{what}: layers must be ints, got {x!r}")
            out.append(int(x))
    else:
        raise ValueError(f"{what}: layers must be an int, ints, a slice or a range, got {layers!r}")
    if not out:
        raise ValueError(f"{what}: layers {layers!r} select no layer of a {n}-layer direction")
    resolved = []
    for layer in out:
        if not -n <= layer < n:
            raise ValueError(f"{what}: layer {layer} out of range for a {n}-layer direction")
        resolved.append(layer % n)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{what}: repeated layers {out}")
    return resolved


def _coeff(coeff: Any, what: str) -> float:
    if isinstance(coeff, bool) or not isinstance(coeff, numbers.Real):
        raise ValueError(f"{what}: coeff must be a number, got {coeff!r}")
    if not math.isfinite(float(coeff)):
        raise ValueError(f"{what}: coeff must be finite, got {coeff!r}")
    return float(coeff)


def _scaled(direction: Direction, layer: int, coeff: float) -> torch.Tensor:
    """``coeff * v_l`` computed in float32, as the :class:`~axislens.interventions.Add` kernel
    computes it for a float32 model (so the exported vector is the one axislens adds)."""
    return (coeff * direction.vectors[layer]).clone()


def to_steering_vectors(direction: Direction, layers: Layers = None, coeff: float = 1.0) -> Any:
    """A ``steering_vectors.SteeringVector`` adding ``coeff * v_l`` to decoder layer ``l``'s output.

    ``with sv.apply(hf_model):`` (``multiplier=1``) then does what
    ``axislens.steer(model, direction, coeff, layers)`` does on the bridge. ``layers=None`` takes
    every non-zero row.

    Example:
        Needs a real model (not run by the doctest suite).

        >>> sv = to_steering_vectors(axis, layers=range(12, 16), coeff=-4.0)  # doctest: +SKIP
        >>> with sv.apply(hf_model):  # doctest: +SKIP
        ...     out = hf_model.generate(**inputs)
    """
    what = "to_steering_vectors"
    c = _coeff(coeff, what)
    rows = _rows(direction, layers, what)
    try:
        from steering_vectors import SteeringVector
    except ImportError as exc:
        raise ImportError(
            f"to_steering_vectors needs steering-vectors: pip install steering-vectors ({exc})"
        ) from exc
    acts = {layer: _scaled(direction, layer, c) for layer in rows}
    return SteeringVector(layer_activations=acts, layer_type="decoder_block")


def control_vector_arrays(
    direction: Direction, layers: Layers = None, coeff: float = 1.0
) -> dict[int, np.ndarray]:
    """``{l: coeff * v_l}`` as float32 numpy arrays: the directions of a repeng ``ControlVector``
    and the ``direction.{l}`` tensors of a llama.cpp control-vector GGUF."""
    what = "control vector"
    c = _coeff(coeff, what)
    return {
        layer: _scaled(direction, layer, c).numpy().astype(np.float32)
        for layer in _rows(direction, layers, what)
    }


def _model_hint(direction: Direction, model_type: str | None) -> str:
    if model_type is not None:
        if not isinstance(model_type, str):
            raise ValueError(f"model_type must be a string, got {model_type!r}")
        return model_type
    prov = direction.provenance
    for key in ("model_type", "architecture", "model_id", "model"):
        if isinstance(prov.get(key), str) and prov[key]:
            return str(prov[key])
    return "unknown"


def to_repeng(
    direction: Direction, layers: Layers = None, coeff: float = 1.0, model_type: str | None = None
) -> Any:
    """A ``repeng.ControlVector`` with ``directions[l] = coeff * v_l`` (float32).

    ``ControlModel(hf_model, layers).set_control(cv, 1.0)`` adds them to the decoder layers'
    outputs. ``model_type`` (repeng's model hint) defaults to the direction's provenance
    ``model_type``/``model_id``, else ``"unknown"``.

    Example:
        Needs repeng, which imports only with numpy<2 (not run by the doctest suite).

        >>> cv = to_repeng(axis, layers=range(12, 16), coeff=-4.0)  # doctest: +SKIP
        >>> sorted(cv.directions)  # doctest: +SKIP
        [12, 13, 14, 15]
    """
    arrays = control_vector_arrays(direction, layers, coeff)
    hint = _model_hint(direction, model_type)
    try:
        from repeng import ControlVector
    except AttributeError as exc:  # repeng 0.4.0 annotates with np.float_, gone in numpy 2
        raise ImportError(
            f"repeng does not import with numpy {np.__version__} ({exc}); it needs numpy<2"
        ) from exc
    except ImportError as exc:
        raise ImportError(f"to_repeng needs repeng: pip install repeng ({exc})") from exc
    return ControlVector(model_type=hint, directions=arrays)


def export_gguf(
    direction: Direction,
    path: str | os.PathLike[str],
    layers: Layers = None,
    coeff: float = 1.0,
    model_type: str | None = None,
) -> Path:
    """Write a llama.cpp control vector (``.gguf``) in the layout ``repeng.ControlVector.
    export_gguf`` writes: architecture ``controlvector``, ``controlvector.model_hint``,
    ``controlvector.layer_count`` and one float32 tensor ``direction.{l}`` per layer.

    llama.cpp adds ``strength * direction.{l}`` to the output of layer ``l`` (``llama-cli
    --control-vector-scaled file.gguf 1.0``). It refuses ``direction.0``, so ``layers=None``
    takes every non-zero row from 1 on, and an explicit layer 0 raises. The write is atomic.

    Example:
        >>> export_gguf(axis, "axis.gguf", layers=range(12, 16), coeff=-4.0)
        PosixPath('axis.gguf')
    """
    gguf = require("gguf", "embedded", "the llama.cpp control-vector export")

    path = Path(path)
    what = "export_gguf"
    if layers is None:
        layers = [r for r in _rows(direction, None, what) if r != 0]
        if not layers:
            raise ValueError(f"{what}: the direction is zero at every layer but 0")
    arrays = control_vector_arrays(direction, layers, coeff)
    if 0 in arrays:
        raise ValueError(f"{what}: llama.cpp control vectors cannot hold layer 0 (direction.0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", _model_hint(direction, model_type))
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(arrays))
        for layer, array in arrays.items():
            writer.add_tensor(f"direction.{layer}", array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
