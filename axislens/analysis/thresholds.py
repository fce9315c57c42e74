"""Projections of stored responses on a direction, and cap thresholds calibrated from them.

``tau_l`` is an empirical percentile of projections ``h · v̂_l`` at layer ``l``;
:func:`calibrate_cap` returns a :class:`~axislens.directions.CapConfig` in axislens' floor
convention ``h <- h - v̂_l min(h·v̂_l - tau_l, 0)``, convertible to the public ceiling form with
:meth:`~axislens.directions.CapConfig.to_ceiling`.

Two choices decide which projections the percentile is taken over; the paper's public code ships
thresholds but not the code that computed them, so both are explicit arguments:

- the *unit* (``unit="response" | "token"``): one value per response (the projection of its
  span mean, read from the store) or one value per response token (computed with the model by
  :func:`axislens.collection.tokens.token_projections`, which the store cannot provide: it holds
  span means only). The cap acts on every token, whose projections spread wider than response
  means, so a per-token percentile puts ``tau`` lower in the response-mean distribution.
- the *pool* (:class:`Pool`): which items feed the percentile: default responses (never scored,
  never filtered) and/or role responses, these optionally filtered by judge score, pooled item
  by item (``Pool.all()``) or with the two sides weighted equally (``Pool.balanced()``).

**Default (an assumption, stated once here and in docs/concepts.md):** ``unit="response"``,
``percentile=0.25`` and ``Pool.default_only()``: the Assistant's own (default) responses. The cap
is meant to keep the model within the Assistant's own range, and a pool that mixes in role
responses moves ``tau`` with the ratio of role to default items (800 role responses to 200
default ones put it near the roles' 25th percentile), not with the model. The paper says "the
25th percentile of projections"; per-response means and this pool are axislens' reading, not a
documented fact of the paper. :func:`cap_pools` gives ``tau`` under all three pools side by
side.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> axis = assistant_axis(store)  # doctest: +SKIP
    >>> cap = calibrate_cap(store, axis, layers=range(21, 26), percentile=0.25)  # doctest: +SKIP
    >>> cap.percentile, cap.layers  # doctest: +SKIP
    (25.0, (21, 22, 23, 24, 25))
    >>> tok = token_projections(model, store, axis, layers=range(21, 26))  # doctest: +SKIP
    >>> calibrate_cap(store, axis, layers=range(21, 26), unit="token", tokens=tok)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np
import torch

from axislens._types import Float, Tensor
from axislens.analysis.vectors import (
    PooledSource,
    StoreSource,
    _check_filters,
    _frozen,
    _Item,
    _stream,
    check_direction,
    open_source,
)
from axislens.directions import CapConfig, Direction

__all__ = [
    "POOLS",
    "CapUnit",
    "Pool",
    "StoreProjections",
    "TokenProjections",
    "calibrate_cap",
    "cap_pools",
    "direction_fingerprint",
    "project_store",
]

CapUnit = Literal["response", "token"]
"""What one value of a cap percentile is: a response's span-mean projection, or one token's."""


@dataclass(frozen=True, slots=True)
class Pool:
    """Which collected items feed a cap percentile (or :func:`project_store`).

    ``default``: every collected default response (defaults are never scored, so never
    filtered). ``roles``: collected role responses, those with judge score ``>= min_score``
    when ``min_score`` is set (the filter applies to roles only). ``balanced``: weigh the two
    sides equally (each default value ``1 / (2 n_default)``, each role value
    ``1 / (2 n_role)``; as exact integers) instead of item by item, so ``tau`` does not move with the ratio of role
    to default items. :func:`calibrate_cap`'s documented default is :meth:`default_only`.

    >>> Pool(min_score=3).describe()
    {'default': True, 'roles': True, 'min_score': 3, 'balanced': False, 'name': 'all'}
    >>> Pool.default_only().roles, Pool.roles_only(3).default, Pool.balanced().name
    (False, False, 'balanced')
    """

    default: bool = True
    roles: bool = True
    min_score: int | None = None
    balance: bool = False

    def __post_init__(self) -> None:
        for name in ("default", "roles"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Pool.{name} must be a bool, got {getattr(self, name)!r}")
        if not (self.default or self.roles):
            raise ValueError("Pool selects nothing: set default=True and/or roles=True")
        _check_filters(self.min_score, 1)
        if self.min_score is not None and not self.roles:
            raise ValueError(
                "Pool.min_score filters role responses, but roles=False (defaults are never scored)"
            )
        if not isinstance(self.balance, bool):
            raise TypeError(f"Pool.balance must be a bool, got {self.balance!r}")
        if self.balance and not (self.default and self.roles):
            raise ValueError("Pool.balance weighs roles against defaults: it needs both sides")

    @classmethod
    def default_only(cls) -> Pool:
        """Only the default (Assistant) responses: the documented default of
        :func:`calibrate_cap`."""
        return cls(default=True, roles=False)

    @classmethod
    def all(cls, min_score: int | None = None) -> Pool:
        """Every role response (score ``>= min_score`` if given) and every default response,
        item by item (axislens 0.2's default)."""
        return cls(min_score=min_score)

    @classmethod
    def balanced(cls, min_score: int | None = None) -> Pool:
        """Role and default responses, the two sides weighted equally."""
        return cls(min_score=min_score, balance=True)

    @property
    def name(self) -> str:
        """``"default"``, ``"roles"``, ``"balanced"`` or ``"all"``."""
        if self.balance:
            return "balanced"
        return "all" if self.default and self.roles else "default" if self.default else "roles"

    @classmethod
    def roles_only(cls, min_score: int | None = None) -> Pool:
        """Only role responses, with score ``>= min_score`` if given."""
        return cls(default=False, roles=True, min_score=min_score)

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "roles": self.roles,
            "min_score": self.min_score,
            "balanced": self.balance,
            "name": self.name,
        }

    def weights(self, kinds: Sequence[str]) -> np.ndarray | None:
        """Per-item percentile weights for items of ``kinds`` (None: equal weights). A balanced
        pool gives each default value ``n_role`` and each role value ``n_default`` (over their
        gcd): integers, so cumulative weights are exact and a value whose cumulative share is
        exactly the percentile is not lost to rounding."""
        if not self.balance:
            return None
        is_default = np.array([k == "default" for k in kinds])
        n_d, n_r = int(is_default.sum()), int((~is_default).sum())
        if not n_d or not n_r:
            raise ValueError(
                f"Pool.balanced() needs default and role responses; got {n_d} default and "
                f"{n_r} role"
            )
        g = math.gcd(n_d, n_r)
        return np.where(is_default, n_r // g, n_d // g).astype(np.int64)

    def select(self, src: PooledSource) -> list[_Item]:
        """The pooled items of ``src`` (collected ones only), in (store, id) order."""
        items: list[_Item] = []
        if self.roles:
            if self.min_score is not None and src.query(kind="role"):
                scored = [
                    (k, r)
                    for k, r in src.query(kind="role")
                    if src.stores[k].scores().get(r.id, {}).get("score") is not None
                ]
                if not scored:
                    raise ValueError(
                        f"{src.where}: Pool(min_score={self.min_score}) but no role response "
                        f"has a judge score; use Pool(min_score=None)"
                    )
            items += src.query(kind="role", min_score=self.min_score)
        if self.default:
            items += src.query(kind="default")
        return sorted(items, key=lambda t: (t[0], t[1].id))


def _resolve_pool(pool: Pool | None, min_score: int | None, default: Pool | None = None) -> Pool:
    if pool is not None and min_score is not None:
        raise ValueError("pass either pool=Pool(min_score=...) or min_score=..., not both")
    if pool is None:
        return Pool(min_score=min_score) if default is None or min_score is not None else default
    if not isinstance(pool, Pool):
        raise TypeError(f"pool must be a Pool, got {type(pool).__name__}")
    return pool


def direction_fingerprint(direction: Direction, layers: Iterable[int]) -> str:
    """sha256 (hex) of ``direction``'s hook and its float32 rows at ``layers``: ties token
    projections to the direction they were computed on."""
    digest = hashlib.sha256(direction.hook.encode())
    for layer in layers:
        digest.update(f"|{layer}|".encode())
        digest.update(direction.vectors[layer].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class StoreProjections:
    """Projections ``h · v̂_l`` (float64) of stored items on a direction, ``[sample, layer]``."""

    ids: tuple[str, ...]
    roles: tuple[str, ...]
    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    values: Float[Tensor, "sample layer"]
    stores: tuple[str, ...] = ()

    def at(self, layer: int) -> Float[Tensor, " sample"]:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} not projected (layers: {list(self.layers)})")
        return self.values[:, self.layers.index(layer)]

    def only_kind(self, kind: str) -> StoreProjections:
        """The items of ``kind`` (e.g. ``"default"``), in the same order."""
        keep = [i for i, k in enumerate(self.kinds) if k == kind]
        return StoreProjections(
            ids=tuple(self.ids[i] for i in keep),
            roles=tuple(self.roles[i] for i in keep),
            kinds=tuple(self.kinds[i] for i in keep),
            layers=self.layers,
            values=self.values[keep],
            stores=self.stores,
        )


@dataclass(frozen=True, slots=True, eq=False)
class TokenProjections:
    """Per-token projections ``h_t · v̂_l`` (float64) of stored responses, one
    ``[token, layer]`` tensor per item, over the tokens the store's span policy averages.

    Made with a model by :func:`axislens.collection.tokens.token_projections`; ``fingerprint``
    is :func:`direction_fingerprint` of the direction at ``layers``, checked by
    :func:`calibrate_cap`.
    """

    ids: tuple[str, ...]
    layers: tuple[int, ...]
    values: tuple[Float[Tensor, "token layer"], ...]
    hook: str = "resid_post"
    fingerprint: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vals = tuple(torch.as_tensor(v).detach().to("cpu", torch.float64) for v in self.values)
        if len(vals) != len(self.ids) or len(set(self.ids)) != len(self.ids):
            raise ValueError(
                f"TokenProjections has {len(vals)} tensors for {len(self.ids)} ids (ids distinct)"
            )
        for rid, v in zip(self.ids, vals, strict=True):
            if v.ndim != 2 or v.shape[1] != len(self.layers) or v.shape[0] < 1:
                raise ValueError(
                    f"TokenProjections of item {rid!r} has shape {tuple(v.shape)}; expected "
                    f"[token >= 1, {len(self.layers)}]"
                )
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "provenance", _frozen(self.provenance))

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_tokens(self) -> int:
        return sum(int(v.shape[0]) for v in self.values)

    def stacked(
        self, ids: Sequence[str] | None = None, layers: Sequence[int] | None = None
    ) -> Float[Tensor, "token layer"]:
        """The tokens of ``ids`` (default all, in order) at ``layers``, stacked."""
        index = {rid: i for i, rid in enumerate(self.ids)}
        want = self.ids if ids is None else tuple(ids)
        missing = [rid for rid in want if rid not in index]
        if missing:
            raise ValueError(
                f"no token projections for {len(missing)} pooled item(s), e.g. {missing[0]!r}; "
                f"compute them over the same pool"
            )
        cols = list(range(len(self.layers)))
        if layers is not None:
            for layer in layers:
                if layer not in self.layers:
                    raise ValueError(
                        f"layer {layer} has no token projections (layers: {list(self.layers)})"
                    )
            cols = [self.layers.index(layer) for layer in layers]
        if not want:
            return torch.empty(0, len(cols), dtype=torch.float64)
        return torch.cat([self.values[index[rid]][:, cols] for rid in want])


def _units(direction: Direction, cols: Sequence[int]) -> Float[Tensor, "layer d_model"]:
    for layer in cols:
        if layer >= direction.n_layers:
            raise ValueError(
                f"Direction has {direction.n_layers} layers; layer {layer} is out of range"
            )
    rows = torch.stack([direction.vectors[layer].double() for layer in cols])
    norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    for layer, norm in zip(cols, norms[:, 0], strict=True):
        if not bool(norm > 0):
            raise ValueError(f"Direction has a zero vector at layer {layer}; nothing to project on")
    return rows / norms


def project_store(
    source: StoreSource,
    direction: Direction,
    *,
    layers: Iterable[int] | None = None,
    pool: Pool | None = None,
    min_score: int | None = None,
) -> StoreProjections:
    """Project the span mean of every collected item of ``pool`` (default :class:`Pool()`: all
    role and default responses; ``min_score`` is shorthand for ``Pool(min_score=...)`` and
    filters roles only) on ``direction``.

    Read at ``direction.hook``; unit vectors and dot products in float64.
    """
    chosen = _resolve_pool(pool, min_score)
    src = open_source(source, direction.hook)
    check_direction(
        direction, d_model=src.d_model, hook=src.hook, model_id=src.model_id, where=src.where
    )
    cols = src.resolve_layers(layers)
    units = _units(direction, cols)
    items = chosen.select(src)
    if not items:
        raise ValueError(f"{src.where}: no collected items in {chosen} to project")
    out = torch.empty(len(items), len(cols), dtype=torch.float64)
    pos = 0
    for _g, recs, x in _stream(src, [items], cols):
        out[pos : pos + len(recs)] = torch.einsum("nld,ld->nl", x, units)
        pos += len(recs)
    return StoreProjections(
        ids=tuple(r.id for _, r in items),
        roles=tuple(r.role for _, r in items),
        kinds=tuple(r.kind for _, r in items),
        layers=cols,
        values=out,
        stores=tuple(str(s.root) for s in src.stores),
    )


def calibrate_cap(
    source: StoreSource,
    axis: Direction,
    *,
    layers: Iterable[int],
    percentile: float = 0.25,
    unit: CapUnit = "response",
    pool: Pool | None = None,
    min_score: int | None = None,
    tokens: TokenProjections | None = None,
) -> CapConfig:
    """Per-layer cap thresholds: ``tau_l`` = the empirical ``percentile`` of the projections on
    ``axis`` at layer ``l`` of the items in ``pool``, counted per ``unit``.

    Args:
        source: an :class:`ActivationStore`, its folder, or several stores of one model (pooled),
            read at ``axis.hook``.
        axis: the direction to project on (its unit vector at each layer).
        layers: the capped layers, distinct and non-empty, each stored in ``source``.
        percentile: a *fraction* in [0, 1] as in the public ids (``0.25`` = the 25th
            percentile); the returned :class:`CapConfig` records it on its 0-100 scale.
        unit: ``"response"`` (default): one value per response, the projection of its stored
            span mean. ``"token"``: one value per response token, from ``tokens``
            (:func:`axislens.collection.tokens.token_projections`; the store holds span means
            only, so per-token values need a model pass).
        pool: which items (:class:`Pool`); default :meth:`Pool.default_only`: the default
            (Assistant) responses. ``Pool.all()``: every role and default response, item by
            item; ``Pool.balanced()``: the two sides weighted equally.
        min_score: shorthand for ``Pool.all(min_score=...)``: every default response plus the
            role responses with judge score ``>= min_score``.
        tokens: per-token projections on ``axis`` at ``layers``
            (:func:`~axislens.collection.tokens.token_projections`); needed with ``unit="token"``
            and refused otherwise.

    The default (``unit="response"``, ``Pool.default_only()``, ``percentile=0.25``) is an
    assumption: the paper's public code ships thresholds but not how they were computed
    (docs/concepts.md). The percentile is ``numpy.percentile(values, 100 * percentile,
    axis=0)`` (linear interpolation): with sorted values ``p_0 <= ... <= p_{n-1}``,
    ``tau = p_i + (q(n-1) - i)(p_{i+1} - p_i)`` for ``i = floor(q(n-1))``. A balanced pool
    uses numpy's weighted percentile (``method="inverted_cdf"``, the only weighted method:
    the smallest value whose cumulative weight reaches ``percentile``).

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> cap = calibrate_cap(store, axis, layers=range(21, 26), percentile=0.25)  # doctest: +SKIP
        >>> cap.percentile, cap.layers  # doctest: +SKIP
        (25.0, (21, 22, 23, 24, 25))
    """
    _check_cap_args(percentile, unit, tokens)
    chosen = _resolve_pool(pool, min_score, Pool.default_only())
    layer_list = _cap_layers(layers)
    proj = project_store(source, axis, layers=layer_list, pool=chosen)
    return _cap_config(axis, proj, chosen, layer_list, float(percentile), unit, tokens)


def _check_cap_args(percentile: float, unit: str, tokens: TokenProjections | None) -> None:
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, (int, float))
        or not 0 <= percentile <= 1
    ):
        raise ValueError(
            f"percentile is a fraction in [0, 1] (0.25 = the paper's 25th percentile), got "
            f"{percentile!r}; CapConfig.percentile records it on the 0-100 scale"
        )
    if unit not in get_args(CapUnit):
        raise ValueError(f"unknown unit {unit!r}; expected one of {list(get_args(CapUnit))}")
    if unit == "token" and tokens is None:
        raise ValueError(
            "unit='token' needs tokens=token_projections(model, store, axis, layers=...) "
            "(axislens.collection.tokens); the store holds span means only"
        )
    if unit == "response" and tokens is not None:
        raise ValueError("tokens= is only used with unit='token'")


def _cap_layers(layers: Iterable[int]) -> tuple[int, ...]:
    layer_list = tuple(layers)
    if not layer_list:
        raise ValueError("calibrate_cap needs at least one layer")
    return layer_list


def _cap_config(
    axis: Direction,
    proj: StoreProjections,
    chosen: Pool,
    layer_list: tuple[int, ...],
    q: float,
    unit: str,
    tokens: TokenProjections | None,
) -> CapConfig:
    """The thresholds of :func:`calibrate_cap` from the projections ``proj`` of ``chosen``'s
    items (``tokens``: their per-token values, for ``unit="token"``)."""
    values = proj.values
    kinds: Sequence[str] = proj.kinds
    if tokens is not None:
        if tokens.hook != axis.hook:
            raise ValueError(
                f"token projections are at hook {tokens.hook!r}, the axis at {axis.hook!r}"
            )
        want = direction_fingerprint(axis, tokens.layers)
        if tokens.fingerprint != want:
            raise ValueError(
                "token projections were computed on another direction (fingerprint differs); "
                "recompute them with this axis"
            )
        values = tokens.stacked(proj.ids, layer_list)
        index = {rid: i for i, rid in enumerate(tokens.ids)}
        kinds = [
            k
            for rid, k in zip(proj.ids, proj.kinds, strict=True)
            for _ in range(int(tokens.values[index[rid]].shape[0]))
        ]
    weights = chosen.weights(kinds)
    taus = (
        np.percentile(values.numpy(), 100 * q, axis=0)
        if weights is None
        else np.percentile(values.numpy(), 100 * q, axis=0, method="inverted_cdf", weights=weights)
    )
    return CapConfig(
        axis,
        layers=layer_list,
        thresholds=tuple(float(t) for t in taus),
        percentile=round(100 * q, 10),
        provenance={
            **dict(axis.provenance),
            "calibration": {
                "stores": list(proj.stores),
                "percentile_fraction": q,
                "interpolation": "linear (numpy.percentile default)"
                if weights is None
                else "weighted inverted_cdf (numpy.percentile)",
                "unit": unit,
                "pool": chosen.describe(),
                "n_items": len(proj.ids),
                "n_values": int(values.shape[0]),
                "assumption": "unit, pool and percentile are axislens' reading of the paper "
                "(docs/concepts.md, 'Cap thresholds')",
            },
        },
    )


POOLS: tuple[Pool, ...] = (Pool.default_only(), Pool.balanced(), Pool.all())
"""The three pools every summary shows side by side: default (the documented default),
balanced and all."""


def cap_pools(
    source: StoreSource,
    axis: Direction,
    *,
    layers: Iterable[int],
    percentile: float = 0.25,
    unit: CapUnit = "response",
    tokens: TokenProjections | None = None,
    min_score: int | None = None,
) -> dict[str, CapConfig]:
    """:func:`calibrate_cap` under each of :data:`POOLS` (roles filtered by ``min_score`` in
    the pools that hold roles), keyed by pool name: ``{"default": ..., "balanced": ...,
    "all": ...}``. Tables and reports show the three thresholds side by side. The store is
    projected once, over the widest pool; the default pool is its default items.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> caps = cap_pools(store, axis, layers=[22, 23])  # doctest: +SKIP
        >>> {k: c.thresholds for k, c in caps.items()}  # doctest: +SKIP
    """
    _check_cap_args(percentile, unit, tokens)
    layer_list = _cap_layers(layers)
    widest = Pool.all(min_score)  # every pool's items: one pass over the store serves all three
    every = project_store(source, axis, layers=layer_list, pool=widest)
    out = {}
    for p in POOLS:
        chosen = p if p.name == "default" or min_score is None else replace(p, min_score=min_score)
        proj = every if chosen.roles else every.only_kind("default")
        if not proj.ids:
            raise ValueError(
                f"{', '.join(every.stores)}: no collected items in {chosen} to project"
            )
        out[p.name] = _cap_config(axis, proj, chosen, layer_list, float(percentile), unit, tokens)
    return out
