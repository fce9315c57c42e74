"""Layer sweeps and ablation sweeps along a direction, returning tidy result objects.

:func:`layer_sweep` applies one op (``Add`` by default) at one layer at a time, for each strength,
and measures against the unsteered run, over a batch of prompts, with one batched forward per
(layer, strength):

- ``proj@k``: projection of ``resid_post`` at readout layer ``k`` on the unit axis of layer
  ``k``, at the last prompt token, mean over prompts; ``dproj@k``: its change from unsteered;
- ``kl``: ``KL(unsteered || steered)`` of the next-token distribution after the prompt (nats),
  mean over prompts;
- ``dlogp:<name>``: change in the log-probability (summed over tokens) of a chosen continuation
  (e.g. ``"I am an AI"`` vs a character's self-introduction), teacher-forced, mean over prompts;
- optionally the generated text of each prompt under each setting.

:func:`ablation_sweep` projects the axis out of one layer at a time (``Ablate(0)``) and adds
``drop@k``: unsteered minus ablated projection at readout layer ``k``.

Batches are right-padded (causal attention keeps real tokens blind to padding), so a prompt's
numbers do not depend on what it is batched with, up to float rounding. A token prefix shared by
every row of a batch (e.g. the chat template's default system prompt) is computed once per
setting, under the same interventions, and reused through a
:class:`~axislens.model.decoding.PrefixCache`: the same numbers for fewer tokens. Generated text
comes from :func:`~axislens.model.decoding.generate_tokens` (the one decode loop).

Example:
    Needs a real model (not run by the doctest suite).

    >>> res = layer_sweep(model, axis, ["Who are you?"], layers=range(0, 30, 3),
    ...                   strengths=(-8, -4, 0, 4, 8))  # doctest: +SKIP
    >>> res.table("dproj@29").shape  # doctest: +SKIP
    torch.Size([10, 5])
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import torch

from axislens._types import Float, Tensor
from axislens.directions import Direction, HookName
from axislens.display import compact_repr, html_summary, shape
from axislens.interventions.attach import Intervention, intervene
from axislens.interventions.operations import Ablate, Add, All, Op, Positions
from axislens.model.decoding import PrefixCache, SamplingConfig, generate_tokens
from axislens.model.layers import LayerSpec, resolve_layers
from axislens.model.protocol import Model

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SweepResult",
    "SweepText",
    "ablation_sweep",
    "as_prompt_ids",
    "last_token_resid",
    "layer_sweep",
    "prompt_contrast_axis",
]

Prompt = Any
"""A :class:`~axislens.model.chat.FormattedConversation`, a 1-d token tensor, or a user message str."""


@dataclass(frozen=True, slots=True)
class SweepText:
    """Generated text of prompt ``prompt`` with the op at ``layer`` and ``strength``."""

    layer: int
    strength: float
    prompt: int
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class SweepResult:
    """A layer x strength x metric table (``values``) plus the unsteered ``baseline``.

    ``rows()`` gives the tidy form (one dict per layer, strength, metric); ``table(metric)`` a
    ``[layer, strength]`` tensor; ``to_csv`` / ``to_json`` write them.
    """

    kind: Literal["steer", "ablation"]
    op: str
    hook: str
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    metrics: tuple[str, ...]
    values: Float[Tensor, "layer strength metric"]
    baseline: Mapping[str, float]
    texts: tuple[SweepText, ...] = ()
    baseline_texts: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.layers), len(self.strengths), len(self.metrics))
        if tuple(self.values.shape) != shape:
            raise ValueError(
                f"SweepResult.values has shape {tuple(self.values.shape)}, expected {shape}"
            )
        object.__setattr__(self, "baseline", MappingProxyType(dict(self.baseline)))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    def table(self, metric: str) -> Float[Tensor, "layer strength"]:
        """The ``[layer, strength]`` values of one metric."""
        if metric not in self.metrics:
            raise ValueError(f"unknown metric {metric!r}; this sweep has {list(self.metrics)}")
        return self.values[:, :, self.metrics.index(metric)]

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows ``{"layer", "strength", "metric", "value"}``."""
        return [
            {"layer": layer, "strength": s, "metric": m, "value": float(self.values[i, j, k])}
            for i, layer in enumerate(self.layers)
            for j, s in enumerate(self.strengths)
            for k, m in enumerate(self.metrics)
        ]

    def to_pandas(self) -> pd.DataFrame:
        """The tidy rows as a DataFrame (``layer, strength, metric, value``); pivot with
        ``df.pivot_table(index="layer", columns="strength", values="value")``."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["layer", "strength", "metric", "value"])

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("kind", self.kind),
            ("op", self.op),
            ("hook", self.hook),
            ("layers", list(self.layers)),
            ("strengths", list(self.strengths)),
            ("metrics", list(self.metrics)),
            ("values", shape(self.values)),
            ("texts", len(self.texts)),
            *((f"baseline {k}", float(v)) for k, v in list(self.baseline.items())[:4]),
        ]

    def __repr__(self) -> str:
        return compact_repr("SweepResult", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("SweepResult", self._facts(), self.to_pandas())

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the tidy rows as CSV (``layer,strength,metric,value``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["layer", "strength", "metric", "value"])
            writer.writeheader()
            writer.writerows(self.rows())
        return path

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "op": self.op,
            "hook": self.hook,
            "layers": list(self.layers),
            "strengths": list(self.strengths),
            "metrics": list(self.metrics),
            "baseline": dict(self.baseline),
            "rows": self.rows(),
            "texts": [
                {"layer": t.layer, "strength": t.strength, "prompt": t.prompt, "text": t.text}
                for t in self.texts
            ],
            "baseline_texts": list(self.baseline_texts),
            "provenance": dict(self.provenance),
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write everything (tidy rows, baseline, texts, provenance) as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


# --------------------------------------------------------------------------- inputs


def as_prompt_ids(model: Model, prompt: Prompt) -> Tensor:
    """A prompt as 1-d token ids: a conversation's ids, a token tensor, or a user message
    formatted with the chat template and the generation prompt."""
    if isinstance(prompt, str):
        from axislens.model.chat import format_conversation

        conv = format_conversation(
            model, [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        return conv.input_ids
    ids = prompt.input_ids if hasattr(prompt, "input_ids") else torch.as_tensor(prompt)
    if ids.ndim != 1 or ids.numel() == 0 or ids.is_floating_point():
        raise ValueError(f"a prompt must be 1-d token ids, got shape {tuple(ids.shape)}")
    return ids.long()


@dataclass(frozen=True, slots=True)
class _Batch:
    ids: Tensor  # [rows, width] right-padded
    mask: Tensor
    last: Tensor  # [prompts] row-local index of each prompt's last token
    first_row: Tensor  # [prompts] row holding each prompt alone (or with its first continuation)
    conts: tuple[tuple[int, int, int, Tensor], ...]  # (row, prompt, cont index, cont ids)
    prompt_len: int | None
    prefix: int = 0  # leading tokens shared by every row: run once, then reused via a KV cache


def _batch(
    model: Model, prompts: Sequence[Tensor], conts: Sequence[Tensor], same_len: bool
) -> _Batch:
    rows: list[Tensor] = []
    first, last, cinfo = [], [], []
    for p, ids in enumerate(prompts):
        first.append(len(rows))
        last.append(len(ids) - 1)
        if not conts:
            rows.append(ids)
        for j, c in enumerate(conts):
            cinfo.append((len(rows), p, j, c))
            rows.append(torch.cat([ids, c]))
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id
    ids_t = torch.full((len(rows), width), int(pad if pad is not None else 0), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids_t[i, : len(r)], mask[i, : len(r)] = r, 1
    return _Batch(
        ids_t,
        mask,
        torch.tensor(last),
        torch.tensor(first),
        tuple(cinfo),
        len(prompts[0]) if same_len else None,
        _shared_prefix(rows, min(last)),
    )


def _shared_prefix(rows: Sequence[Tensor], limit: int, minimum: int = 8) -> int:
    """Length of the token prefix common to all rows (at most ``limit``, so every prompt's last
    token stays outside it); 0 when too short or a single row (nothing to share)."""
    if len(rows) < 2:
        return 0
    n = min(limit, *(len(r) for r in rows))
    same = (torch.stack([r[:n] for r in rows]) == rows[0][:n]).all(0)
    k = int(same.long().cumprod(0).sum())
    return k if k >= minimum else 0


@torch.no_grad()
def _measure(
    model: Model, batch: _Batch, readouts: Sequence[int], units: Tensor, ivs: Sequence[Intervention]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(proj [prompts, readouts], next-token logprobs [prompts, vocab], cont logp [conts])``."""
    device = model.cfg.device
    got: dict[int, Tensor] = {}
    rows = batch.first_row.to(device)
    last = batch.last.to(device)

    def reader(k: int) -> Callable[..., None]:
        def read(h: Tensor, hook: Any) -> None:
            got[k] = h[rows, last].double() @ units[k].to(h.device, torch.float64)

        return read

    fwd = [(f"blocks.{layer}.hook_resid_post", reader(k)) for k, layer in enumerate(readouts)]
    ids, mask, shift = batch.ids.to(device), batch.mask.to(device), batch.prefix
    with intervene(model, *ivs, prompt_len=batch.prompt_len):
        kwargs: dict[str, Any] = {}
        if shift:
            # The shared prefix (e.g. a chat template's system prompt) runs once under the same
            # interventions; its keys/values are then repeated for every row.
            cache = PrefixCache.build(model, batch.ids[0, :shift]).expand(ids.shape[0])
            width = ids.shape[1] - shift
            pos = torch.arange(shift, shift + width, device=device).expand(ids.shape[0], width)
            kwargs = {"past_key_values": cache, "use_cache": True, "position_ids": pos}
            last = last - shift
        with model.hooks(fwd_hooks=fwd):
            logits = model(ids[:, shift:], attention_mask=mask, **kwargs)
    next_lp = torch.log_softmax(logits[rows, last].double(), dim=-1).cpu()
    cont = torch.zeros(len(batch.conts), dtype=torch.float64)
    for i, (row, p, _j, c) in enumerate(batch.conts):
        start = int(batch.last[p]) + 1 - shift
        pos_c = torch.arange(start - 1, start - 1 + len(c), device=logits.device)
        lp = torch.log_softmax(logits[row, pos_c].double(), dim=-1)
        cont[i] = lp[torch.arange(len(c)), c.to(lp.device)].sum().cpu()
    proj = torch.stack([got[k].cpu() for k in range(len(readouts))], dim=-1)
    return proj, next_lp, cont


def _sha(prompts: Sequence[Tensor]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.numpy().astype("int64").tobytes() + b"|")
    return h.hexdigest()


# --------------------------------------------------------------------------- sweeps


def layer_sweep(
    model: Model,
    direction: Direction,
    prompts: Sequence[Prompt],
    *,
    op: Callable[[float], Op] = Add,
    layers: LayerSpec | None = None,
    strengths: Sequence[float] = (-8.0, -4.0, 0.0, 4.0, 8.0),
    readout_layers: LayerSpec = (-1,),
    hook: HookName | None = None,
    positions: Positions | None = None,
    norm_units: Tensor | None = None,
    continuations: Mapping[str, str] | None = None,
    generate: SamplingConfig | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> SweepResult:
    """Sweep ``op(strength)`` over ``layers`` x ``strengths``; see the module docstring.

    Args:
        model: the loaded model; each setting is attached to it in turn.
        direction: the axis the op acts along and the readouts project on.
        prompts: user messages, formatted conversations or 1-d token ids.
        op: builds the op from a strength: ``Add`` (default), ``Ablate``, ``MeanAblate``,
            ``CapFloor``, ``CapCeiling`` or any ``float -> Op`` callable.
        layers: where to intervene, one at a time (default: every layer).
        strengths: the scalars passed to ``op``, one setting each (``0.0`` is a no-op for ``Add``).
        readout_layers: layers whose ``resid_post`` projection is reported.
        hook: where the op acts (default the direction's own hook, e.g. ``resid_post``).
        positions: token positions the op acts on (default: all). Other than ``All``, prompts
            are run one per batch so each has its own prompt/response boundary.
        norm_units: optional ``[n_layers]`` average residual norms
            (:func:`~axislens.interventions.attach.residual_norms`); strengths then count in them.
        continuations: ``{name: text}`` whose log-prob change is measured after each prompt.
        generate: a :class:`~axislens.model.decoding.SamplingConfig` to also generate text per setting.
        batch_size: rows per forward pass (a prompt takes one row per continuation, or one).
        progress: show a progress bar over the settings.
    """
    from axislens.model.loading import model_provenance

    if len(prompts) == 0:
        raise ValueError("layer_sweep needs at least one prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_layers = int(model.cfg.n_layers)
    direction.check_compatible(d_model=int(model.cfg.d_model))
    sweep_layers = resolve_layers(
        slice(None) if layers is None else layers, n_layers, "layer_sweep layers"
    )
    readouts = resolve_layers(readout_layers, n_layers, "layer_sweep readout_layers")
    strengths_t = tuple(float(s) for s in strengths)
    if not strengths_t:
        raise ValueError("layer_sweep needs at least one strength")
    positions = positions if positions is not None else All()
    # Build (and so validate) every intervention before running anything.
    plan = {
        (layer, s): Intervention(
            op(s), direction, [layer], hook=hook, positions=positions, norm_units=norm_units
        )
        for layer in sweep_layers
        for s in strengths_t
    }
    units = torch.stack([direction.unit(k) for k in readouts])
    ids = [as_prompt_ids(model, p) for p in prompts]
    tok = model.tokenizer
    cont_texts = dict(continuations or {})
    names = list(cont_texts)
    conts = [
        torch.tensor(tok(cont_texts[n], add_special_tokens=False)["input_ids"], dtype=torch.long)
        for n in names
    ]
    for n, c in zip(names, conts, strict=True):
        if c.numel() == 0:
            raise ValueError(f"continuation {n!r} tokenizes to nothing")
    per_batch = 1 if not isinstance(positions, All) else max(1, batch_size // max(1, len(conts)))
    batches = [
        _batch(model, ids[i : i + per_batch], conts, not isinstance(positions, All))
        for i in range(0, len(ids), per_batch)
    ]
    first = next(iter(plan.values()))
    with intervene(model, *plan.values(), prompt_len=batches[0].prompt_len):
        pass  # validates every setting against the model (hooks, norm units) before any forward

    def run(ivs: Sequence[Intervention]) -> tuple[Tensor, Tensor, Tensor]:
        out = [_measure(model, b, readouts, units, ivs) for b in batches]
        return tuple(torch.cat([o[i] for o in out]) for i in range(3))  # type: ignore[return-value]

    base_proj, base_lp, base_cont = run(())
    metrics = (
        [f"proj@{k}" for k in readouts]
        + [f"dproj@{k}" for k in readouts]
        + ["kl"]
        + [f"dlogp:{n}" for n in names]
    )
    base_vals = base_proj.mean(0).tolist() + [0.0] * len(readouts) + [0.0] + [0.0] * len(names)
    values = torch.zeros(len(sweep_layers), len(strengths_t), len(metrics), dtype=torch.float64)
    texts: list[SweepText] = []
    base_texts: tuple[str, ...] = ()
    if generate is not None:
        base_texts = tuple(_generate(model, ids, generate))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan), desc="sweep", disable=not progress)
    for i, layer in enumerate(sweep_layers):
        for j, s in enumerate(strengths_t):
            iv = plan[(layer, s)]
            proj, lp, cont = run([iv])
            kl = (base_lp.exp() * (base_lp - lp)).sum(-1)
            dcont = (cont - base_cont).view(len(ids), len(names)).mean(0) if names else cont[:0]
            values[i, j] = torch.cat(
                [proj.mean(0), (proj - base_proj).mean(0), kl.mean().view(1), dcont]
            )
            if generate is not None:
                with intervene(model, iv):
                    for p, text in enumerate(_generate(model, ids, generate)):
                        texts.append(SweepText(layer, s, p, text))
            bar.update(1)
    bar.close()
    sample_op = first.op
    prov = {
        "model": model_provenance(model).to_dict(),
        "direction": {"method": direction.method, "hook": direction.hook, **direction.provenance},
        "prompts_sha256": _sha(ids),
        "n_prompts": len(ids),
        "continuations": dict(continuations or {}),
        "positions": type(positions).__name__,
        "norm_units": norm_units is not None,
    }
    return SweepResult(
        kind="steer",
        op=type(sample_op).__name__,
        hook=str(first.hook),
        layers=sweep_layers,
        strengths=strengths_t,
        metrics=tuple(metrics),
        values=values,
        baseline=dict(zip(metrics, base_vals, strict=True)),
        texts=tuple(texts),
        baseline_texts=base_texts,
        provenance=prov,
    )


def _generate(model: Model, ids: Sequence[Tensor], sampling: SamplingConfig) -> list[str]:
    toks = generate_tokens(model, list(ids), sampling)
    return [model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]


def ablation_sweep(
    model: Model,
    direction: Direction,
    prompts: Sequence[Prompt],
    *,
    layers: LayerSpec | None = None,
    readout_layers: LayerSpec = (-1,),
    hook: HookName | None = None,
    positions: Positions | None = None,
    continuations: Mapping[str, str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> SweepResult:
    """Project the axis out of one layer at a time and measure the drop in the readout
    projection (``drop@k = unsteered - ablated``), plus the :func:`layer_sweep` metrics."""
    res = layer_sweep(
        model,
        direction,
        prompts,
        op=Ablate,
        layers=layers,
        strengths=(0.0,),
        readout_layers=readout_layers,
        hook=hook,
        positions=positions,
        continuations=continuations,
        batch_size=batch_size,
        progress=progress,
    )
    dproj = [m for m in res.metrics if m.startswith("dproj@")]
    drops = torch.stack([-res.table(m) for m in dproj], dim=-1)
    metrics = res.metrics + tuple("drop@" + m.removeprefix("dproj@") for m in dproj)
    return SweepResult(
        kind="ablation",
        op=res.op,
        hook=res.hook,
        layers=res.layers,
        strengths=res.strengths,
        metrics=metrics,
        values=torch.cat([res.values, drops], dim=-1),
        baseline={**res.baseline, **{"drop@" + m.removeprefix("dproj@"): 0.0 for m in dproj}},
        provenance=res.provenance,
    )


# --------------------------------------------------------------------------- quick axis


@torch.no_grad()
def last_token_resid(
    model: Model, prompts: Sequence[Prompt], *, hook: HookName = "resid_post"
) -> Float[Tensor, "batch layer d_model"]:
    """The activation at each prompt's last token, every layer, from one right-padded forward
    (float32, on the CPU)."""
    ids = [as_prompt_ids(model, p) for p in prompts]
    batch = _batch(model, ids, [], False)
    device = model.cfg.device
    rows, last = batch.first_row.to(device), batch.last.to(device)
    n_layers = int(model.cfg.n_layers)
    out = torch.empty(len(ids), n_layers, int(model.cfg.d_model))

    def reader(layer: int) -> Callable[..., None]:
        def read(h: Tensor, hook: Any) -> None:
            out[:, layer] = h[rows, last].float().cpu()

        return read

    fwd = [(f"blocks.{la}.hook_{hook}", reader(la)) for la in range(n_layers)]
    with model.hooks(fwd_hooks=fwd):
        model(batch.ids.to(device), attention_mask=batch.mask.to(device), return_type=None)
    return out


def prompt_contrast_axis(
    model: Model,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    *,
    hook: HookName = "resid_post",
) -> Direction:
    """A quick axis without a store: ``mean(positive) - mean(negative)`` of the activation at
    the last prompt token (prefill), every layer. E.g. positive = default-assistant system
    prompts, negative = role system prompts, each followed by the same question.

    A stand-in for the store-based axis (which averages whole responses); good enough for tests,
    demos and sweeps before any responses are collected.
    """
    if not positive or not negative:
        raise ValueError("prompt_contrast_axis needs at least one positive and one negative prompt")
    acts = last_token_resid(model, [*positive, *negative], hook=hook).double()
    k = len(positive)
    return Direction(
        (acts[:k].mean(0) - acts[k:].mean(0)).float(),
        method="prompt_contrast",
        hook=hook,
        provenance={"n_positive": k, "n_negative": len(negative), "span": "prefill"},
    )
