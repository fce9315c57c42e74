"""Per-layer directions in the residual stream, and activation caps along them.

:class:`Direction` holds one vector per layer (``[layer, d_model]``, float32 on the CPU) with the
method that produced it, the hook it lives at and a JSON-able provenance record. It saves to one
safetensors file whose header carries the metadata; nothing of ours is ever pickled.

:class:`CapConfig` is an activation cap in axislens' **floor** convention (docs/concepts.md): at each
capped layer ``l``, ``h <- h - v̂_l min(h·v̂_l - tau_l, 0)`` with ``v̂_l`` the unit direction, so
the projection (higher = more Assistant-like) is raised to ``tau_l`` when it falls below.
:class:`CeilingCap` is the public assistant-axis code's form of the same cap,
``h <- h - max(0, h·u - c) u`` with ``u`` the unit of a vector ``w``; a floor over ``(v, tau)`` is
exactly a ceiling over ``(w, c) = (-v, -tau)``, and :meth:`CapConfig.to_ceiling` /
:meth:`CapConfig.from_ceiling` convert.

Example:
    >>> import torch
    >>> d = Direction(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), method="mean_diff")
    >>> d.n_layers, d.d_model
    (2, 2)
    >>> d.unit(0)
    tensor([0.6000, 0.8000])
    >>> d.project(torch.tensor([[1.0, 1.0]]), layer=1)
    tensor([1.])
"""

from __future__ import annotations

import functools
import json
import operator
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _safetensors_bytes

from axislens import tensor_math as ops
from axislens._types import Float, LayerVecs, Tensor, Vec
from axislens.display import compact_repr, html_summary
from axislens.pt_files import (
    file_sha256,
    finite,
    load_plain,
    percentile_from_id,
    read_capping_experiment,
)
from axislens.store import atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HOOKS", "CapConfig", "CeilingCap", "Direction", "HookName", "check_hook"]

HookName = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
"""The per-block hook points axislens reads and writes (``blocks.{layer}.hook_{name}``)."""

HOOKS: tuple[str, ...] = get_args(HookName)
"""The names of :data:`HookName`, in order (for ``--help`` texts and error messages)."""
"""Per-block hook a direction lives at: ``blocks.{l}.hook_{name}`` in TransformerLens."""

DIRECTION_FORMAT = "axislens.direction"
CAP_FORMAT = "axislens.cap"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=1)
def axislens_version() -> str:
    """The axislens version (:mod:`axislens.version`)."""
    from axislens.version import __version__

    return __version__


def _json_mapping(value: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    """A read-only, JSON-normalised copy of ``value`` (tuples become lists, keys strings)."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (finite numbers only): {exc}") from exc
    return MappingProxyType(json.loads(text))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def check_hook(hook: str, where: str = "") -> HookName:
    """``hook`` if it is a :data:`HookName`, else ``ValueError`` naming ``where`` (the field or
    flag it came from) and the hook names; the one hook validator.

    Example:
        >>> check_hook("resid_post")
        'resid_post'
        >>> check_hook("resid", "--hooks")
        Traceback (most recent call last):
        ValueError: --hooks: unknown hook 'resid'; expected one of resid_pre, resid_mid, resid_post, attn_out, mlp_out
    """
    if hook not in HOOKS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown hook {hook!r}; expected one of {', '.join(HOOKS)}")
    return cast("HookName", hook)


# --------------------------------------------------------------------------- Direction


@dataclass(frozen=True, slots=True, eq=False)
class Direction:
    """One vector per layer, e.g. the Assistant Axis ``mean(default) - mean(roles)``.

    Vectors are stored raw (not normalised) as float32 on the CPU, cloned from the input so the
    caller's tensor is never aliased. Rows may be zero (e.g. layers an imported cap leaves
    undefined); :meth:`unit` then raises for that layer.

    Fields:
        vectors: ``[layer, d_model]`` finite values.
        method: how it was made (``"mean_diff"``, ``"pca"``, ``"probe"``, ``"trait"``,
            ``"imported"``, ...).
        hook: the per-block hook it lives at (:data:`HookName`).
        provenance: JSON-able record (model id/revision, weight processing, chat-template and
            prompt-set hashes, roles and counts, ...); stored as a read-only normalised copy.

    Example:
        >>> d = Direction(torch.ones(3, 4), method="mean_diff", provenance={"model": "tiny"})
        >>> d.norms()
        tensor([2., 2., 2.])
        >>> d.negated().vectors[0, 0].item()
        -1.0
    """

    vectors: LayerVecs
    method: str
    hook: str = "resid_post"
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.vectors
        if not torch.is_tensor(v):
            raise TypeError(f"Direction.vectors must be a torch.Tensor, got {type(v).__name__}")
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(
                f"Direction.vectors must have shape [n_layers, d_model], got {tuple(v.shape)}"
            )
        if v.is_complex() or v.dtype == torch.bool:
            raise TypeError(f"Direction.vectors must be real-valued, got dtype {v.dtype}")
        stored = v.detach().to(device="cpu", dtype=torch.float32).clone()
        for name, t in (("", v.detach()), (" after conversion to float32", stored)):
            bad = ~torch.isfinite(t).all(dim=1).cpu()
            if bool(bad.any()):
                layer = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"Direction.vectors has non-finite values (NaN/inf){name} at layer {layer}"
                )
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"Direction.method must be a non-empty string, got {self.method!r}")
        check_hook(self.hook)
        object.__setattr__(self, "vectors", stored)
        object.__setattr__(
            self, "provenance", _json_mapping(self.provenance, "Direction.provenance")
        )

    # ---- basic properties

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Direction):
            return NotImplemented
        return (
            self.method == other.method
            and self.hook == other.hook
            and self.vectors.shape == other.vectors.shape
            and torch.equal(self.vectors, other.vectors)
            and dict(self.provenance) == dict(other.provenance)
        )

    __hash__ = None  # type: ignore[assignment]

    def _facts(self) -> list[tuple[str, Any]]:
        norms = self.norms()
        model = self.provenance.get("model")
        model_id = model.get("model_id") if isinstance(model, Mapping) else model
        return [
            ("method", self.method),
            ("hook", self.hook),
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("norm range", [float(norms.min()), float(norms.max())]),
            ("model", None if model_id is None else str(model_id)),
            ("provenance keys", sorted(self.provenance)),
        ]

    def __repr__(self) -> str:
        return compact_repr("Direction", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("Direction", self._facts(), self.to_pandas(), caption="per-layer norm")

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer: ``layer`` and the vector's ``norm``."""
        import pandas as pd

        return pd.DataFrame({"layer": range(self.n_layers), "norm": self.norms().tolist()})

    def _layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layer must be an int, got {type(layer).__name__}")
        if not 0 <= layer < self.n_layers:
            raise IndexError(
                f"layer {layer} out of range for a Direction with {self.n_layers} layers"
            )
        return layer

    # ---- geometry

    def norms(self) -> Float[Tensor, " layer"]:
        """Euclidean norm of each layer's vector."""
        return torch.linalg.vector_norm(self.vectors.double(), dim=-1).float()

    def unit(self, layer: int) -> Vec:
        """Unit vector ``v̂_l`` at ``layer``; raises if that layer's vector is zero."""
        v = self.vectors[self._layer(layer)].double()
        norm = torch.linalg.vector_norm(v)
        if not bool(norm > 0):
            raise ValueError(f"Direction has a zero vector at layer {layer}; no unit direction")
        return (v / norm).float()

    def units(self) -> LayerVecs:
        """Unit vectors of every layer; raises naming the first zero layer."""
        return torch.stack([self.unit(layer) for layer in range(self.n_layers)])

    def cosine(self, other: Direction) -> Float[Tensor, " layer"]:
        """Per-layer cosine similarity with ``other`` (same shape required)."""
        if not isinstance(other, Direction):
            raise TypeError(f"cosine needs a Direction, got {type(other).__name__}")
        if other.vectors.shape != self.vectors.shape:
            raise ValueError(
                f"cannot compare Directions of shapes {tuple(self.vectors.shape)} and "
                f"{tuple(other.vectors.shape)} ([n_layers, d_model])"
            )
        a, b = self.vectors.double(), other.vectors.double()
        na, nb = torch.linalg.vector_norm(a, dim=-1), torch.linalg.vector_norm(b, dim=-1)
        zero = ((na == 0) | (nb == 0)).nonzero()
        if zero.numel():
            raise ValueError(f"cosine undefined: zero vector at layer {int(zero[0, 0])}")
        return ((a * b).sum(-1) / (na * nb)).float()

    def project(self, acts: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "..."]:
        """Projection ``acts · v̂_layer`` of each position, in the dtype of ``acts``."""
        self.check_compatible(d_model=int(acts.shape[-1]))
        return ops.projection(acts, self.unit(layer))

    def negated(self) -> Direction:
        """The opposite direction (provenance's ``"negated"`` flag toggled)."""
        prov = dict(self.provenance)
        if prov.pop("negated", False) is not True:
            prov["negated"] = True
        return Direction(-self.vectors, method=self.method, hook=self.hook, provenance=prov)

    def check_compatible(self, *, d_model: int | None = None, n_layers: int | None = None) -> None:
        """Raise ``ValueError`` unless this direction fits a model/store of the given sizes."""
        if d_model is not None and d_model != self.d_model:
            raise ValueError(
                f"Direction has d_model {self.d_model} but the store/model has {d_model}"
            )
        if n_layers is not None and n_layers != self.n_layers:
            raise ValueError(
                f"Direction has {self.n_layers} layers but the store/model has {n_layers}"
            )

    # ---- other tools (axislens.interop; each library imports lazily)

    def to_steering_vectors(self, layers: Any = None, coeff: float = 1.0) -> Any:
        """A ``steering_vectors.SteeringVector`` adding ``coeff * v_l`` at decoder layer ``l``
        (:func:`axislens.interop.to_steering_vectors`)."""
        from axislens.interop import to_steering_vectors

        return to_steering_vectors(self, layers, coeff)

    def to_repeng(
        self, layers: Any = None, coeff: float = 1.0, model_type: str | None = None
    ) -> Any:
        """A ``repeng.ControlVector`` (:func:`axislens.interop.to_repeng`)."""
        from axislens.interop import to_repeng

        return to_repeng(self, layers, coeff, model_type)

    def to_gguf(
        self,
        path: PathLike,
        layers: Any = None,
        coeff: float = 1.0,
        model_type: str | None = None,
    ) -> Path:
        """Write a llama.cpp control-vector ``.gguf`` (:func:`axislens.interop.export_gguf`)."""
        from axislens.interop import export_gguf

        return export_gguf(self, path, layers, coeff, model_type)

    # ---- files

    def save(self, path: PathLike) -> Path:
        """Write one safetensors file: tensor ``vectors`` plus JSON metadata in its header.

        The write is atomic (temporary file in the same folder, then ``os.replace``).
        """
        path = Path(path)
        metadata = {
            "format": DIRECTION_FORMAT,
            "format_version": str(FORMAT_VERSION),
            "method": self.method,
            "hook": self.hook,
            "provenance": json.dumps(dict(self.provenance), sort_keys=True),
            "axislens_version": axislens_version(),
        }
        _write_atomic(path, _safetensors_bytes({"vectors": self.vectors.contiguous()}, metadata))
        return path

    @classmethod
    def load(cls, path: PathLike) -> Direction:
        """Read a file written by :meth:`save` (exactly the same bits and metadata)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such Direction file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("format") != DIRECTION_FORMAT:
                    raise ValueError(
                        f"{path}: not an axislens Direction file (safetensors header has no "
                        f"format={DIRECTION_FORMAT!r}); use Direction.from_torch for plain tensors"
                    )
                version = int(meta.get("format_version", "0"))
                if version > FORMAT_VERSION:
                    raise ValueError(
                        f"{path}: Direction format version {version} is newer than this axislens "
                        f"({axislens_version()}) supports ({FORMAT_VERSION})"
                    )
                if "vectors" not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                    raise ValueError(f"{path}: axislens Direction file has no tensor 'vectors'")
                vectors = f.get_tensor("vectors")
        except SafetensorError as exc:
            raise ValueError(f"{path}: not a safetensors file ({exc})") from exc
        return cls(
            vectors,
            method=meta.get("method", ""),
            hook=meta.get("hook", ""),
            provenance=json.loads(meta.get("provenance", "{}")),
        )

    @classmethod
    def from_torch(
        cls,
        path: PathLike,
        *,
        hook: str = "resid_post",
        provenance: Mapping[str, Any] | None = None,
        method: str = "imported",
    ) -> Direction:
        """Import a ``torch.save``d ``[n_layers, d_model]`` tensor (e.g. the public
        ``assistant_axis.pt``), or a dict holding it under ``"axis"`` or as its only tensor.

        Loaded with ``weights_only=True``; the file name, its sha256 and the key used are
        recorded under ``provenance["import"]``.
        """
        path = Path(path)
        obj = load_plain(path)
        key: str | None = None
        if isinstance(obj, Mapping):
            tensors = {str(k): t for k, t in obj.items() if torch.is_tensor(t)}
            if torch.is_tensor(obj.get("axis")):
                key = "axis"
            elif len(tensors) == 1:
                key = next(iter(tensors))
            else:
                raise ValueError(
                    f"{path}: dict has no 'axis' tensor and {len(tensors)} tensor entries "
                    f"({sorted(tensors)[:8]}); expected 'axis' or a single tensor"
                )
            obj = tensors[key]
        if not torch.is_tensor(obj):
            raise ValueError(
                f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}"
            )
        if obj.ndim != 2:
            raise ValueError(
                f"{path}{f' [{key!r}]' if key else ''}: expected shape [n_layers, d_model], "
                f"got {tuple(obj.shape)}"
            )
        record = {
            "file": path.name,
            "sha256": file_sha256(path),
            "key": key,
            "format": "torch.save",
        }
        prov = {**dict(provenance or {}), "import": record}
        return cls(obj, method=method, hook=hook, provenance=prov)


# --------------------------------------------------------------------------- caps


@dataclass(frozen=True, slots=True, eq=False)
class CeilingCap:
    """A cap in the public assistant-axis code's form (``ActivationSteering`` "capping").

    At ``layers[i]``: ``h <- h - max(0, h·u_i - thresholds[i]) u_i`` with
    ``u_i = vectors[i] / |vectors[i]|`` (the public code divides by ``|w| + 1e-8``, a relative
    difference below 1e-8 for real axes). Convert with :meth:`CapConfig.to_ceiling`.
    """

    vectors: tuple[Vec, ...]
    layers: tuple[int, ...]
    thresholds: tuple[float, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vecs = tuple(
            torch.as_tensor(v).detach().to("cpu", torch.float32).clone() for v in self.vectors
        )
        layers, thresholds = _check_layers_thresholds(self.layers, self.thresholds, "CeilingCap")
        if len(vecs) != len(layers):
            raise ValueError(f"CeilingCap has {len(vecs)} vectors for {len(layers)} layers")
        for layer, v in zip(layers, vecs, strict=True):
            if v.ndim != 1 or v.shape != vecs[0].shape:
                raise ValueError(
                    f"CeilingCap vector at layer {layer} has shape {tuple(v.shape)}, expected [d_model]"
                )
            if not bool(torch.isfinite(v).all()) or not bool(v.abs().sum() > 0):
                raise ValueError(f"CeilingCap vector at layer {layer} is zero or not finite")
        object.__setattr__(self, "vectors", vecs)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(
            self, "provenance", _json_mapping(self.provenance, "CeilingCap.provenance")
        )

    def apply(self, h: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """Apply the cap of ``layer`` (must be one of :attr:`layers`) to ``h``."""
        i = _index_of(self.layers, layer, "CeilingCap")
        return ops.cap_ceiling(h, self.vectors[i], self.thresholds[i])


def _check_layers_thresholds(
    layers: Any, thresholds: Any, what: str
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    layers_t, thresholds_t = tuple(layers), tuple(thresholds)
    out_layers: list[int] = []
    for layer in layers_t:
        try:
            if isinstance(layer, bool):
                raise TypeError
            index = operator.index(layer)
        except TypeError:
            raise ValueError(f"{what}.layers must be ints, got {layer!r}") from None
        if index < 0:
            raise ValueError(f"{what}.layers must be non-negative, got {index}")
        out_layers.append(index)
    if not out_layers:
        raise ValueError(f"{what}.layers is empty; a cap needs at least one layer")
    if len(set(out_layers)) != len(out_layers):
        raise ValueError(f"{what}.layers has repeated layers: {out_layers}")
    if len(thresholds_t) != len(out_layers):
        raise ValueError(f"{what} has {len(thresholds_t)} thresholds for {len(out_layers)} layers")
    out = [
        finite(tau, f"{what} threshold at layer {layer}")
        for layer, tau in zip(out_layers, thresholds_t, strict=True)
    ]
    return tuple(out_layers), tuple(out)


def _index_of(layers: tuple[int, ...], layer: int, what: str) -> int:
    try:
        return layers.index(layer)
    except ValueError:
        raise ValueError(
            f"{what} does not cap layer {layer}; capped layers are {list(layers)}"
        ) from None


@dataclass(frozen=True, slots=True)
class CapConfig:
    """An activation cap in the floor convention: ``h <- h - v̂_l min(h·v̂_l - tau_l, 0)``.

    Fields:
        direction: the axis (higher projection = more Assistant-like).
        layers: capped layers, distinct, within ``direction.n_layers``.
        thresholds: ``tau_l`` for each of ``layers`` (same length), in projection units.
        percentile: percentile (0-100) of the projections the thresholds were taken at, if any
            (the paper uses 25).
        provenance: JSON-able record.

    Example:
        >>> axis = Direction(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), method="mean_diff")
        >>> cap = CapConfig(axis, layers=(1,), thresholds=(0.5,))
        >>> cap.apply(torch.tensor([[7.0, -1.0], [7.0, 3.0]]), layer=1)
        tensor([[7.0000, 0.5000],
                [7.0000, 3.0000]])
    """

    direction: Direction
    layers: tuple[int, ...]
    thresholds: tuple[float, ...]
    percentile: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.direction, Direction):
            raise TypeError(
                f"CapConfig.direction must be a Direction, got {type(self.direction).__name__}"
            )
        layers, thresholds = _check_layers_thresholds(self.layers, self.thresholds, "CapConfig")
        for layer in layers:
            if layer >= self.direction.n_layers:
                raise ValueError(
                    f"CapConfig caps layer {layer} but the direction has {self.direction.n_layers} layers"
                )
            self.direction.unit(layer)  # raises on a zero vector at a capped layer
        p = self.percentile
        if p is not None and (
            isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100
        ):
            raise ValueError(f"CapConfig.percentile must be None or within [0, 100], got {p!r}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "percentile", None if p is None else float(p))
        object.__setattr__(
            self, "provenance", _json_mapping(self.provenance, "CapConfig.provenance")
        )

    __hash__ = None  # type: ignore[assignment]

    def threshold(self, layer: int) -> float:
        """``tau`` at ``layer`` (which must be capped)."""
        return self.thresholds[_index_of(self.layers, layer, "CapConfig")]

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("layers", list(self.layers)),
            ("thresholds", [float(t) for t in self.thresholds]),
            ("percentile", self.percentile),
            (
                "direction",
                f"{self.direction.method} [{self.direction.n_layers}, "
                f"{self.direction.d_model}] at {self.direction.hook}",
            ),
        ]

    def __repr__(self) -> str:
        return compact_repr("CapConfig", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("CapConfig", self._facts(), self.to_pandas())

    def to_pandas(self) -> pd.DataFrame:
        """One row per capped layer: ``layer`` and its threshold ``tau``."""
        import pandas as pd

        return pd.DataFrame(
            {"layer": list(self.layers), "tau": [float(t) for t in self.thresholds]}
        )

    def apply(self, h: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """Apply the floor cap of ``layer`` to ``h`` with :func:`axislens.tensor_math.cap_floor`."""
        return ops.cap_floor(h, self.direction.vectors[layer], self.threshold(layer))

    # ---- conventions

    def to_ceiling(self) -> CeilingCap:
        """The same cap as a public-code ceiling: vectors ``-v_l``, thresholds ``-tau_l``."""
        return CeilingCap(
            vectors=tuple(-self.direction.vectors[layer] for layer in self.layers),
            layers=self.layers,
            thresholds=tuple(-tau for tau in self.thresholds),
            provenance=self.provenance,
        )

    @classmethod
    def from_ceiling(
        cls,
        ceiling: CeilingCap,
        *,
        n_layers: int | None = None,
        hook: str = "resid_post",
        percentile: float | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> CapConfig:
        """Convert a public-code ceiling: ``v_l = -w_l``, ``tau_l = -c_l``.

        The direction has ``n_layers`` rows (default ``max(layers) + 1``); rows of uncapped layers
        are zero.
        """
        n = max(ceiling.layers) + 1 if n_layers is None else n_layers
        if n <= max(ceiling.layers):
            raise ValueError(f"n_layers={n} is too small for capped layer {max(ceiling.layers)}")
        rows = torch.zeros(n, ceiling.vectors[0].shape[0])
        for layer, w in zip(ceiling.layers, ceiling.vectors, strict=True):
            rows[layer] = -w
        prov = dict(ceiling.provenance if provenance is None else provenance)
        direction = Direction(rows, method="imported", hook=hook, provenance=prov)
        thresholds = tuple(-c for c in ceiling.thresholds)
        return cls(direction, ceiling.layers, thresholds, percentile=percentile, provenance=prov)

    # ---- files

    def save(self, path: PathLike) -> Path:
        """Write ``path`` (JSON) and the direction beside it as ``<stem>.safetensors``."""
        path = Path(path)
        if path.suffix == ".safetensors":
            raise ValueError(f"{path}: a CapConfig is saved as JSON; use a .json path")
        direction_file = path.with_suffix(".safetensors")
        self.direction.save(direction_file)
        record = {
            "format": CAP_FORMAT,
            "format_version": FORMAT_VERSION,
            "convention": "floor",
            "formula": "h <- h - unit(v_l) * min(h . unit(v_l) - tau_l, 0)",
            "layers": list(self.layers),
            "thresholds": list(self.thresholds),
            "percentile": self.percentile,
            "direction_file": direction_file.name,
            "provenance": dict(self.provenance),
            "axislens_version": axislens_version(),
        }
        _write_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: PathLike) -> CapConfig:
        """Read a cap written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such CapConfig file")
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            hint = " (a CapConfig is the .json file; its direction sits beside it)"
            raise ValueError(
                f"{path}: not a JSON CapConfig ({type(exc).__name__}){hint if path.suffix != '.json' else ''}"
            ) from None
        if not isinstance(record, dict) or record.get("format") != CAP_FORMAT:
            raise ValueError(f"{path}: not an axislens CapConfig file (no format={CAP_FORMAT!r})")
        if record.get("convention") != "floor":
            raise ValueError(f"{path}: unsupported cap convention {record.get('convention')!r}")
        name = record.get("direction_file")
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(
                f"{path}: field 'direction_file' must be a bare file name, got {name!r}"
            )
        return cls(
            Direction.load(path.parent / name),
            layers=tuple(record["layers"]),
            thresholds=tuple(record["thresholds"]),
            percentile=record.get("percentile"),
            provenance=record.get("provenance") or {},
        )

    @classmethod
    def from_torch(
        cls,
        path: PathLike,
        experiment: str | int,
        *,
        n_layers: int | None = None,
        hook: str = "resid_post",
        provenance: Mapping[str, Any] | None = None,
    ) -> CapConfig:
        """Import one experiment of a public assistant-axis capping config (``capping_config.pt``).

        Format (``assistant_axis.steering.load_capping_config`` / ``build_capping_steerer``)::

            {"vectors": {name: {"layer": int, "vector": Tensor[d_model]}, ...},
             "experiments": [{"id": "layers_46:54-p0.25",
                              "interventions": [{"vector": name, "cap": float}, ...]}, ...]}

        ``experiment`` is an id or a list index. Interventions without ``"cap"`` are skipped, as
        in the public code. Each capped entry is a ceiling ``h - max(0, h·u - cap) u`` with
        ``u = w/|w|``; axislens stores it as the floor over ``v = -w`` with ``tau = -cap``
        (exactly the same map). Uncapped layers get ``-w`` from ``"vectors"`` when exactly one
        vector is given for that layer, else zero. A trailing ``-p<q>`` in the id sets
        ``percentile = 100 q``.
        """
        path = Path(path)
        entries, exp_id, capped, skipped = read_capping_experiment(path, experiment)
        layers = [entries[it["vector"]][0] for it in capped]
        n = n_layers if n_layers is not None else max(layer for layer, _ in entries.values()) + 1
        if n <= max(layers):
            raise ValueError(f"{path}: n_layers={n} is too small for capped layer {max(layers)}")
        rows = torch.zeros(n, next(iter(entries.values()))[1].shape[0])
        by_layer = Counter(layer for layer, _ in entries.values())
        for layer, w in entries.values():  # uncapped layers: the layer's only vector, if any
            if by_layer[layer] == 1 and layer < n:
                rows[layer] = -w
        for it in capped:
            layer, w = entries[it["vector"]]
            rows[layer] = -w
        record = {
            "file": path.name,
            "sha256": file_sha256(path),
            "format": "assistant-axis capping_config.pt",
            "experiment": exp_id,
            "vectors": [str(it["vector"]) for it in capped],
            "skipped_interventions": skipped,
            "public_convention": "ceiling h - max(0, h.u - cap) u, u = w/|w|; v = -w, tau = -cap",
        }
        prov = {**dict(provenance or {}), "import": record}
        return cls(
            Direction(rows, method="imported", hook=hook, provenance=prov),
            layers=tuple(layers),
            thresholds=tuple(
                -finite(it["cap"], f"{path}: cap of {it['vector']!r}") for it in capped
            ),
            percentile=percentile_from_id(exp_id),
            provenance=prov,
        )

    def to_torch(self, path: PathLike, experiment_id: str | None = None) -> Path:
        """Write the public capping-config ``.pt`` layout, the inverse of :meth:`from_torch`
        (:func:`axislens.interop.save_capping_config`); ``from_torch(path, 0)`` reads it back."""
        from axislens.pt_files import save_capping_config

        return save_capping_config(self, path, experiment_id)
