"""Directions from an activation store, without a model: role and default vectors, the
Assistant Axis, and the store plumbing shared by :mod:`axislens.analysis.traits`,
:mod:`axislens.analysis.thresholds`, :mod:`axislens.analysis.space`, :mod:`axislens.analysis.probing` and
:mod:`axislens.analysis.stability`.

Everything here reads span means from an :class:`~axislens.store.ActivationStore` (or several
stores of the *same* model, hook, span policy and layers) and never imports transformer_lens.
Activations are streamed group by group in bounded chunks and accumulated in float64, so a
paper-scale store (275 roles x 1,200 responses) never has to fit in memory.

Formulas (docs/concepts.md), per stored layer ``l``:

- role vector ``r_l`` = mean of the role's responses with judge score ``>= min_score``; roles
  with fewer than ``min_count`` such responses are excluded and reported (``RoleVectors.excluded``
  and a ``UserWarning``);
- default vector ``d_l`` = mean of *all* collected default responses (never filtered by score);
- Assistant Axis ``a_l = d_l - mean over roles of r_l`` (each role weighs the same, whatever its
  count); projection ``h · a_l / |a_l|``, higher = more Assistant-like;
- trait vector = mean(trait_pos) - mean(trait_neg) per trait (:mod:`axislens.analysis.traits`);
- cap threshold ``tau_l`` = the empirical ``percentile`` of the projections at layer ``l``, over
  a chosen unit (response means or tokens) and pool of items
  (:func:`axislens.analysis.thresholds.calibrate_cap`, which documents the default).

Directions made here have one row per *model* layer (``manifest["model"]["n_layers"]``), so
``direction.unit(l)`` means block ``l`` of the model; layers the store lacks are zero rows.

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> store = ActivationStore.open("runs/smollm2")  # doctest: +SKIP
    >>> axis = assistant_axis(store, min_score=3, min_count=50)  # doctest: +SKIP
    >>> rv = role_vectors(store, min_score=3, min_count=50)  # doctest: +SKIP
    >>> rv.excluded, rv.axis() == axis  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import torch

from axislens._types import Float, Tensor
from axislens.analysis.effects import question_adjusted_means, question_weights
from axislens.directions import Direction, check_hook
from axislens.display import compact_repr, html_summary
from axislens.store import ActivationStore, ItemRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Adjust",
    "DirectionMethod",
    "Estimate",
    "MeanDiff",
    "RoleProjections",
    "RoleVectors",
    "StoreSource",
    "assistant_axis",
    "role_projections",
    "role_vectors",
]

StoreSource = ActivationStore | str | os.PathLike[str] | Sequence[ActivationStore]
"""A store, a store folder, or several stores of the same model/hook/span/layers."""

# Manifest fields that must agree before items of several stores are pooled into one result.
COMBINE_FIELDS = (
    "model.model_id",
    "model.revision",
    "model.weights_sha256",
    "model.processing",
    "span",
    "d_model",
    "layers",
)
_BUDGET_BYTES = 64 << 20  # float64 activations materialised per chunk
_Item = tuple[int, ItemRecord]  # (store index, record)


# --------------------------------------------------------------------------- sources


def _field(manifest: Mapping[str, Any], dotted: str) -> Any:
    value: Any = manifest
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@dataclass(frozen=True, slots=True)
class PooledSource:
    """One or more compatible stores read at one hook."""

    stores: tuple[ActivationStore, ...]
    hook: str

    @property
    def manifest(self) -> Mapping[str, Any]:
        return self.stores[0].manifest

    @property
    def layers(self) -> tuple[int, ...]:
        return self.stores[0].layers

    @property
    def d_model(self) -> int:
        return self.stores[0].d_model

    @property
    def model_id(self) -> str | None:
        value = _field(self.manifest, "model.model_id")
        return None if value is None else str(value)

    @property
    def n_model_layers(self) -> int:
        n = _field(self.manifest, "model.n_layers")
        return int(n) if isinstance(n, int) and n > max(self.layers) else max(self.layers) + 1

    @property
    def where(self) -> str:
        return ", ".join(str(s.root) for s in self.stores)

    def query(self, **filters: Any) -> list[_Item]:
        return [(k, r) for k, s in enumerate(self.stores) for r in s.query(**filters)]

    def resolve_layers(self, layers: Iterable[int] | None) -> tuple[int, ...]:
        if layers is None:
            return self.layers
        out = tuple(layers)
        for layer in out:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise TypeError(f"layers must be ints, got {layer!r}")
            if layer not in self.layers:
                raise ValueError(
                    f"layer {layer} is not stored in {self.where} (stored layers: "
                    f"{list(self.layers)})"
                )
        if not out or len(set(out)) != len(out):
            raise ValueError(f"layers must be distinct and non-empty, got {list(out)}")
        return out

    def provenance(self, **extra: Any) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": m.get("model"),
            "stores": [str(s.root) for s in self.stores],
            "hook": self.hook,
            "stored_layers": list(self.layers),
            "span": m.get("span"),
            "personas": m.get("personas"),
            "generation": m.get("generation"),
            **extra,
        }


def open_source(source: StoreSource, hook: str) -> PooledSource:
    """Open ``source`` (a store, its folder, or several stores of one model) at ``hook`` as one
    pooled source; refuse stores that cannot be pooled, naming the field."""
    check_hook(hook)
    if isinstance(source, ActivationStore):
        stores: tuple[ActivationStore, ...] = (source,)
    elif isinstance(source, (str, os.PathLike)):
        stores = (ActivationStore.open(source),)
    elif isinstance(source, Sequence) and source:
        stores = tuple(
            s if isinstance(s, ActivationStore) else ActivationStore.open(s) for s in source
        )
    else:
        raise TypeError(
            f"expected an ActivationStore, a store path or a list of stores, got {source!r}"
        )
    first = stores[0]
    for store in stores:
        if hook not in store.hooks:
            raise ValueError(
                f"{store.root}: no activations at hook {hook!r} (hooks: {list(store.hooks)})"
            )
        for name in COMBINE_FIELDS:
            a, b = _field(first.manifest, name), _field(store.manifest, name)
            if a != b:
                raise ValueError(
                    f"cannot pool stores {first.root} and {store.root}: manifest field {name!r} "
                    f"differs ({a!r} vs {b!r}); analyse them separately (e.g. compare_loadings)"
                )
    if len(stores) > 1:
        seen: dict[str, ActivationStore] = {}
        for store in stores:
            for rid in store.collected_ids():
                if rid in seen:
                    raise ValueError(f"item {rid!r} is in both {seen[rid].root} and {store.root}")
                seen[rid] = store
    return PooledSource(stores, hook)


def _stream(
    src: PooledSource, groups: Sequence[Sequence[_Item]], layers: Sequence[int]
) -> Iterator[tuple[int, list[ItemRecord], Float[Tensor, "sample layer d_model"]]]:
    """Yield ``(group index, records, float64 activations)`` chunk by chunk, groups in order.

    Chunks never straddle two groups; each holds at most ~64 MiB. Non-finite values are refused
    with the item, role and layer named.
    """
    chunk = max(1, _BUDGET_BYTES // (8 * len(layers) * src.d_model))
    for g, items in enumerate(groups):
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            blocks = [
                src.stores[k].activations(
                    src.hook, ids=[r.id for _, r in run], layers=list(layers), dtype=torch.float64
                )
                for k, run in (
                    (k, list(run)) for k, run in itertools.groupby(part, key=lambda t: t[0])
                )
            ]
            x = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
            recs = [r for _, r in part]
            if bool(torch.isfinite(x.sum())):  # one cheap pass; NaN/inf anywhere spoil the sum
                yield g, recs, x
                continue
            bad = ~torch.isfinite(x).all(dim=-1)
            if bool(bad.any()):
                i, j = (int(t) for t in bad.nonzero()[0])
                raise ValueError(
                    f"non-finite activation (NaN/inf) for item {recs[i].id!r} (role "
                    f"{recs[i].role!r}, kind {recs[i].kind!r}) at layer {layers[j]}, hook "
                    f"{src.hook!r}, in {src.stores[part[i][0]].root}; recollect or drop that item"
                )
            yield g, recs, x


# --------------------------------------------------------------------------- selection


def _check_filters(min_score: int | None, min_count: int) -> None:
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int) or not 0 <= min_score <= 3
    ):
        raise ValueError(f"min_score must be None or an int in 0..3, got {min_score!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")


@dataclass(frozen=True, slots=True)
class _Selection:
    names: tuple[str, ...]
    groups: tuple[tuple[_Item, ...], ...]
    excluded: dict[str, int]
    unscored: int
    judges: tuple[str, ...] = ()


def _select(
    src: PooledSource, kind: str, min_score: int | None, min_count: int, *, warn: bool = True
) -> _Selection:
    """Group the collected ``kind`` items by role name, filter by score and count."""
    _check_filters(min_score, min_count)
    items = src.query(kind=kind)
    if not items:
        raise ValueError(f"{src.where}: no collected responses of kind {kind!r}")
    unscored = 0
    judges: set[str] = set()
    if min_score is not None:
        scores = [s.scores() for s in src.stores]
        got = [scores[k].get(r.id, {}).get("score") for k, r in items]
        judges = {str(scores[k][r.id].get("judge")) for k, r in items if r.id in scores[k]}
        if all(s is None for s in got):
            raise ValueError(
                f"{src.where}: no judge scores for the {kind!r} responses (e.g. collected with "
                f"--judge none); pass min_score=None to use every collected response "
                f"unfiltered (CLI: --min-score none)"
            )
        unscored = sum(s is None for s in got)
        items = [it for it, s in zip(items, got, strict=True) if s is not None and s >= min_score]
    by_role: dict[str, list[_Item]] = {
        name: [] for name in sorted({r.role for _, r in src.query(kind=kind)})
    }
    for item in items:
        by_role[item[1].role].append(item)
    excluded = {n: len(v) for n, v in by_role.items() if len(v) < min_count}
    kept = [n for n in by_role if n not in excluded]
    rule = f"{min_count} {kind!r} responses" + (
        f" with score >= {min_score}" if min_score is not None else ""
    )
    if not kept:
        best = ", ".join(f"{n} ({c})" for n, c in sorted(excluded.items(), key=lambda t: -t[1])[:5])
        hint = "lower min_count (CLI: --min-count)" + (
            " or pass min_score=None (CLI: --min-score none)" if min_score is not None else ""
        )
        what = "role" if kind == "role" else "trait"
        raise ValueError(f"{src.where}: no {what} has at least {rule} (most: {best}); {hint}")
    if excluded and warn:
        listed = ", ".join(f"{n} ({c})" for n, c in list(excluded.items())[:10])
        more = f", ... ({len(excluded)} in all)" if len(excluded) > 10 else ""
        warnings.warn(
            f"{len(excluded)} of {len(by_role)} roles have fewer than {rule} and are excluded: "
            f"{listed}{more}",
            UserWarning,
            stacklevel=3,
        )
    groups = tuple(tuple(sorted(by_role[n], key=lambda t: (t[0], t[1].id))) for n in kept)
    return _Selection(tuple(kept), groups, excluded, unscored, tuple(sorted(judges)))


def _defaults(src: PooledSource) -> tuple[_Item, ...]:
    return tuple(src.query(kind="default"))


def check_direction(
    direction: Direction, *, d_model: int, hook: str, model_id: str | None, where: str
) -> None:
    """Refuse a direction of another width, hook or model than ``where``."""
    if not isinstance(direction, Direction):
        raise TypeError(f"expected a Direction, got {type(direction).__name__}")
    direction.check_compatible(d_model=d_model)
    if direction.hook != hook:
        raise ValueError(
            f"Direction lives at hook {direction.hook!r} but {where} is at {hook!r} (field 'hook')"
        )
    theirs = _field(direction.provenance, "model.model_id")
    if theirs is not None and model_id is not None and str(theirs) != model_id:
        raise ValueError(
            f"Direction was made from model {theirs!r} but {where} holds {model_id!r} "
            f"(field 'model.model_id')"
        )


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


# --------------------------------------------------------------------------- role vectors


@dataclass(frozen=True, slots=True, eq=False)
class RoleVectors:
    """Per-role mean vectors (float64) at some stored layers, plus the default vector.

    Fields:
        names: role names, sorted.
        vectors: ``[role, layer, d_model]`` role means; ``layer`` runs over :attr:`layers`.
        counts: responses averaged per role.
        layers: the model layers of the second axis of :attr:`vectors`.
        hook: the hook the activations come from.
        default: ``[layer, d_model]`` mean of all default responses, or None if none collected.
        default_count: default responses averaged.
        excluded: roles left out for having fewer than ``min_count`` qualifying responses,
            with their counts.
        descriptions: one text per role (persona description, else its first system prompt).
        n_model_layers: rows of the directions made from these vectors.
        provenance: store manifest fields and the filters used.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> rv = role_vectors(store, min_score=3, min_count=50)  # doctest: +SKIP
        >>> rv.at(15).shape  # [role, d_model]  # doctest: +SKIP
        >>> axis = rv.axis()  # doctest: +SKIP
    """

    names: tuple[str, ...]
    vectors: Float[Tensor, "role layer d_model"]
    counts: tuple[int, ...]
    layers: tuple[int, ...]
    hook: str = "resid_post"
    default: Float[Tensor, "layer d_model"] | None = None
    default_count: int = 0
    excluded: Mapping[str, int] = field(default_factory=dict)
    descriptions: tuple[str, ...] | None = None
    n_model_layers: int | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vectors).detach().to("cpu", torch.float64).clone()
        names, counts, layers = tuple(self.names), tuple(self.counts), tuple(self.layers)
        if v.ndim != 3 or v.shape[0] != len(names) or v.shape[1] != len(layers):
            raise ValueError(
                f"RoleVectors.vectors has shape {tuple(v.shape)}; expected [role={len(names)}, "
                f"layer={len(layers)}, d_model]"
            )
        if len(counts) != len(names) or len(set(names)) != len(names):
            raise ValueError("RoleVectors needs distinct names and one count per role")
        if self.descriptions is not None and len(self.descriptions) != len(names):
            raise ValueError("RoleVectors.descriptions needs one text per role")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("RoleVectors.vectors has non-finite values")
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "layers", layers)
        if self.default is not None:
            dv = torch.as_tensor(self.default).detach().to("cpu", torch.float64).clone()
            if dv.shape != v.shape[1:]:
                raise ValueError(
                    f"RoleVectors.default has shape {tuple(dv.shape)}; expected {tuple(v.shape[1:])}"
                )
            object.__setattr__(self, "default", dv)
        object.__setattr__(self, "excluded", _frozen(self.excluded))
        object.__setattr__(self, "provenance", _frozen(self.provenance))

    __hash__ = None  # type: ignore[assignment]

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def model_id(self) -> str | None:
        value = _field(self.provenance, "model.model_id")
        return None if value is None else str(value)

    def column(self, layer: int) -> int:
        """Index of model ``layer`` along the layer axis of :attr:`vectors`."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} not in these role vectors (layers: {list(self.layers)})"
            )
        return self.layers.index(layer)

    def at(self, layer: int) -> Float[Tensor, "role d_model"]:
        """Role vectors at model ``layer``."""
        return self.vectors[:, self.column(layer)]

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("model", self.model_id),
            ("roles", len(self.names)),
            ("layers", list(self.layers)),
            ("d_model", self.d_model),
            ("hook", self.hook),
            ("responses", sum(self.counts)),
            ("default responses", self.default_count if self.default is not None else None),
            ("excluded roles", len(self.excluded)),
        ]

    def __repr__(self) -> str:
        return compact_repr("RoleVectors", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("RoleVectors", self._facts(), self.to_pandas())

    def to_pandas(self) -> pd.DataFrame:
        """One row per role: ``role``, ``count``, ``description`` and the vector's norm at each
        layer (``norm_L{layer}``)."""
        import pandas as pd

        norms = torch.linalg.vector_norm(self.vectors, dim=-1)
        data: dict[str, Any] = {"role": list(self.names), "count": list(self.counts)}
        if self.descriptions is not None:
            data["description"] = list(self.descriptions)
        for k, layer in enumerate(self.layers):
            data[f"norm_L{layer}"] = norms[:, k].tolist()
        return pd.DataFrame(data)

    def axis_rows(self) -> Float[Tensor, "layer d_model"]:
        """``default - mean over roles`` at each of :attr:`layers` (float64)."""
        if self.default is None:
            raise ValueError(
                "no collected default responses (kind 'default'); the Assistant Axis needs them"
            )
        return self.default - self.vectors.mean(dim=0)

    def axis(self) -> Direction:
        """The Assistant Axis ``mean(default) - mean(role vectors)`` as a :class:`Direction`."""
        return self.to_direction(self.axis_rows(), method="mean_diff")

    def to_direction(
        self, rows: Float[Tensor, "layer d_model"], method: str, **extra: Any
    ) -> Direction:
        """A model-layer :class:`Direction` with ``rows`` at :attr:`layers`, zero elsewhere."""
        prov = {
            **dict(self.provenance),
            "method": method,
            "layers": list(self.layers),
            "roles": dict(zip(self.names, self.counts, strict=True)),
            "roles_excluded": dict(self.excluded),
            "n_default": self.default_count,
            **extra,
        }
        n = self.n_model_layers or max(self.layers) + 1
        return _layer_direction(
            rows, self.layers, n, method=method, hook=self.hook, provenance=prov
        )


def _layer_direction(
    rows: Float[Tensor, "layer d_model"],
    layers: Sequence[int],
    n_model_layers: int,
    *,
    method: str,
    hook: str,
    provenance: Mapping[str, Any],
) -> Direction:
    """A :class:`Direction` of ``n_model_layers`` rows: ``rows`` at ``layers``, zero elsewhere."""
    full = torch.zeros(n_model_layers, rows.shape[-1], dtype=torch.float64)
    full[list(layers)] = rows.to(torch.float64)
    return Direction(full, method=method, hook=hook, provenance=provenance)


def _descriptions(
    names: Sequence[str], groups: Sequence[Sequence[_Item]], personas: Any
) -> tuple[str, ...]:
    known: dict[str, str] = {}
    if personas is not None:
        known = {str(r.name): str(r.description) for r in personas.roles}
    out = []
    for name, items in zip(names, groups, strict=True):
        if name in known:
            out.append(known[name])
            continue
        first = min(items, key=lambda t: (t[1].prompt_index, t[1].id))[1]
        system = [m["content"] for m in first.messages if m["role"] == "system"]
        out.append(system[0][:300] if system else "")
    return tuple(out)


Adjust = Literal["auto", "questions", "none"]
"""How role and default vectors treat question effects: ``"none"`` plain means; ``"questions"``
the question-adjusted estimator (:mod:`axislens.analysis.effects`); ``"auto"`` (default) adjusts
exactly when the groups weigh the questions differently (a rotated or nested design, or a judge
filter that kept different questions per role), where the plain means would differ."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """Group means ``[group, layer, d_model]`` (roles, then the default set) and which
    estimator made them, with the reason (recorded in every provenance and summary)."""

    means: Float[Tensor, "group layer d_model"]
    estimator: str
    reason: str

    def describe(self) -> dict[str, str]:
        return {"estimator": self.estimator, "estimator_reason": self.reason}


def _check_adjust(adjust: str) -> None:
    if adjust not in get_args(Adjust):
        raise ValueError(f"unknown adjust {adjust!r}; expected one of {list(get_args(Adjust))}")


def _question_counts(
    groups: Sequence[Sequence[_Item]],
) -> tuple[tuple[str, ...], Float[Tensor, "group question"]]:
    qids = tuple(sorted({r.question_id for g in groups for _, r in g}))
    col = {q: j for j, q in enumerate(qids)}
    counts = torch.zeros(len(groups), len(qids), dtype=torch.float64)
    for g, items in enumerate(groups):
        for _, r in items:
            counts[g, col[r.question_id]] += 1
    return qids, counts


def _weights_differ(counts: Float[Tensor, "group question"]) -> bool:
    w = question_weights(counts)
    return bool((w - w[-1]).abs().max() > 1e-12)


def _adjusts(adjust: str, counts: Float[Tensor, "group question"]) -> bool:
    """Whether ``adjust`` runs the question-adjusted estimator on groups of these counts."""
    return adjust == "questions" or (adjust == "auto" and _weights_differ(counts))


def _estimate(
    src: PooledSource,
    groups: Sequence[Sequence[_Item]],
    cols: Sequence[int],
    adjust: str,
    names: Sequence[str],
) -> Estimate:
    """Means of ``groups`` (the last is the default set, the anchor), plain or question-adjusted
    per ``adjust``, streaming the store once."""
    _check_adjust(adjust)
    qids, counts = _question_counts(groups)
    unequal = _weights_differ(counts)
    adjusted = _adjusts(adjust, counts)
    sums = torch.zeros(len(groups), len(cols), src.d_model, dtype=torch.float64)
    qsums = torch.zeros(len(qids) if adjusted else 0, len(cols), src.d_model, dtype=torch.float64)
    col = {q: j for j, q in enumerate(qids)}
    for g, recs, x in _stream(src, groups, cols):
        sums[g] += x.sum(dim=0)
        if adjusted:
            qsums.index_add_(0, torch.tensor([col[r.question_id] for r in recs]), x)
    if adjusted:
        means = question_adjusted_means(sums, qsums, counts, anchor=len(groups) - 1, names=names)
        why = (
            "requested (adjust='questions')"
            if adjust == "questions"
            else "the groups weigh the questions differently"
        )
        return Estimate(means, "question-adjusted", why)
    means = sums.div_(counts.sum(dim=1)[:, None, None])
    why = (
        "requested (adjust='none')"
        if adjust == "none"
        else "every group weighs the questions alike"
    )
    if adjust == "none" and unequal:
        why += (
            "; the groups weigh the questions differently, so the axis may carry a question offset"
        )
    return Estimate(means, "plain", why)


def role_vectors(
    source: StoreSource,
    *,
    hook: str = "resid_post",
    layers: Iterable[int] | None = None,
    min_score: int | None = 3,
    min_count: int = 50,
    personas: Any = None,
    adjust: Adjust = "auto",
) -> RoleVectors:
    """Mean vector of each role's qualifying responses, and of all default responses.

    ``min_score=None`` keeps every collected role response (stores judged with keep-all).
    ``personas`` (a :class:`~axislens.personas.catalogue.Personas`) supplies role descriptions for plots.
    ``adjust`` (:data:`Adjust`): with ``"questions"`` (what ``"auto"`` picks when roles and the
    default set answered different question mixes), a role's vector is its mean with its
    questions' effects replaced by the default set's mix (:mod:`axislens.analysis.effects`);
    the default vector stays the plain mean of all default responses. ``provenance`` records
    the estimator and why.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> rv = role_vectors("runs/smollm2", min_score=3, min_count=50)  # doctest: +SKIP
        >>> rv.excluded  # roles with too few score-3 responses, and their counts  # doctest: +SKIP
        >>> rv.provenance["estimator"]  # doctest: +SKIP
        'question-adjusted'
    """
    _check_adjust(adjust)
    src = open_source(source, hook)
    cols = src.resolve_layers(layers)
    sel = _select(src, "role", min_score, min_count)
    defaults = _defaults(src)
    n_roles = len(sel.names)
    if defaults:
        est = _estimate(src, (*sel.groups, defaults), cols, adjust, (*sel.names, "default"))
    else:  # no anchor: plain role means (no axis can be made)
        est = _estimate(src, sel.groups, cols, "none", sel.names)
        est = Estimate(est.means, "plain", "no default responses to adjust against")
    return RoleVectors(
        names=sel.names,
        vectors=est.means[:n_roles],
        counts=tuple(len(g) for g in sel.groups),
        layers=cols,
        hook=hook,
        default=est.means[n_roles] if defaults else None,
        default_count=len(defaults),
        excluded=sel.excluded,
        descriptions=_descriptions(sel.names, sel.groups, personas),
        n_model_layers=src.n_model_layers,
        provenance=src.provenance(
            min_score=min_score,
            min_count=min_count,
            unscored_role_responses=sel.unscored,
            judges=list(sel.judges),
            adjust=adjust,
            **est.describe(),
        ),
    )


def assistant_axis(
    source: StoreSource,
    *,
    min_score: int | None = 3,
    min_count: int = 50,
    hook: str = "resid_post",
    layers: Iterable[int] | None = None,
    adjust: Adjust = "auto",
) -> Direction:
    """The Assistant Axis ``mean(default vectors) - mean(role vectors)`` at every stored layer.

    Role vectors average each role's responses scored ``>= min_score`` (None: all); roles with
    fewer than ``min_count`` of them are excluded, warned about and listed in
    ``provenance["roles_excluded"]`` (those used are in ``provenance["roles"]`` with counts).
    ``adjust`` (:data:`Adjust`, default ``"auto"``) removes question effects when the two sides
    answered different question mixes (:func:`role_vectors`); ``provenance["estimator"]`` says
    which estimator ran.

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> axis = assistant_axis(store, min_score=3, min_count=50)  # doctest: +SKIP
        >>> axis.project(acts, layer=15)  # higher = more Assistant-like  # doctest: +SKIP
    """
    return MeanDiff(min_score=min_score, min_count=min_count, layers=layers, adjust=adjust).fit(
        source, hook=hook
    )


# --------------------------------------------------------------------------- strategies


class DirectionMethod(Protocol):
    """A way to get a per-layer direction from a store: ``method.fit(store, hook=...)``."""

    def fit(self, source: StoreSource, *, hook: str = "resid_post") -> Direction: ...


@dataclass(frozen=True, slots=True)
class MeanDiff:
    """Mean difference ``mean(default) - mean(role vectors)`` (the paper's Assistant Axis).

    Example:
        Needs a collected store of a real model (not run by the doctest suite).

        >>> MeanDiff(min_score=3, min_count=50).fit(store)  # doctest: +SKIP
    """

    min_score: int | None = 3
    min_count: int = 50
    layers: Iterable[int] | None = None
    adjust: Adjust = "auto"

    def __post_init__(self) -> None:
        _check_filters(self.min_score, self.min_count)
        _check_adjust(self.adjust)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def fit(self, source: StoreSource, *, hook: str = "resid_post") -> Direction:
        rv = role_vectors(
            source,
            hook=hook,
            layers=self.layers,
            min_score=self.min_score,
            min_count=self.min_count,
            adjust=self.adjust,
        )
        return rv.axis()


# --------------------------------------------------------------------------- projections


@dataclass(frozen=True, slots=True, eq=False)
class RoleProjections:
    """Projection ``r_l · a_l / |a_l|`` of each role vector (and the default) on the axis."""

    layer: int
    names: tuple[str, ...]
    values: Float[Tensor, " role"]
    default: float | None
    descriptions: tuple[str, ...] | None = None
    counts: tuple[int, ...] | None = None

    def to_pandas(self) -> pd.DataFrame:
        """One row per role, most Assistant-like first: ``role``, ``projection``, and
        ``count`` / ``description`` where known."""
        import pandas as pd

        data: dict[str, Any] = {"role": list(self.names), "projection": self.values.tolist()}
        if self.counts is not None:
            data["count"] = list(self.counts)
        if self.descriptions is not None:
            data["description"] = list(self.descriptions)
        frame = pd.DataFrame(data).sort_values("projection", ascending=False)
        return frame.reset_index(drop=True)

    def _facts(self) -> list[tuple[str, Any]]:
        order = torch.argsort(self.values, descending=True).tolist()
        return [
            ("layer", self.layer),
            ("roles", len(self.names)),
            ("default", self.default),
            ("highest", self.names[order[0]] if order else None),
            ("lowest", self.names[order[-1]] if order else None),
        ]

    def __repr__(self) -> str:
        return compact_repr("RoleProjections", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("RoleProjections", self._facts(), self.to_pandas())


def role_projections(
    roles: RoleVectors, layer: int, *, axis: Direction | None = None
) -> RoleProjections:
    """Project each role vector (and the default) on ``axis`` (default: the roles' own axis)."""
    axis = roles.axis() if axis is None else axis
    check_direction(
        axis,
        d_model=roles.d_model,
        hook=roles.hook,
        model_id=roles.model_id,
        where="the role vectors",
    )
    u = axis.unit(layer).double()
    default = None if roles.default is None else float(roles.default[roles.column(layer)] @ u)
    return RoleProjections(
        layer, roles.names, roles.at(layer) @ u, default, roles.descriptions, roles.counts
    )
