"""A linear probe as a third way to the axis: logistic regression, default vs role responses.

Per layer, an L2-regularised logistic regression (float64, full-batch L-BFGS in torch, classes
weighted equally) separates default responses (label 1) from the role responses of the
qualifying roles (label 0). Features are centred on the training mean and divided by one global
scale (the RMS norm), so the fitted weight vector stays a direction of the residual stream; the
:class:`~axislens.directions.Direction` row is that weight mapped back to raw activations and
normalised to unit length, positive towards the default (Assistant) side like the axis.

The split is deterministic: an item goes to the test set when
``sha256(f"{seed}/{key}")`` (as a fraction of 2**256) is below ``test_fraction``, ``key`` being
its question id (``split="question"``: test questions are never seen in training) or item id.
Each class is first subsampled to ``max_per_class`` items (seeded).

Example:
    Needs a collected store of a real model (not run by the doctest suite).

    >>> res = Probe(min_score=3, min_count=50).run(store)  # doctest: +SKIP
    >>> res.test_accuracy, res.direction.cosine(axis)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from axislens._types import Float, Tensor
from axislens.analysis.vectors import (
    StoreSource,
    _check_filters,
    _defaults,
    _Item,
    _layer_direction,
    _select,
    _stream,
    open_source,
)
from axislens.directions import Direction

__all__ = ["Probe", "ProbeResult"]

_LAYER_BYTES = 512 << 20


@dataclass(frozen=True, slots=True, eq=False)
class ProbeResult:
    """A fitted probe: its direction and accuracies per layer (``n_*`` = (role, default))."""

    direction: Direction
    layers: tuple[int, ...]
    train_accuracy: Float[Tensor, " layer"]
    test_accuracy: Float[Tensor, " layer"]
    test_balanced_accuracy: Float[Tensor, " layer"]
    n_train: tuple[int, int]
    n_test: tuple[int, int]


def _fraction(seed: int, key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest(), "big") / 2**256


def _logistic(
    x: Float[Tensor, "sample d_model"], y: Tensor, l2: float, max_iter: int
) -> tuple[Tensor, float]:
    """Weights ``w`` and bias ``b`` of ``sigmoid(x @ w + b)`` in raw coordinates."""
    mu = x.mean(dim=0)
    xc = x - mu
    scale = float(xc.pow(2).sum(dim=1).mean().sqrt()) or 1.0
    z = xc / scale
    pos = y.sum()
    sw = torch.where(y > 0, 0.5 / pos, 0.5 / (len(y) - pos))
    sign = 2 * y - 1
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (sw * torch.nn.functional.softplus(-sign * (z @ w + b))).sum() + 0.5 * l2 * (w @ w)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    w_raw = w.detach() / scale
    return w_raw, float(b.detach()) - float(mu @ w_raw)


def _accuracy(pred: Tensor, y: Tensor) -> tuple[float, float]:
    hit = (pred == y).double()
    balanced = 0.5 * (float(hit[y > 0].mean()) + float(hit[y == 0].mean()))
    return float(hit.mean()), balanced


@dataclass(frozen=True, slots=True)
class Probe:
    """Logistic-regression probe, default (1) vs role (0) responses; see the module docstring.

    ``l2`` is the ridge penalty on the weights of the scaled features (class-balanced mean
    log-loss + ``l2/2 |w|^2``).
    """

    min_score: int | None = 3
    min_count: int = 50
    l2: float = 1e-3
    test_fraction: float = 0.25
    split: Literal["question", "item"] = "question"
    max_per_class: int = 1000
    seed: int = 0
    layers: Iterable[int] | None = None
    max_iter: int = 200

    def __post_init__(self) -> None:
        _check_filters(self.min_score, self.min_count)
        if self.split not in ("question", "item"):
            raise ValueError(f"unknown split {self.split!r}; expected 'question' or 'item'")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if self.max_per_class < 2 or self.max_iter < 1:
            raise ValueError("max_per_class must be >= 2 and max_iter >= 1")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def fit(self, source: StoreSource, *, hook: str = "resid_post") -> Direction:
        """The probe's :class:`Direction` (see :meth:`run` for accuracies)."""
        return self.run(source, hook=hook).direction

    def _subsample(self, items: Sequence[_Item], stream: int) -> list[_Item]:
        if len(items) <= self.max_per_class:
            return list(items)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + stream)
        keep = sorted(int(i) for i in torch.randperm(len(items), generator=g)[: self.max_per_class])
        return [items[i] for i in keep]

    def run(self, source: StoreSource, *, hook: str = "resid_post") -> ProbeResult:
        """Fit one probe per layer; returns the direction and train/test accuracies."""
        src = open_source(source, hook)
        cols = src.resolve_layers(self.layers)
        sel = _select(src, "role", self.min_score, self.min_count)
        defaults = _defaults(src)
        if not defaults:
            raise ValueError(f"{src.where}: no collected default responses to probe against")
        role_items = self._subsample([it for g in sel.groups for it in g], 0)
        default_items = self._subsample(defaults, 1)
        groups = (tuple(role_items), tuple(default_items))
        recs = [r for g in groups for _, r in g]
        y = torch.tensor([0.0] * len(role_items) + [1.0] * len(default_items), dtype=torch.float64)
        key = (lambda r: r.question_id) if self.split == "question" else (lambda r: r.id)
        test = torch.tensor([_fraction(self.seed, key(r)) < self.test_fraction for r in recs])
        n_train = (int((~test & (y == 0)).sum()), int((~test & (y == 1)).sum()))
        n_test = (int((test & (y == 0)).sum()), int((test & (y == 1)).sum()))
        if min(n_train + n_test) == 0:
            raise ValueError(
                f"probe split left a class empty (train role/default {n_train}, test {n_test}); "
                f"use split='item' or change test_fraction"
            )
        per_layer = max(1, _LAYER_BYTES // (8 * len(recs) * src.d_model))
        rows, accs = [], []
        for k in range(0, len(cols), per_layer):
            block = cols[k : k + per_layer]
            x = torch.cat([chunk for _, _, chunk in _stream(src, groups, block)])
            for j in range(len(block)):
                w, b = _logistic(x[~test, j], y[~test], self.l2, self.max_iter)
                scores = x[:, j] @ w + b
                pred = (scores > 0).double()
                train = _accuracy(pred[~test], y[~test])[0]
                accs.append((train, *_accuracy(pred[test], y[test])))
                norm = torch.linalg.vector_norm(w)
                if not bool(norm > 0):
                    raise ValueError(f"probe weights are zero at layer {block[j]} (l2 too large?)")
                rows.append(w / norm)
        prov = src.provenance(
            min_score=self.min_score,
            min_count=self.min_count,
            method="probe",
            layers=list(cols),
            roles=dict(zip(sel.names, (len(g) for g in sel.groups), strict=True)),
            roles_excluded=dict(sel.excluded),
            n_default=len(defaults),
            probe={
                "l2": self.l2,
                "split": self.split,
                "test_fraction": self.test_fraction,
                "seed": self.seed,
                "max_per_class": self.max_per_class,
                "n_train": list(n_train),
                "n_test": list(n_test),
                "test_accuracy": [a[1] for a in accs],
            },
        )
        direction = _layer_direction(
            torch.stack(rows), cols, src.n_model_layers, method="probe", hook=hook, provenance=prov
        )
        t = torch.tensor(accs, dtype=torch.float64)
        return ProbeResult(
            direction=direction,
            layers=cols,
            train_accuracy=t[:, 0],
            test_accuracy=t[:, 1],
            test_balanced_accuracy=t[:, 2],
            n_train=n_train,
            n_test=n_test,
        )
