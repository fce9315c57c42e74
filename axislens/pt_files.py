"""The ``.pt`` files axislens reads and writes: ``torch.load`` restricted to plain data, file
hashes for provenance, and the public assistant-axis capping-config layout, read and written in
this one module.

Capping config layout (``assistant_axis.steering.load_capping_config``)::

    {"vectors": {name: {"layer": int, "vector": Tensor[d_model]}, ...},
     "experiments": [{"id": "layers_46:54-p0.25",
                      "interventions": [{"vector": name, "cap": float}, ...]}, ...]}

:meth:`~axislens.directions.CapConfig.from_torch` and
:meth:`~axislens.paper_artifacts.CeilingSequence.from_torch` read it through
:func:`read_capping_experiment`; :func:`save_capping_config` writes it
(:meth:`~axislens.directions.CapConfig.to_torch`). Model-free.

Example:
    >>> percentile_from_id("layers_46:54-p0.25")
    25.0
    >>> finite(2, "cap")
    2.0
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from axislens._types import Tensor
from axislens.store import atomic_write_bytes

if TYPE_CHECKING:
    from axislens.directions import CapConfig

__all__ = [
    "capping_config",
    "file_sha256",
    "finite",
    "load_plain",
    "percentile_from_id",
    "read_capping_experiment",
    "save_capping_config",
]


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the provenance of an imported file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _numpy_scalar_globals() -> list[Any]:
    """The allow-list for numpy scalars (public capping configs store caps as ``np.float64``):
    numpy's scalar reconstructor (under its numpy 2 and numpy 1 names) and the float/int
    dtypes. Nothing else of numpy (no arrays, no object dtypes)."""
    import numpy as np

    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
    dtypes = [
        getattr(np.dtypes, n)
        for n in (
            "Float16DType",
            "Float32DType",
            "Float64DType",
            "Int32DType",
            "Int64DType",
        )
    ]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def load_plain(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, restricted to tensors, plain containers and
    numpy float/int scalars (allow-listed for this call only with ``safe_globals``)."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused it; axislens only imports plain "
            f"tensors, dicts/lists of tensors and numbers, and numpy scalars "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a readable torch.save file ({exc})") from exc


def finite(value: Any, what: str) -> float:
    """``value`` (a number or a one-element tensor) as a float; ``ValueError`` naming ``what``
    unless it is finite."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def percentile_from_id(exp_id: str) -> float | None:
    """``"layers_46:54-p0.25"`` -> 25.0 (public ids give a quantile in [0, 1])."""
    match = re.search(r"-p([0-9]*\.?[0-9]+)$", exp_id)
    q = float(match.group(1)) if match else math.inf
    return round(100 * q, 9) if q <= 1 else (q if q <= 100 else None)


def read_capping_experiment(
    path: Path, experiment: str | int
) -> tuple[dict[Any, tuple[int, Tensor]], str, list[Mapping[str, Any]], int]:
    """Read one experiment of a public ``capping_config.pt``: its named vectors, the experiment
    id, its capping interventions in file order (each naming a known vector), and how many of
    its other interventions were skipped."""
    cfg = load_plain(path)
    if not isinstance(cfg, Mapping) or not {"vectors", "experiments"} <= set(cfg):
        raise ValueError(f"{path}: not a capping config (no 'vectors' and 'experiments')")
    entries = _vector_entries(path, cfg["vectors"])
    exp = _find_experiment(path, cfg["experiments"], experiment)
    exp_id = str(exp.get("id", experiment))
    items = [it for it in exp.get("interventions") or [] if isinstance(it, Mapping)]
    capped = [it for it in items if "cap" in it]
    if not capped:
        raise ValueError(f"{path}: experiment {exp_id!r} has no capping interventions")
    for it in capped:
        if it.get("vector") not in entries:
            raise ValueError(
                f"{path}: experiment {exp_id!r} uses unknown vector {it.get('vector')!r}"
            )
    return entries, exp_id, capped, len(items) - len(capped)


def _find_experiment(path: Path, experiments: Any, experiment: str | int) -> Mapping[str, Any]:
    exps = list(experiments) if isinstance(experiments, (list, tuple)) else []
    if isinstance(experiment, int) and not isinstance(experiment, bool):
        exp = exps[experiment] if -len(exps) <= experiment < len(exps) else None
    else:
        exp = next((e for e in exps if isinstance(e, Mapping) and e.get("id") == experiment), None)
    if not isinstance(exp, Mapping):
        ids = [e.get("id") for e in exps if isinstance(e, Mapping)]
        raise ValueError(
            f"{path}: no experiment {experiment!r}; available ids: {ids[:8]} ({len(ids)})"
        )
    return exp


def _vector_entries(path: Path, vectors: Any) -> dict[Any, tuple[int, Tensor]]:
    """``{name: (layer, vector)}`` from the public ``"vectors"`` dict, validated."""
    if not isinstance(vectors, Mapping) or not vectors:
        raise ValueError(f"{path}: 'vectors' must be a non-empty dict")
    out: dict[Any, tuple[int, Tensor]] = {}
    for name, entry in vectors.items():
        ok = isinstance(entry, Mapping) and torch.is_tensor(entry.get("vector"))
        layer = entry.get("layer") if ok else None
        if not ok or isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(
                f"{path}: vectors[{name!r}] needs an int 'layer' >= 0 and a 'vector' tensor"
            )
        w = entry["vector"].detach().float()
        if w.ndim != 1 or w.shape != next(iter(out.values()), (0, w))[1].shape:
            raise ValueError(
                f"{path}: vectors[{name!r}]['vector'] has shape {tuple(w.shape)}; expected [d_model]"
            )
        out[name] = (layer, w)
    return out


# --------------------------------------------------------------------------- writing


def _experiment_id(cap: CapConfig) -> str:
    layers = sorted(cap.layers)
    if layers == list(range(layers[0], layers[-1] + 1)):
        span = f"{layers[0]}:{layers[-1] + 1}"
    else:
        span = ",".join(str(layer) for layer in cap.layers)
    pct = "" if cap.percentile is None else f"-p{cap.percentile / 100:.10g}"
    return f"layers_{span}{pct}"


def capping_config(cap: CapConfig, experiment_id: str | None = None) -> dict[str, Any]:
    """The cap in the public assistant-axis capping-config layout (the inverse of
    :meth:`~axislens.directions.CapConfig.from_torch`)::

        {"vectors": {"layer_{l}": {"layer": l, "vector": -v_l}, ...},
         "experiments": [{"id": "layers_46:54-p0.25",
                          "interventions": [{"vector": "layer_{l}", "cap": -tau_l}, ...]}]}

    The public code caps from above (``h - max(0, h·u - cap) u``, ``u = w/|w|``): the floor over
    ``(v, tau)`` is exactly the ceiling over ``(w, cap) = (-v, -tau)``. ``"vectors"`` holds every
    non-zero row of the direction (so importing restores it), the experiment's interventions the
    capped layers in order. Plain tensors, floats and strings only: loadable with
    ``torch.load(..., weights_only=True)``.
    """
    d = cap.direction
    if d.hook != "resid_post":
        raise ValueError(
            f"the public capping configs act on decoder-layer outputs (resid_post); this cap's "
            f"direction lives at {d.hook!r}"
        )
    nonzero = [layer for layer in range(d.n_layers) if bool(d.vectors[layer].abs().sum() > 0)]
    rows = sorted({*cap.layers, *nonzero})
    vectors = {
        f"layer_{layer}": {"layer": layer, "vector": (-d.vectors[layer]).clone()} for layer in rows
    }
    interventions = [
        {"vector": f"layer_{layer}", "cap": -tau}
        for layer, tau in zip(cap.layers, cap.thresholds, strict=True)
    ]
    exp_id = _experiment_id(cap) if experiment_id is None else str(experiment_id)
    return {"vectors": vectors, "experiments": [{"id": exp_id, "interventions": interventions}]}


def save_capping_config(
    cap: CapConfig, path: str | os.PathLike[str], experiment_id: str | None = None
) -> Path:
    """``torch.save`` :func:`capping_config` to ``path`` (atomic). Read it back with
    ``CapConfig.from_torch(path, 0)`` or the public ``load_capping_config``."""
    path = Path(path)
    obj = capping_config(cap, experiment_id)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
