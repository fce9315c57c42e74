"""Import the paper's released artifacts: role/default/trait vectors and capping configs.

(``axislens.paper_artifacts`` until 0.3: "public" meant the paper's public release, not axislens' API.)

Model-free; every file is read with ``torch.load(weights_only=True)`` (numpy float/int scalars
allow-listed for that call only, as the public capping configs store caps as ``np.float64``).

Layouts (the public release of assistant-axis vectors):

- ``role_vectors/<role>.pt``: one file per role, a ``[n_layers, d_model]`` tensor, or a dict
  holding it under ``"vector"`` (the public ``4_vectors.py`` writes ``{"vector", "type",
  "role"}``); :func:`load_role_vectors` returns a :class:`~axislens.analysis.vectors.RoleVectors`-
  like value, :class:`PublicVectors` (names, stacked vectors, provenance with file hashes);
- ``default_vector.pt``: the same, one tensor (:func:`load_default_vector` -> ``Direction``);
- ``trait_vectors/<trait>.pt``: as role vectors (:func:`load_trait_vectors`);
- ``capping_config.pt``: ``{"vectors": {name: {"layer", "vector"}}, "experiments": [{"id",
  "interventions": [{"vector", "cap"}]}]}``. :meth:`CeilingSequence.from_torch` keeps *every*
  capping intervention of an experiment in order, several per layer allowed, and applies them
  at each layer in that order, as the public ``ActivationSteering`` does (each one a ceiling
  ``h <- h - max(0, h·u - cap) u``, ``u = w/|w|``).

Sign check (:func:`check_cap_sign`): the public capping vectors point *away* from the Assistant
(the ceiling caps the role-playing side), so their cosine with an Assistant Axis (default minus
roles) is expected to be negative; a positive cosine means the files or the axis are flipped.

Example:
    Needs the paper's released files (not run by the doctest suite).

    >>> seq = CeilingSequence.from_torch("capping_config.pt", "layers_46:54-p0.25")  # doctest: +SKIP
    >>> check_cap_sign(seq, axis)  # raises if a vector points the wrong way  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch

from axislens import tensor_math as ops
from axislens._types import Float, Tensor, Vec
from axislens.directions import Direction
from axislens.pt_files import (
    file_sha256,
    finite,
    load_plain,
    percentile_from_id,
    read_capping_experiment,
)

__all__ = [
    "CeilingEntry",
    "CeilingSequence",
    "PublicVectors",
    "check_cap_sign",
    "load_default_vector",
    "load_role_vectors",
    "load_trait_vectors",
]

PathLike = str | os.PathLike[str]


def _matrix(path: Path) -> Tensor:
    """The ``[n_layers, d_model]`` tensor of one public vector file (a tensor, or a dict with
    ``"vector"``, or a dict with exactly one tensor)."""
    obj = load_plain(path)
    if isinstance(obj, Mapping):
        tensors = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
        if torch.is_tensor(obj.get("vector")):
            obj = obj["vector"]
        elif len(tensors) == 1:
            obj = next(iter(tensors.values()))
        else:
            raise ValueError(
                f"{path}: dict without a 'vector' tensor and with {len(tensors)} tensors "
                f"({sorted(tensors)[:6]})"
            )
    if not torch.is_tensor(obj) or obj.ndim != 2:
        shape = tuple(obj.shape) if torch.is_tensor(obj) else type(obj).__name__
        raise ValueError(f"{path}: expected a [n_layers, d_model] tensor, got {shape}")
    if not bool(torch.isfinite(obj).all()):
        raise ValueError(f"{path}: the vector has NaN or inf entries")
    return obj.detach().to("cpu", torch.float32)


@dataclass(frozen=True, slots=True, eq=False)
class PublicVectors:
    """Per-name ``[n_layers, d_model]`` vectors read from a public folder, ``[name, layer, d]``."""

    names: tuple[str, ...]
    vectors: Float[Tensor, "name layer d_model"]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    def direction(self, name: str, *, hook: str = "resid_post") -> Direction:
        """One vector as a :class:`Direction` (method ``"imported"``)."""
        if name not in self.names:
            raise KeyError(
                f"no vector named {name!r} (have {len(self.names)}: {self.names[:5]}...)"
            )
        prov = {**dict(self.provenance), "name": name}
        return Direction(
            self.vectors[self.names.index(name)], method="imported", hook=hook, provenance=prov
        )

    def mean(self) -> Float[Tensor, "layer d_model"]:
        """The mean over names (float64), e.g. the public axis's ``role_mean``."""
        return self.vectors.double().mean(0)


def _load_folder(folder: PathLike, what: str) -> PublicVectors:
    root = Path(folder)
    files = sorted(root.glob("*.pt")) if root.is_dir() else []
    if not files:
        raise ValueError(f"{root}: no *.pt files ({what} folder of the public release)")
    mats = [_matrix(f) for f in files]
    for f, m in zip(files, mats, strict=True):
        if m.shape != mats[0].shape:
            raise ValueError(f"{f}: shape {tuple(m.shape)} differs from {files[0].name}'s")
    return PublicVectors(
        names=tuple(f.stem for f in files),
        vectors=torch.stack(mats),
        provenance={
            "import": {
                "folder": str(root),
                "format": f"public {what}/<name>.pt",
                "sha256": {f.name: file_sha256(f) for f in files},
            }
        },
    )


def load_role_vectors(folder: PathLike) -> PublicVectors:
    """The public ``role_vectors/`` folder (one ``<role>.pt`` per role; a ``default.pt`` in it is
    kept under the name ``default``)."""
    return _load_folder(folder, "role_vectors")


def load_trait_vectors(folder: PathLike) -> PublicVectors:
    """The public ``trait_vectors/`` folder (one ``<trait>.pt`` per trait)."""
    return _load_folder(folder, "trait_vectors")


def load_default_vector(path: PathLike, *, hook: str = "resid_post") -> Direction:
    """The public ``default_vector.pt`` (mean of all default responses) as a Direction."""
    p = Path(path)
    m = _matrix(p)
    prov = {
        "import": {"file": p.name, "sha256": file_sha256(p), "format": "public default_vector.pt"}
    }
    return Direction(m, method="imported", hook=hook, provenance=prov)


@dataclass(frozen=True, slots=True, eq=False)
class CeilingEntry:
    """One public capping intervention: ``h <- h - max(0, h·u - threshold) u`` at ``layer``."""

    name: str
    layer: int
    vector: Vec
    threshold: float


@dataclass(frozen=True, slots=True, eq=False)
class CeilingSequence:
    """Ceiling caps in order, several per layer allowed; at a layer they are applied one after
    the other in ``entries`` order, as the public ``ActivationSteering`` (``capping``) does.

    A :class:`~axislens.directions.CapConfig` holds one vector per layer; this holds a public
    experiment exactly, whatever its shape.
    """

    entries: tuple[CeilingEntry, ...]
    percentile: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        if not entries:
            raise ValueError("CeilingSequence needs at least one entry")
        d = entries[0].vector.shape
        fixed = []
        for e in entries:
            v = torch.as_tensor(e.vector).detach().to("cpu", torch.float32)
            if v.shape != d or v.ndim != 1 or not bool(v.abs().sum() > 0):
                raise ValueError(f"CeilingSequence entry {e.name!r}: vector is zero or mis-shaped")
            if isinstance(e.layer, bool) or not isinstance(e.layer, int) or e.layer < 0:
                raise ValueError(f"CeilingSequence entry {e.name!r}: bad layer {e.layer!r}")
            fixed.append(CeilingEntry(e.name, e.layer, v, finite(e.threshold, e.name)))
        object.__setattr__(self, "entries", tuple(fixed))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    __hash__ = None  # type: ignore[assignment]

    @property
    def layers(self) -> tuple[int, ...]:
        """Capped layers, ascending."""
        return tuple(sorted({e.layer for e in self.entries}))

    def at(self, layer: int) -> tuple[CeilingEntry, ...]:
        """The entries of ``layer``, in application order."""
        return tuple(e for e in self.entries if e.layer == layer)

    def apply(self, h: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """Apply every cap of ``layer`` to ``h``, in order (``layer`` must be capped)."""
        here = self.at(layer)
        if not here:
            raise ValueError(
                f"CeilingSequence does not cap layer {layer}; capped: {list(self.layers)}"
            )
        for e in here:
            h = ops.cap_ceiling(h, e.vector, e.threshold)
        return h

    def slots(self) -> list[tuple[dict[int, Vec], dict[int, float]]]:
        """The entries as *slots*: slot ``k`` holds the ``k``-th cap of every layer that has
        one. Applying the slots in order at each layer is the sequential application (the
        layers are independent), so each slot can be attached as one per-layer intervention."""
        out: list[tuple[dict[int, Vec], dict[int, float]]] = []
        for layer in self.layers:
            for k, e in enumerate(self.at(layer)):
                while len(out) <= k:
                    out.append(({}, {}))
                out[k][0][layer] = e.vector
                out[k][1][layer] = e.threshold
        return out

    @classmethod
    def from_torch(
        cls, path: PathLike, experiment: str | int, *, provenance: Mapping[str, Any] | None = None
    ) -> CeilingSequence:
        """One experiment of a public ``capping_config.pt``: every intervention with a ``"cap"``,
        in file order (the others are skipped, as in the public code); caps may be numpy
        scalars. A trailing ``-p<q>`` in the id sets ``percentile = 100 q``."""
        p = Path(path)
        named, exp_id, capped, skipped = read_capping_experiment(p, experiment)
        entries = []
        for it in capped:
            name = it.get("vector")
            layer, w = named[name]
            entries.append(
                CeilingEntry(str(name), layer, w, finite(it["cap"], f"{p}: cap of {name!r}"))
            )
        record = {
            "file": p.name,
            "sha256": file_sha256(p),
            "format": "assistant-axis capping_config.pt",
            "experiment": exp_id,
            "vectors": [e.name for e in entries],
            "skipped_interventions": skipped,
            "public_convention": "ceiling h - max(0, h.u - cap) u, u = w/|w|, in order per layer",
        }
        return cls(
            tuple(entries),
            percentile=percentile_from_id(exp_id),
            provenance={**dict(provenance or {}), "import": record},
        )


def check_cap_sign(
    caps: CeilingSequence,
    axis: Direction,
    *,
    expected: Literal["negative", "positive"] = "negative",
    min_abs: float = 0.0,
) -> dict[str, float]:
    """Cosine of every cap vector with ``axis`` at its layer; raise if one has the wrong sign.

    ``expected="negative"`` (default): public ceiling vectors point away from the Assistant, so
    against an Assistant Axis (default minus roles) their cosine must be ``< -min_abs``. Returns
    ``{"<name>@<layer>": cosine}``.
    """
    if expected not in ("negative", "positive"):
        raise ValueError(f"expected must be 'negative' or 'positive', got {expected!r}")
    out: dict[str, float] = {}
    wrong = []
    for e in caps.entries:
        if e.layer >= axis.n_layers:
            raise ValueError(
                f"cap vector {e.name!r} is at layer {e.layer}; the axis has {axis.n_layers}"
            )
        a = axis.vectors[e.layer].double()
        na = float(torch.linalg.vector_norm(a))
        if na == 0:
            raise ValueError(f"the axis is zero at layer {e.layer} (cap vector {e.name!r})")
        w = e.vector.double()
        cos = float(w @ a) / (float(torch.linalg.vector_norm(w)) * na)
        out[f"{e.name}@{e.layer}"] = cos
        ok = cos < -min_abs if expected == "negative" else cos > min_abs
        if not ok:
            wrong.append(f"{e.name}@{e.layer} ({cos:+.3f})")
    if wrong:
        raise ValueError(
            f"cap vectors with the wrong sign against the axis (expected {expected} cosine): "
            f"{', '.join(wrong[:5])}; the cap file or the axis is flipped"
        )
    return out
