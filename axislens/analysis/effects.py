"""Group and question effects from sufficient statistics: the question-adjusted estimator.

Every response ``i`` of group ``g`` (a role, or the default set) to question ``q`` is modelled,
per layer and coordinate, as ``x_i = alpha_g + beta_q + noise``. Least squares needs only the
group sums ``S_g``, the question sums ``T_q`` and the count table ``N[g, q]`` (the normal
equations of a two-way additive model), so a store is read once and memory grows with
``groups + questions``, not with the responses.

Eliminating ``alpha`` gives ``(diag(N_q) - N^T diag(1/N_g) N) beta = T - N^T diag(1/N_g) S``, a
``questions x questions`` system of rank ``questions - 1`` when the design is connected. The
free constant is fixed by ``sum_q w_q beta_q = 0`` with ``w`` the *anchor* group's question
weights (the default set's), so:

- the anchor's effect is its plain mean (the default vector is unchanged);
- another group's effect is its mean with its own questions' effects swapped for the anchor's
  mix: "what this role would average on the default set's questions";
- on a design where every group weighs the questions alike, every effect equals the plain mean.

All arithmetic is float64. Only contrasts between groups are identified; a group not linked to
the anchor through shared questions is refused, naming it.

Example:
    >>> import torch
    >>> counts = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # group 0: q0 and q1; group 1: q1 twice
    >>> x = {(0, 0): 1.0, (0, 1): 3.0, (1, 1): 5.0}  # q1 is 2 higher than q0
    >>> S = torch.tensor([[4.0], [10.0]]); T = torch.tensor([[1.0], [13.0]])
    >>> question_adjusted_means(S, T, counts, anchor=0)[:, 0].tolist()
    [2.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from axislens._types import Float, Tensor

__all__ = ["disconnected_groups", "question_adjusted_means", "question_weights"]

_BLOCK = 64 << 20  # bytes of float64 right-hand sides solved at once


def question_weights(counts: Float[Tensor, "group question"]) -> Float[Tensor, "group question"]:
    """Each group's share of its responses per question (rows sum to 1)."""
    n = counts.sum(dim=1, keepdim=True)
    return counts / n.clamp_min(1)


def disconnected_groups(counts: Float[Tensor, "group question"], anchor: int) -> list[int]:
    """Groups not linked to ``anchor`` through shared questions (their effects cannot be
    compared with the anchor's)."""
    g_n = counts.shape[0]
    has = counts > 0
    seen_g, seen_q = {anchor}, set()
    frontier = [anchor]
    while frontier:
        g = frontier.pop()
        for q in has[g].nonzero().flatten().tolist():
            if q in seen_q:
                continue
            seen_q.add(q)
            for h in has[:, q].nonzero().flatten().tolist():
                if h not in seen_g:
                    seen_g.add(h)
                    frontier.append(h)
    return [g for g in range(g_n) if g not in seen_g]


def question_adjusted_means(
    group_sums: Float[Tensor, "group ..."],
    question_sums: Float[Tensor, "question ..."],
    counts: Float[Tensor, "group question"],
    *,
    anchor: int,
    names: Sequence[str] | None = None,
) -> Float[Tensor, "group ..."]:
    """Least-squares group effects ``alpha_g`` of ``x = alpha_g + beta_q``, with the question
    effects summing to zero under the ``anchor`` group's question weights (module docstring).

    ``group_sums[g]`` / ``question_sums[q]`` are sums of the responses of group ``g`` / to
    question ``q``; ``counts[g, q]`` their numbers. Feature dimensions are kept.
    """
    counts = counts.to(torch.float64)
    g_n, q_n = counts.shape
    if group_sums.shape[0] != g_n or question_sums.shape[0] != q_n:
        raise ValueError(
            f"counts is [{g_n}, {q_n}] but group_sums has {group_sums.shape[0]} rows and "
            f"question_sums {question_sums.shape[0]}"
        )
    n_g = counts.sum(dim=1)
    if bool((n_g <= 0).any()):
        g = int((n_g <= 0).nonzero()[0])
        raise ValueError(f"group {names[g] if names else g!r} has no responses")
    lost = disconnected_groups(counts, anchor)
    if lost:
        listed = ", ".join(repr(names[g] if names else g) for g in lost[:5])
        raise ValueError(
            f"{len(lost)} group(s) share no question, directly or through other groups, with "
            f"{names[anchor] if names else anchor!r}: {listed}; their question effects cannot "
            f"be separated from their persona (use adjust='none', or collect them on shared "
            f"questions)"
        )
    feature = group_sums.shape[1:]
    s = group_sums.reshape(g_n, -1)
    t = question_sums.reshape(q_n, -1)
    asked = counts.sum(dim=0) > 0  # a question nobody answered carries no information
    if not bool(asked.all()):
        counts, t = counts[:, asked], t[asked]
        q_n = counts.shape[1]
    inv = 1.0 / n_g
    mix = counts.T * inv  # [question, group]: N^T diag(1 / N_g)
    system = torch.diag(counts.sum(dim=0)) - mix @ counts
    w = question_weights(counts)[anchor]
    # The bordered system [[C, w], [w^T, 0]] [beta; lambda] = [rhs; 0] is nonsingular when the
    # design is connected (C's null space is the constants, and w sums to 1). Factor it once,
    # then solve feature block by feature block so temporaries stay small at d_model x layers.
    bordered = torch.zeros(q_n + 1, q_n + 1, dtype=torch.float64)
    bordered[:q_n, :q_n] = system
    bordered[:q_n, q_n] = w
    bordered[q_n, :q_n] = w
    lu, pivots = torch.linalg.lu_factor(bordered)
    out = torch.empty(g_n, s.shape[1], dtype=torch.float64)
    block = max(1, _BLOCK // (8 * (q_n + g_n + 1)))
    for a in range(0, s.shape[1], block):
        sb = s[:, a : a + block].to(torch.float64)
        rhs = torch.zeros(q_n + 1, sb.shape[1], dtype=torch.float64)
        rhs[:q_n] = t[:, a : a + block].to(torch.float64) - mix @ sb
        beta = torch.linalg.lu_solve(lu, pivots, rhs)[:q_n]
        out[:, a : a + block] = (sb - counts @ beta) * inv[:, None]
    return out.reshape(g_n, *feature)
