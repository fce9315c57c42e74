"""Direct attribution along a direction, and the logit-lens view of a direction.

Decomposition (raw weights, ``processing=False``): the residual stream is a sum of what each
component wrote into it,

    resid_post[L] = resid_pre[0] + sum_{l <= L} (attn_out[l] + mlp_out[l]),

with ``resid_pre[0]`` the embedding (plus positional embedding where a model has one). For
``resid_pre[L]`` the sum stops before layer ``L``; for ``resid_mid[L]`` it includes
``attn_out[L]``. Attention splits further into heads: head ``h`` writes ``z[:, h] @ W_O[l, h]``,
and the heads plus the output bias (if any) sum to ``attn_out``. Where a block normalises the
attention output before adding it (Gemma 2/3 ``post_attention_layernorm``), each head's output
is passed through that norm with the norm's scale frozen at its value in the forward pass
(``x / scale * gain``): linear in ``x``, so the heads still sum exactly to ``attn_out``.

Direct attribution projects every component on the unit axis of the decomposed layer, per token
(``[component, pos]``) and averaged over a span of tokens. The projections sum to the residual's
own projection (checked at run time).

Logit lens of the axis: ``scores = (v̂ ⊙ g) @ W_U`` where ``g`` is the final norm's gain (``1 + w``
for Gemma-style offsets; ``v̂`` is first mean-centred for LayerNorm models). This is the direct
effect on the logits of adding ``v̂`` to the final residual, up to the positive per-token
normalisation scale, which does not change the ranking; biases are ignored (a direction has none)
and Gemma's final logit soft-capping, being monotonic, does not change the ranking either.

Example:
    Needs a real model (not run by the doctest suite).

    >>> attr = attribute(model, axis, conv, layer=20)  # doctest: +SKIP
    >>> attr.top(5)  # doctest: +SKIP
    [('L19.mlp', 3.1), ('L17.H4', -1.2), ...]
    >>> logit_lens(model, axis, layer=20).promoted[:3]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from axislens._types import Bool, Float, Tensor
from axislens.directions import Direction
from axislens.display import compact_repr, html_summary
from axislens.model.protocol import Model

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Attribution", "Decomposition", "LogitLens", "attribute", "decompose", "logit_lens"]

ResidHook = Literal["resid_pre", "resid_mid", "resid_post"]


@dataclass(frozen=True, slots=True, eq=False)
class Decomposition:
    """The residual at ``layer``/``hook`` of one sequence split into component contributions.

    ``components[c]`` is what component ``labels[c]`` wrote (``[pos, d_model]``); they sum to
    ``resid``. ``layers[c]`` is the component's block (``-1`` for the embedding) and ``heads[c]``
    its head (``-1`` for embeddings, MLPs, whole attention layers and biases).
    """

    layer: int
    hook: str
    labels: tuple[str, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    components: Float[Tensor, "component pos d_model"]
    resid: Float[Tensor, "pos d_model"]
    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Attribution:
    """Projection of every component on the axis, per token, and the span it is averaged over.

    ``per_token[c, t]``: component ``c``'s projection at token ``t`` (float64); ``total[t]``: the
    residual's own projection; ``mask``: the tokens :meth:`span_mean` averages over.
    """

    layer: int
    hook: str
    labels: tuple[str, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    per_token: Float[Tensor, "component pos"]
    total: Float[Tensor, " pos"]
    mask: Bool[Tensor, " pos"]
    tokens: tuple[str, ...]

    def span_mean(self) -> Float[Tensor, " component"]:
        """Each component's projection averaged over the masked tokens."""
        return self.per_token[:, self.mask].mean(-1)

    def total_mean(self) -> float:
        return float(self.total[self.mask].mean())

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` components with the largest absolute span mean, signed, largest first."""
        means = self.span_mean()
        order = means.abs().argsort(descending=True)[:k]
        return [(self.labels[int(i)], float(means[i])) for i in order]

    def head_matrix(self) -> Float[Tensor, "layer head"]:
        """Span means of the heads as ``[layer, head]`` (NaN where no head component exists)."""
        hs = [(la, h, i) for i, (la, h) in enumerate(zip(self.layers, self.heads, strict=True))]
        hs = [x for x in hs if x[1] >= 0]
        if not hs:
            raise ValueError("this attribution has no per-head components (heads=False)")
        n_layers = max(la for la, _, _ in hs) + 1
        n_heads = max(h for _, h, _ in hs) + 1
        out = torch.full((n_layers, n_heads), float("nan"), dtype=torch.float64)
        means = self.span_mean()
        for la, h, i in hs:
            out[la, h] = means[i]
        return out

    def to_pandas(self) -> pd.DataFrame:
        """One row per component: ``component``, ``layer``, ``head`` (-1: none) and its
        ``span_mean`` projection, largest absolute value first."""
        import pandas as pd

        means = self.span_mean().tolist()
        df = pd.DataFrame(
            {"component": list(self.labels), "layer": list(self.layers), "head": list(self.heads)}
        )
        df["span_mean"] = means
        order = df["span_mean"].abs().sort_values(ascending=False).index
        return df.loc[order].reset_index(drop=True)

    def _facts(self) -> list[tuple[str, Any]]:
        return [
            ("layer", self.layer),
            ("hook", self.hook),
            ("components", len(self.labels)),
            ("tokens", len(self.tokens)),
            ("span tokens", int(self.mask.sum())),
            ("total span mean", self.total_mean() if bool(self.mask.any()) else None),
            ("top", [f"{n} {v:+.3g}" for n, v in self.top(3)] if bool(self.mask.any()) else None),
        ]

    def __repr__(self) -> str:
        return compact_repr("Attribution", self._facts())

    def _repr_html_(self) -> str:
        return html_summary("Attribution", self._facts(), self.to_pandas())

    def by_kind(self) -> dict[str, float]:
        """Span means summed by kind: ``embed``, ``attn`` (heads and biases) and ``mlp``."""
        means = self.span_mean()
        out = {"embed": 0.0, "attn": 0.0, "mlp": 0.0}
        for label, m in zip(self.labels, means.tolist(), strict=True):
            kind = "embed" if label == "embed" else "mlp" if label.endswith(".mlp") else "attn"
            out[kind] += m
        return out


@dataclass(frozen=True, slots=True, eq=False)
class LogitLens:
    """Tokens a direction promotes (highest scores) and suppresses (lowest) via the unembedding."""

    layer: int
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    scores: Float[Tensor, " vocab"]


# --------------------------------------------------------------------------- decomposition


def _ids(model: Model, prompt: Any) -> Tensor:
    from axislens.evals.sweeps import as_prompt_ids

    return as_prompt_ids(model, prompt)


def _post_norm(block: Any, name: str) -> tuple[Tensor, bool] | None:
    """``(gain, rms)`` of a block's post-attention norm (Gemma's ``ln1_post``), if any."""
    norm = getattr(block, name, None) if name in dict(block.named_children()) else None
    if norm is None:
        return None
    w = norm.weight.detach()
    gain = 1.0 + w if getattr(norm, "uses_weight_offset", False) else w
    return gain, bool(getattr(norm, "uses_rms_norm", True))


def _check_layer(model: Model, layer: int, hook: str) -> int:
    n_layers = int(model.cfg.n_layers)
    if hook not in ("resid_pre", "resid_mid", "resid_post"):
        raise ValueError(
            f"attribution decomposes the residual stream; hook must be resid_pre, resid_mid or "
            f"resid_post, got {hook!r}"
        )
    if isinstance(layer, bool) or not -n_layers <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} out of range for a model with {n_layers} layers")
    return int(layer) % n_layers


def _parts(
    model: Model, cache: Any, layer: int, hook: str, heads: bool
) -> Iterator[tuple[str, int, int, Tensor]]:
    """Yield ``(label, layer, head, [pos, d_model])`` components of one sequence."""
    yield "embed", -1, -1, cache["blocks.0.hook_resid_pre"][0]
    last = layer if hook == "resid_post" else layer - 1
    for la in range(layer + 1 if hook != "resid_pre" else layer):
        attn = cache[f"blocks.{la}.hook_attn_out"][0]
        if not heads:
            yield f"L{la}.attn", la, -1, attn
        else:
            block = model.blocks[la]
            z = cache[f"blocks.{la}.attn.hook_z"][0]  # [pos, head, d_head]
            w_o = block.attn.W_O.detach()
            per = torch.einsum("phd,hdm->hpm", z, w_o.reshape(z.shape[1], z.shape[2], -1))
            b_o = getattr(block.attn, "b_O", None)
            bias = b_o.detach() if torch.is_tensor(b_o) else None
            post = _post_norm(block, "ln1_post")
            if post is not None:
                gain, rms = post
                if not rms:
                    raise ValueError(
                        f"layer {la}: per-head attribution through a LayerNorm post-norm is not supported; use heads=False"
                    )
                scale = cache[f"blocks.{la}.ln1_post.hook_scale"][0]  # [pos, 1]
                per = per / scale * gain
                bias = None if bias is None else bias / scale * gain
            for h in range(per.shape[0]):
                yield f"L{la}.H{h}", la, h, per[h]
            if bias is not None and bool((bias != 0).any()):
                yield f"L{la}.attn_bias", la, -1, bias.expand_as(attn)
        if la <= last:
            yield f"L{la}.mlp", la, -1, cache[f"blocks.{la}.hook_mlp_out"][0]


@torch.no_grad()
def _run(model: Model, prompt: Any, layer: int, hook: str, heads: bool) -> tuple[Any, Tensor]:
    ids = _ids(model, prompt)
    names = ["blocks.0.hook_resid_pre", f"blocks.{layer}.hook_{hook}"]
    for la in range(layer + 1):
        names += [f"blocks.{la}.hook_attn_out", f"blocks.{la}.hook_mlp_out"]
        if heads:
            names.append(f"blocks.{la}.attn.hook_z")
            if "ln1_post" in dict(model.blocks[la].named_children()):
                names.append(f"blocks.{la}.ln1_post.hook_scale")
    _, cache = model.run_with_cache(ids[None].to(model.cfg.device), names_filter=names)
    return cache, ids


def decompose(
    model: Model, prompt: Any, *, layer: int, hook: ResidHook = "resid_post", heads: bool = True
) -> Decomposition:
    """Split the residual of one sequence at ``layer``/``hook`` into component contributions.

    ``prompt``: a :class:`~axislens.model.chat.FormattedConversation`, 1-d token ids, or a user
    message. Needs raw weights (``load_model(..., processing=False)``, the default).
    """
    layer = _check_layer(model, layer, hook)
    cache, ids = _run(model, prompt, layer, hook, heads)
    parts = list(_parts(model, cache, layer, hook, heads))
    return Decomposition(
        layer=layer,
        hook=hook,
        labels=tuple(p[0] for p in parts),
        layers=tuple(p[1] for p in parts),
        heads=tuple(p[2] for p in parts),
        components=torch.stack([p[3].float().cpu() for p in parts]),
        resid=cache[f"blocks.{layer}.hook_{hook}"][0].float().cpu(),
        tokens=tuple(model.to_str_tokens(ids)),
    )


def _span_mask(prompt: Any, n: int, span: Any) -> Tensor:
    if span is None:
        content = getattr(prompt, "content_mask", None)
        mask = content("assistant") if content is not None else torch.ones(n, dtype=torch.bool)
        return mask if bool(mask.any()) else torch.ones(n, dtype=torch.bool)
    if torch.is_tensor(span):
        if span.shape != (n,) or span.dtype != torch.bool or not bool(span.any()):
            raise ValueError(f"span mask must be a non-empty bool tensor of shape [{n}]")
        return span.cpu()
    a, b = (span.start, span.end) if hasattr(span, "start") else span
    if not 0 <= a < b <= n:
        raise ValueError(f"span {(a, b)} is empty or outside the {n} tokens")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[a:b] = True
    return mask


def attribute(
    model: Model,
    direction: Direction,
    prompt: Any,
    *,
    layer: int,
    hook: ResidHook = "resid_post",
    heads: bool = True,
    span: Any = None,
) -> Attribution:
    """Direct attribution of the residual's projection on ``direction`` at ``layer``.

    Args:
        model: the loaded model, with raw weights (``load_model(..., processing=False)``).
        direction: the axis; its unit vector at ``layer`` is projected on.
        prompt: a :class:`~axislens.model.chat.FormattedConversation`, 1-d token ids, or a user
            message (formatted with the chat template and the generation prompt).
        layer: the decomposed layer (negative indices count from the end).
        hook: the residual point decomposed: ``resid_pre``, ``resid_mid`` or ``resid_post``.
        heads: split attention into per-head outputs (plus the output bias); ``False`` keeps one
            component per attention layer.
        span: tokens to average over: a ``(start, end)`` pair, a span object, a bool mask, or
            ``None`` (the assistant content of a conversation, else every token).

    Raises:
        ValueError: bad layer/hook/span, a direction of the wrong size, or a model whose
            components do not sum to its residual (an unsupported architecture).
    """
    direction.check_compatible(d_model=int(model.cfg.d_model))
    layer = _check_layer(model, layer, hook)
    u = direction.unit(layer).double()
    cache, ids = _run(model, prompt, layer, hook, heads)
    labels, layers, head_ids, rows = [], [], [], []
    for label, la, h, comp in _parts(model, cache, layer, hook, heads):
        labels.append(label)
        layers.append(la)
        head_ids.append(h)
        rows.append(comp.double().cpu() @ u)
    resid = cache[f"blocks.{layer}.hook_{hook}"][0].double().cpu()
    per_token = torch.stack(rows)
    total = resid @ u
    err = float((per_token.sum(0) - total).abs().max())
    tol = 1e-3 * max(1.0, float(resid.norm(dim=-1).max()))
    if err > tol:
        raise ValueError(
            f"components do not sum to the residual at layer {layer} (max error {err:.3g}); this "
            f"architecture or weight processing is not supported (try heads=False, raw weights)"
        )
    return Attribution(
        layer=layer,
        hook=hook,
        labels=tuple(labels),
        layers=tuple(layers),
        heads=tuple(head_ids),
        per_token=per_token,
        total=total,
        mask=_span_mask(prompt, len(ids), span),
        tokens=tuple(model.to_str_tokens(ids)),
    )


@torch.no_grad()
def logit_lens(model: Model, direction: Direction, layer: int, *, k: int = 20) -> LogitLens:
    """Vocabulary tokens the unit axis at ``layer`` promotes and suppresses through the final
    norm's gain and the unembedding (see the module docstring for the exact choice)."""
    direction.check_compatible(d_model=int(model.cfg.d_model))
    n_layers = int(model.cfg.n_layers)
    if isinstance(layer, bool) or not -n_layers <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} out of range for a model with {n_layers} layers")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    layer = int(layer) % n_layers
    u = direction.unit(layer).double()
    norm = model.ln_final
    if not getattr(norm, "uses_rms_norm", True):
        u = u - u.mean()
    w = getattr(norm, "weight", None)
    if torch.is_tensor(w):
        gain = w.detach().double().cpu()
        u = u * (1.0 + gain if getattr(norm, "uses_weight_offset", False) else gain)
    scores = u @ model.W_U.detach().double().cpu()
    top = scores.topk(k)
    bottom = (-scores).topk(k)
    tok = model.tokenizer

    def named(idx: Tensor, vals: Tensor) -> tuple[tuple[str, float], ...]:
        return tuple(
            (tok.decode([int(i)]), float(v))
            for i, v in zip(idx.tolist(), vals.tolist(), strict=True)
        )

    return LogitLens(
        layer=layer,
        promoted=named(top.indices, top.values),
        suppressed=named(bottom.indices, -bottom.values),
        scores=scores.float(),
    )
