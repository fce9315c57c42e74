"""The exported intervention file and the engine's configuration (torch and safetensors only).

An intervention file (written by ``axislens export --vllm`` or ``to_vllm``) is one safetensors
file. Tensors:

- ``u``: ``[K, n_layers, d_model]`` float32, unit vectors (a zero row: nothing at that layer);
- ``a``, ``b``, ``lo``, ``hi``: ``[K, n_layers]`` float32.

At layer ``l`` the residual stream ``h`` (after the block, TransformerLens' ``resid_post``) is
moved by the ``K`` entries in order, each

    p = h·u;   h <- h + (a·p + b + relu(lo - p) - relu(p - hi))·u

which covers steering (``b``), ablation (``a = -1``), floor and ceiling caps (``lo``, ``hi``) and
bands. Metadata (strings): ``format`` (``axislens-vllm/1``), ``n_layers``, ``d_model``,
``positions`` (``all``, ``prompt`` or ``response``), ``model`` (JSON identity), ``provenance``.

The engine learns its interventions from two environment variables, read in every vLLM process:

- ``AXISLENS_VLLM_INTERVENTIONS``: ``name=path`` pairs separated by commas;
- ``AXISLENS_VLLM_DEFAULT``: the name applied to requests that do not choose one (optional;
  without it such requests are untouched).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "axislens-vllm/1"
ENV_INTERVENTIONS = "AXISLENS_VLLM_INTERVENTIONS"
ENV_DEFAULT = "AXISLENS_VLLM_DEFAULT"
ENV_DEBUG = "AXISLENS_VLLM_DEBUG"
"""``1``: count, per layer and intervention, the tokens each cap moves (:func:`fire_counts`)."""
POSITIONS = ("all", "prompt", "response")
REQUEST_KEY = "axislens"
"""The ``vllm_xargs`` key a request names its intervention under."""


class SpecError(ValueError):
    """A bad intervention file or configuration; the message names the file or variable."""


@dataclass(frozen=True)
class Spec:
    """One loaded intervention file.

    Fields:
        name: the name requests choose it by.
        path: the file.
        u: ``[K, n_layers, d_model]`` float32 unit vectors.
        coef: ``[K, n_layers, 4]`` float32: ``a``, ``b``, ``lo``, ``hi``.
        positions: ``all``, ``prompt`` or ``response``.
        metadata: the file's metadata, as stored.
    """

    name: str
    path: Path
    u: torch.Tensor
    coef: torch.Tensor
    positions: str
    metadata: dict[str, str]

    @property
    def n_layers(self) -> int:
        return int(self.u.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.u.shape[2])

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers where at least one entry moves the stream."""
        active = (self.u != 0).any(dim=-1).any(dim=0)
        return tuple(int(i) for i in torch.nonzero(active).flatten().tolist())

    def check_model(self, n_layers: int, d_model: int) -> None:
        """Refuse a model of another shape, naming the file."""
        if (self.n_layers, self.d_model) != (n_layers, d_model):
            model = self.metadata.get("model", "?")
            raise SpecError(
                f"{self.path}: intervention {self.name!r} was exported for {self.n_layers} layers "
                f"of width {self.d_model} (model {model}), but the engine's model has {n_layers} "
                f"layers of width {d_model}"
            )


def read_spec(path: str | os.PathLike[str], name: str) -> Spec:
    """Read and check one exported file."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: intervention {name!r}: no such file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError(f"{p}: not a safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise SpecError(f"{p}: metadata 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("u", "a", "b", "lo", "hi") if k not in tensors]
    if missing:
        raise SpecError(f"{p}: missing tensor(s) {missing}")
    u = tensors["u"].to(torch.float32)
    if u.ndim != 3:
        raise SpecError(f"{p}: tensor 'u' has shape {tuple(u.shape)}, expected [K, n_layers, d]")
    k, n_layers, d_model = u.shape
    coefs = []
    for key in ("a", "b", "lo", "hi"):
        t = tensors[key].to(torch.float32)
        if tuple(t.shape) != (k, n_layers):
            raise SpecError(
                f"{p}: tensor {key!r} has shape {tuple(t.shape)}, expected {(k, n_layers)}"
            )
        coefs.append(t)
    coef = torch.stack(coefs, dim=-1)
    if not torch.isfinite(u).all() or torch.isnan(coef).any():
        raise SpecError(f"{p}: non-finite values in 'u' or NaN in 'a', 'b', 'lo', 'hi'")
    if not torch.isfinite(coef[..., :2]).all():
        raise SpecError(f"{p}: 'a' and 'b' must be finite")
    norms = u.norm(dim=-1)
    if not bool(((norms - 1).abs() < 1e-3).logical_or(norms == 0).all()):
        raise SpecError(f"{p}: rows of 'u' must be unit vectors or zero")
    for key, want in (("n_layers", n_layers), ("d_model", d_model)):
        if key in meta and meta[key] != str(want):
            raise SpecError(f"{p}: metadata {key!r} is {meta[key]} but the tensors have {want}")
    positions = meta.get("positions", "all")
    if positions not in POSITIONS:
        raise SpecError(f"{p}: metadata 'positions' is {positions!r}; expected one of {POSITIONS}")
    return Spec(name, p, u.contiguous(), coef.contiguous(), positions, meta)


def configured(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``{name: path}`` from ``AXISLENS_VLLM_INTERVENTIONS`` (empty when unset)."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_INTERVENTIONS, "").strip()
    out: dict[str, str] = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        name, sep, path = part.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise SpecError(f"{ENV_INTERVENTIONS}: {part!r} is not name=path")
        if name in out:
            raise SpecError(f"{ENV_INTERVENTIONS}: name {name!r} given twice")
        out[name] = path
    default = env.get(ENV_DEFAULT, "").strip()
    if default and default not in out:
        raise SpecError(
            f"{ENV_DEFAULT}={default!r} is not among {ENV_INTERVENTIONS}'s names {sorted(out)}"
        )
    return out


def default_name(environ: dict[str, str] | None = None) -> str | None:
    """The name in ``AXISLENS_VLLM_DEFAULT``, or ``None``."""
    env = os.environ if environ is None else environ
    return env.get(ENV_DEFAULT, "").strip() or None


def file_positions(path: str | os.PathLike[str]) -> str:
    """The ``positions`` metadata of an exported file, reading only its header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("positions", "all")
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecError(f"{path}: not a safetensors file ({e})") from None


def static_name(environ: dict[str, str] | None = None) -> str | None:
    """The one intervention applied to every token of every request, when the configuration is
    that simple (one name, the default, position rule ``all``); else ``None``. Such an engine
    needs no per-request routing, so it keeps prefix caching and CUDA graphs."""
    names = configured(environ)
    default = default_name(environ)
    if len(names) == 1 and default is not None and file_positions(names[default]) == "all":
        return default
    return None


def slot_names(environ: dict[str, str] | None = None) -> list[str]:
    """Names in slot order: slot 0 is "nothing", slot ``i + 1`` is the ``i``-th name (sorted)."""
    return sorted(configured(environ))


def write_spec(
    path: str | os.PathLike[str],
    u: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    positions: str = "all",
    model: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a file in the format above, atomically (axislens has its own writer; tests use this)."""
    from safetensors.torch import save_file

    if positions not in POSITIONS:
        raise SpecError(f"positions must be one of {POSITIONS}, got {positions!r}")
    k, n_layers, d_model = u.shape
    meta = {
        "format": FORMAT,
        "n_layers": str(n_layers),
        "d_model": str(d_model),
        "positions": positions,
        "model": json.dumps(model or {}, sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    tensors = {
        "u": u.to(torch.float32).contiguous(),
        **{
            key: t.to(torch.float32).reshape(k, n_layers).contiguous()
            for key, t in (("a", a), ("b", b), ("lo", lo), ("hi", hi))
        },
    }
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, out)
    return out


NOOP = (0.0, 0.0, -math.inf, math.inf)
"""``a, b, lo, hi`` of an entry that moves nothing."""
