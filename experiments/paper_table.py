"""The paper's persona-space and capping numbers, measured on an embedded chat model.

    python experiments/paper_table.py --model smollm2-135m-instruct --small
    python experiments/paper_table.py --model qwen2.5-coder-0.5b-instruct   # the stated scale
    python experiments/paper_table.py --compare experiments/results/a.json experiments/results/b.json

One stated scale per run (``--small`` for a smoke run, the default ``SCALE``/``EVAL`` otherwise;
every count can be overridden). Steps, each cached under ``<out>/<model>-steps/`` (a rerun reuses
a finished step whose inputs are unchanged; the store itself resumes):

1. generate role responses (``n_roles`` roles of the spread order x ``n_prompts`` prompts x
   ``n_questions`` questions) and default responses (*all* default prompts x
   ``n_default_questions`` questions: the default set is one set, not one per role), collect
   span means at every layer;
2. no judge: the embedded models cannot judge reliably, so every response is kept (KeepAll,
   stated in the output as ``"judge": "keep_all (no filtering)"``);
3. per layer: PC1 variance, dims to 70%, cos(axis, PC1) (``layer_profile``), and the split-half
   cosine of the axis, split by item and by question (the stability of every figure);
4. at the target layer (the known-model table): PC1 role loadings (``--compare`` correlates two
   models on their common roles);
5. caps at the cap window for p0.25/0.5/0.75, per-response and per-token units
   (``calibrate_cap(unit=...)``, default pool), and how much each cap would act on the pooled
   response tokens: the share of tokens below ``tau`` and their mean lift ``tau - proj``;
6. stability levers: the split-half cosine (by item, mean of 5 seeded splits) as the number of
   default items, questions per role and roles shrink (subsets of the store), with span means
   over only the first 16 response tokens (the same responses, teacher-forced again), and with
   prefill activations (the generation-prompt position, no response);
7. identity rate vs steering coefficient: ``Add(c)`` at the target layer in residual-norm units
   (``c * mean |h|`` along the unit axis), greedy identity probes (:func:`axislens.evaluate`);
8. persona attacks and capability (QA, perplexity, KL) unsteered vs capped at p0.25/0.5/0.75
   with both threshold units;
9. drift: four original conversations (therapy-like, philosophy-of-AI, coding, writing) replayed
   greedily, unsteered and capped (p0.25, both units), projections per assistant turn.

Outputs: ``<out>/<model>.json`` (numbers + provenance), ``<out>/<model>-store/`` (the store),
``<out>/<model>-figures.html`` (per-layer persona-space figures with their split-half cosines,
the steering curve, the drift trajectories), ``<out>/<model>-cap-distributions.html``
(per-response and per-token projections at the middle cap layer, with both p0.25 thresholds),
and ``docs/results.md`` (``--results-md``), a table beside the paper's published figures.
Numbers are reported as they come out; nothing is tuned toward the paper's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from axislens.display import as_floats

PAPER = {
    "pc1_variance": "48.8% (Gemma 2 27B, layer 22)",
    "dims_70": "4 / 8 / 19 (Gemma / Qwen / Llama)",
    "cos_axis_pc1": "> 0.71 at middle layers",
    "pc1_loading_correlation": "> 0.92 between models",
    "steering": "steering away from the Assistant raises non-Assistant identities (role play, "
    "human claims); toward it lowers them",
    "capping": "capping at p0.25 over layers 46-53 (Qwen 3 32B) / 56-71 (Llama 3.3 70B) cuts "
    "persona-attack success by about half with capability scores within noise",
    "drift": "therapy-like and philosophy-of-AI conversations drift away from the Assistant; "
    "coding and writing stay",
}
PERCENTILES = (0.25, 0.5, 0.75)
UNITS = ("response", "token")
STEER_COEFFS = (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)
"""Steering coefficients in residual-norm units at the target layer."""
CONVERSATIONS = ("therapy_drift", "philosophy_drift", "coding_control", "writing_control")
SHORT_TOKENS = 16
"""The short-response lever: span means over the first this many response tokens."""
LEVER_SPLITS = 5


@dataclass(frozen=True)
class Scale:
    """How much data one run collects (recorded in the store's provenance)."""

    n_roles: int = 100
    n_prompts: int = 2
    n_questions: int = 4
    n_default_questions: int = 40
    max_new_tokens: int = 64
    batch_size: int = 16
    seed: int = 0
    design: str | None = None
    """Question design (``shared``/``rotated``/``nested``); ``None``: axislens' default (shared
    when both sides get the same number of questions, else rotated)."""


@dataclass(frozen=True)
class EvalScale:
    """How much the behavioural steps (7-9) evaluate; replies are greedy."""

    eval_attacks: int = 30
    eval_identity: int = 30
    eval_qa: int = 40
    eval_tokens: int = 48
    drift_turns: int = 6
    drift_tokens: int = 48


SCALE = Scale()
EVAL = EvalScale()
SMALL = Scale(
    n_roles=8, n_prompts=2, n_questions=2, n_default_questions=4, max_new_tokens=16, batch_size=16
)
POOL_NAMES = ("default", "balanced", "all")
SMALL_EVAL = EvalScale(
    eval_attacks=4, eval_identity=6, eval_qa=5, eval_tokens=12, drift_turns=3, drift_tokens=12
)


def _store(model: Any, root: Path, personas: Any, scale: Scale, progress: bool) -> Any:
    """Steps 1-2: the collect job (every default prompt; KeepAll: every response kept)."""
    from axislens.jobs import CollectConfig, PersonaData
    from axislens.jobs.collect import run as collect_job
    from axislens.model.decoding import SamplingConfig
    from axislens.store import ActivationStore

    data = PersonaData(
        personas,
        roles=scale.n_roles,
        n_prompts=scale.n_prompts,
        n_questions=scale.n_questions,
        default_prompts=len(personas.default.system_prompts),
        default_questions=scale.n_default_questions,
        design=scale.design,
    )
    sampling = SamplingConfig(max_new_tokens=scale.max_new_tokens, seed=scale.seed)
    cfg = CollectConfig(root, data, sampling, judge="keep_all", batch_size=scale.batch_size)
    print(collect_job(cfg, model, progress=progress), flush=True)
    return ActivationStore.open(root)


def _step(folder: Path, name: str, key: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """``fn()``, cached in ``folder/name.json`` under ``key`` (recomputed when ``key`` changes)."""
    from axislens.store import atomic_write_json

    path = folder / f"{name}.json"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == digest:
            return cached["value"]
    t0 = time.perf_counter()
    value = fn()
    print(f"  step {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": digest, "inputs": key, "value": value})
    return value


# --------------------------------------------------------------------------------------------
# Stability levers (step 6): split-half cosines of the axis on subsets and variants of the data
# --------------------------------------------------------------------------------------------


def split_half_cos(
    x: np.ndarray, groups: Sequence[Sequence[int]], defaults: Sequence[int], seed: int
) -> np.ndarray:
    """Per-layer cosine between the axes of two item halves (float64, numpy only).

    ``x``: ``[item, layer, d]``; ``groups``: row indices of each role; ``defaults``: rows of the
    default items. Every group and the defaults are split in half at random (seeded); a role
    with fewer than two items is left out of both halves. The axis of a half is
    ``mean(default half) - mean over roles of (role half means)``.
    """
    rng = np.random.default_rng(seed)
    halves: list[list[np.ndarray]] = [[], []]
    for g in [*[g for g in groups if len(g) >= 2], defaults]:
        perm = rng.permutation(np.asarray(g))
        cut = (len(perm) + 1) // 2
        for h, part in enumerate((perm[:cut], perm[cut:])):
            halves[h].append(x[part].mean(0))
    axes = [np.stack(h[:-1]).mean(0) * -1 + h[-1] for h in halves]
    num = (axes[0] * axes[1]).sum(-1)
    return num / (np.linalg.norm(axes[0], axis=-1) * np.linalg.norm(axes[1], axis=-1))


Draw = Callable[[np.random.Generator], tuple[Sequence[Sequence[int]], Sequence[int]]]
"""A subset of the data for one repeat: ``rng -> (role groups, default rows)``."""


def _lever_row(x: np.ndarray, draw: Draw, seed: int, salt: int, **what: Any) -> dict[str, Any]:
    """Split-half cosines over ``LEVER_SPLITS`` repeats; each repeat draws its own subset
    (``draw``) and its own split, so the spread covers both."""
    cos, sizes = [], []
    for k in range(LEVER_SPLITS):
        groups, defaults = draw(np.random.default_rng([seed, salt, k]))
        cos.append(split_half_cos(x, groups, defaults, seed + k))
        sizes.append(
            (sum(1 for g in groups if len(g) >= 2), sum(len(g) for g in groups), len(defaults))
        )
    c = np.stack(cos)
    return {
        **what,
        "n_roles": sizes[0][0],
        "n_role_items": int(sizes[0][1]),
        "n_default_items": sizes[0][2],
        "cos_mean": as_floats(c.mean(0)),
        "cos_sd": as_floats(c.std(0)),
    }


def _layout(store: Any) -> tuple[list[str], dict[str, list[int]], list[int], list[str]]:
    """(ids, role -> rows, default rows, question ids) of the store's collected items."""
    recs = [r for r in store.query() if r.kind in ("role", "default")]
    done = store.collected_ids()
    recs = [r for r in recs if r.id in done]
    roles: dict[str, list[int]] = {}
    defaults: list[int] = []
    for k, r in enumerate(recs):
        (defaults if r.kind == "default" else roles.setdefault(r.role, [])).append(k)
    return [r.id for r in recs], roles, defaults, [r.question_id for r in recs]


def levers(
    store: Any, variants: dict[str, Any], layers: Sequence[int], seed: int
) -> dict[str, Any]:
    """Split-half cosines (step 6) at ``layers``: data subsets of ``store``, and the ``variants``
    (other stores of the same items: ``short``, ``prefill``) at full size."""
    ids, roles, defaults, qids = _layout(store)
    x = store.activations(ids=ids, layers=list(layers), dtype=torch.float64).numpy()
    groups = list(roles.values())
    rows: list[dict[str, Any]] = [
        _lever_row(x, lambda _: (groups, defaults), seed, 0, lever="all data", value=None)
    ]
    for k in (5, 10, 25, 50, 100, 200):
        if k < len(defaults):
            rows.append(
                _lever_row(
                    x,
                    lambda rng, k=k: (groups, sorted(rng.choice(defaults, k, replace=False))),
                    seed,
                    1,
                    lever="default items",
                    value=k,
                )
            )
    per_role_q = {r: sorted({qids[i] for i in rows_}) for r, rows_ in roles.items()}
    n_q = max(len(q) for q in per_role_q.values())
    for q in range(1, n_q):
        fewer = [[i for i in g if qids[i] in per_role_q[r][:q]] for r, g in roles.items()]
        rows.append(
            _lever_row(
                x, lambda _, g=fewer: (g, defaults), seed, 2, lever="questions per role", value=q
            )
        )
    names = list(roles)
    for k in (10, 25, 50):
        if k < len(names):

            def pick(rng: np.random.Generator, k: int = k) -> tuple[list[list[int]], list[int]]:
                keep = sorted(int(i) for i in rng.choice(len(names), k, replace=False))
                return [roles[names[i]] for i in keep], defaults

            rows.append(_lever_row(x, pick, seed, 3, lever="roles", value=k))
    index = {rid: k for k, rid in enumerate(ids)}
    for label, other in variants.items():
        have = [rid for rid in ids if rid in other.collected_ids()]
        y = other.activations(ids=have, layers=list(layers), dtype=torch.float64).numpy()
        pos = {rid: k for k, rid in enumerate(have)}
        remap = {index[rid]: pos[rid] for rid in have}
        g2 = [[remap[i] for i in g if i in remap] for g in roles.values()]
        d2 = [remap[i] for i in defaults if i in remap]
        rows.append(_lever_row(y, lambda _, g=g2, d=d2: (g, d), seed, 4, lever=label, value=None))
    return {"layers": list(layers), "splits": LEVER_SPLITS, "rows": rows}


def _variant_stores(
    model: Any, store: Any, out: Path, scale: Scale, progress: bool
) -> dict[str, Any]:
    """The same items collected again: span means over the first ``SHORT_TOKENS`` response
    tokens (``short``), and prefill activations at the generation prompt (``prefill``)."""
    from axislens.collection.activations import collect, span_policy
    from axislens.store import ActivationStore

    recs = [r for r in store.query() if r.kind in ("role", "default")]
    tok = model.tokenizer
    short = []
    for r in recs:
        msgs = [dict(m) for m in r.messages]
        ids = tok(msgs[-1]["content"], add_special_tokens=False)["input_ids"]
        msgs[-1]["content"] = tok.decode(ids[:SHORT_TOKENS])
        short.append(dataclasses.replace(r, messages=tuple(msgs)))
    layers = list(range(int(model.cfg.n_layers)))
    result = {}
    for label, items, span in (
        (f"first {SHORT_TOKENS} response tokens", short, "response"),
        ("prefill (no response)", recs, "prefill"),
    ):
        root = out / f"{store.root.name}-{span if span == 'prefill' else 'short'}"
        collect(
            model,
            items,
            root,
            layers=layers,
            span=span_policy(span),
            batch_size=scale.batch_size,
            progress=progress,
        )
        result[label] = ActivationStore.open(root)
    return result


# --------------------------------------------------------------------------------------------
# Behaviour (steps 7-9)
# --------------------------------------------------------------------------------------------


def _norms(model: Any, store: Any, n: int = 32) -> torch.Tensor:
    from axislens.interventions.attach import residual_norms
    from axislens.model.chat import format_conversation

    recs = [r for r in store.query() if r.kind in ("role", "default")]
    picked = recs[:: max(1, len(recs) // n)][:n]
    return residual_norms(model, [format_conversation(model, list(r.messages)) for r in picked])


def steering_curve(
    model: Any, axis: Any, layer: int, norms: torch.Tensor, es: EvalScale, coeffs: Sequence[float]
) -> list[dict[str, Any]]:
    """Identity rates (step 7) unsteered and under ``Add(c)`` at ``layer`` in norm units."""
    from axislens.evals.harness import Setting, evaluate
    from axislens.evals.sets import load_eval_set
    from axislens.interventions.attach import Intervention
    from axislens.interventions.operations import Add

    ev = load_eval_set().subset(attacks=0, identity=es.eval_identity, qa=0)
    settings = [
        Setting(
            f"steer {c:+g}", (Intervention(Add(c), axis, [layer], norm_units=norms),), {"coeff": c}
        )
        for c in coeffs
    ]
    res = evaluate(
        model, ev, settings, axis=axis, max_new_tokens=es.eval_tokens, projection_layer=layer
    )
    rows = res.rows()
    rows[0]["coeff"] = 0.0
    return sorted(rows, key=lambda r: r["coeff"])


def cap_eval(
    model: Any, axis: Any, caps: dict[str, Any], measure: int, es: EvalScale
) -> list[dict[str, Any]]:
    """Persona attacks and capability (step 8), unsteered and under each cap."""
    from axislens.evals.harness import Setting, evaluate
    from axislens.evals.sets import load_eval_set
    from axislens.interventions.attach import cap_intervention

    ev = load_eval_set().subset(attacks=es.eval_attacks, identity=es.eval_identity, qa=es.eval_qa)
    n = int(model.cfg.n_layers)
    settings = [
        Setting(
            name,
            (cap_intervention(cfg, n_layers=n),),
            {"unit": name.split()[1], "percentile": cfg.percentile / 100},
        )
        for name, cfg in caps.items()
    ]
    res = evaluate(
        model, ev, settings, axis=axis, max_new_tokens=es.eval_tokens, projection_layer=measure
    )
    return res.rows()


def drift(
    model: Any, axis: Any, caps: dict[str, Any], layers: Sequence[int], es: EvalScale
) -> dict[str, Any]:
    """The four conversations (step 9), greedy, unsteered and under each cap in ``caps``."""
    from axislens.model.decoding import SamplingConfig
    from axislens.monitoring import builtin_conversation
    from axislens.monitoring.session import chat_session

    greedy = SamplingConfig(max_new_tokens=es.drift_tokens, temperature=0.0)
    out: dict[str, Any] = {}
    for name in CONVERSATIONS:
        script = builtin_conversation(name)
        runs: dict[str, Any] = {}
        for label, cap in {"unsteered": None, **caps}.items():
            session = chat_session(
                model, axis=axis, cap=cap, monitor_layers=list(layers), sampling=greedy
            )
            reports = [session.send(t) for t in script["user_turns"][: es.drift_turns]]
            runs[label] = {
                "projections": {str(lay): [r.projections[lay] for r in reports] for lay in layers},
                "capped": [r.capped for r in reports],
                "replies": [r.reply for r in reports],
            }
        out[name] = {"domain": script["domain"], "runs": runs}
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _touch(values: np.ndarray, taus: np.ndarray) -> tuple[list[float], list[float]]:
    """Share of ``values`` ``[token, layer]`` below ``taus`` per layer, and their mean lift."""
    below = values < taus[None, :]
    lift = np.where(below, taus[None, :] - values, 0.0)
    return as_floats(below.mean(0)), as_floats(lift.sum(0) / np.maximum(below.sum(0), 1))


def _cap_rows(
    store: Any, axis: Any, caps: Sequence[int], tokens: Any, pooled: np.ndarray
) -> list[dict[str, Any]]:
    """Thresholds per unit x percentile x pool, and how much each acts on the pooled response
    tokens (role + default: partly the percentile's own data, so by construction near it)."""
    from axislens.analysis.thresholds import cap_pools

    rows = []
    for unit in UNITS:
        for q in PERCENTILES:
            pools = cap_pools(
                store,
                axis,
                layers=caps,
                percentile=q,
                unit=unit,  # type: ignore[arg-type]
                tokens=tokens if unit == "token" else None,
            )
            for pool, cap in pools.items():
                touched, lift = _touch(pooled, np.asarray(cap.thresholds))
                rows.append(
                    {
                        "unit": unit,
                        "percentile": q,
                        "pool": pool,
                        "layers": list(cap.layers),
                        "thresholds": list(cap.thresholds),
                        "tokens_touched": touched,
                        "mean_lift_touched": lift,
                    }
                )
    return rows


def heldout_tokens(
    model: Any, axis: Any, drift_runs: dict[str, Any], layers: Sequence[int]
) -> list[list[float]]:
    """Per-token projections ``[token, layer]`` at ``layers`` of the *unsteered* drift replies
    (step 9), teacher-forced: tokens no threshold was computed from."""
    from axislens.monitoring import builtin_conversation
    from axislens.monitoring.projection import project_conversation

    rows: list[np.ndarray] = []
    for name, d in drift_runs.items():
        turns = builtin_conversation(name)["user_turns"]
        replies = d["runs"]["unsteered"]["replies"]
        msgs: list[dict[str, str]] = []
        for user, reply in zip(turns, replies, strict=False):
            if not reply.strip():  # an empty reply ends the measurable conversation
                break
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        if not msgs:
            continue
        traj = project_conversation(model, axis, msgs, layers=list(layers))
        rows += [p.double().numpy().T for p in traj.token_projections if p.shape[-1]]
    return np.concatenate(rows).tolist() if rows else []


def _cap_configs(rows: list[dict[str, Any]], axis: Any) -> dict[str, Any]:
    from axislens.directions import CapConfig

    return {
        f"cap {r['unit']} p{r['percentile']}": CapConfig(
            axis, tuple(r["layers"]), tuple(r["thresholds"]), percentile=100 * r["percentile"]
        )
        for r in rows
        if r["pool"] == "default"  # the documented default pool; the others are tabled only
    }


def _layer_rows(store: Any, rv: Any, seed: int) -> dict[str, Any]:
    """Per layer, for role vectors ``rv`` (and the estimator they were made with): PC1 variance,
    dims to 70%, cos(axis, PC1), split-half cosines by item and by question, and the question
    offset |b-hat| / |axis| and cos(axis, b-hat)."""
    from axislens.analysis.balance import question_offset
    from axislens.analysis.space import layer_profile
    from axislens.analysis.stability import split_half

    adjust: Any = "none" if rv.provenance["estimator"] == "plain" else "questions"
    prof = layer_profile(rv)
    halves: dict[str, list[float] | None] = {}
    unsplit: dict[str, str] = {}
    for by in ("item", "question"):
        try:
            sh = split_half(store, by=by, min_score=None, min_count=1, seed=seed, adjust=adjust)
            halves[by] = as_floats(sh.cosines)
        except ValueError as err:  # e.g. every role's few questions fell in one half
            halves[by], unsplit[by] = None, str(err)
    off = question_offset(store, rv.axis(), min_score=None, min_count=1)
    return {
        "estimator": rv.provenance["estimator"],
        "layer": list(prof.layers),
        "pc1_variance": as_floats(prof.pc1_variance),
        "dims_70": list(prof.dims_70),
        "cos_axis_pc1": as_floats(prof.cos_axis_pc1),
        "split_half_item": halves["item"],
        "split_half_question": halves["question"],
        "split_half_unavailable": unsplit,
        "offset_over_axis": off.ratio and list(off.ratio),
        "cos_axis_offset": off.cosine and list(off.cosine),
        "question_offset": off.to_dict(),
    }


def run(
    model: Any,
    out: Path,
    scale: Scale,
    *,
    evals: EvalScale | None = EVAL,
    coeffs: Sequence[float] = STEER_COEFFS,
    personas: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect (or reuse) the store and compute every number; returns the JSON written.

    ``evals=None`` skips the behavioural steps (7-9) and the variant stores of step 6."""
    from axislens.analysis.space import persona_pca
    from axislens.analysis.thresholds import project_store
    from axislens.analysis.vectors import role_vectors
    from axislens.collection.tokens import token_projections
    from axislens.model.loading import model_provenance
    from axislens.personas import load_personas
    from axislens.presets import cap_window, target_layer

    t0 = time.perf_counter()
    cat = personas if personas is not None else load_personas()
    prov = model_provenance(model)
    slug = prov.model_id.split("/")[-1] + (f"-{scale.design}" if scale.design else "")
    out.mkdir(parents=True, exist_ok=True)
    store = _store(model, out / f"{slug}-store", cat, scale, progress)
    steps = out / f"{slug}-steps"
    n = int(model.cfg.n_layers)
    try:
        target, target_src = target_layer(prov.model_id, n)
        caps, caps_src = cap_window(prov.model_id, n)
    except ValueError as err:  # a tabled name with another depth: fallbacks
        target, target_src = n // 2, f"fallback ({err})"
        caps, caps_src = cap_window("", n)
    caps = list(caps)
    measure = min(caps[-1] + 1, n - 1)
    rv = role_vectors(store, min_score=None, min_count=1)  # adjust="auto"
    axis = rv.axis()
    estimator = str(rv.provenance["estimator"])
    per_layer = {estimator: _layer_rows(store, rv, scale.seed)}
    pca = persona_pca(rv, target)
    loadings = {estimator: dict(zip(pca.names, as_floats(pca.pc1_loadings), strict=True))}
    if estimator != "plain":  # beside it, what the plain means would have said
        plain = role_vectors(store, min_score=None, min_count=1, adjust="none")
        per_layer["plain"] = _layer_rows(store, plain, scale.seed)
        pp = persona_pca(plain, target)
        loadings["plain"] = dict(zip(pp.names, as_floats(pp.pc1_loadings), strict=True))
    resp_values = project_store(store, axis, layers=caps)
    key = {
        "model": prov.to_dict(),
        "scale": dataclasses.asdict(scale),
        "items": len(store.collected_ids()),
        "personas": cat.content_hash(),
    }

    def _tokens() -> dict[str, Any]:
        tokens = token_projections(model, store, axis, layers=caps, batch_size=scale.batch_size)
        pooled = tokens.stacked(resp_values.ids, caps).numpy()
        return {"rows": _cap_rows(store, axis, caps, tokens, pooled), "pooled": pooled.tolist()}

    cap_step = _step(steps, "caps", {**key, "caps": caps, "pools": POOL_NAMES}, _tokens)
    cap_rows, pooled_tokens = cap_step["rows"], np.asarray(cap_step["pooled"])
    lever_layers = sorted({target, caps[len(caps) // 2], measure})
    lever = _step(
        steps,
        "levers",
        {
            **key,
            "layers": lever_layers,
            "variants": evals is not None,
            "short": SHORT_TOKENS,
            "draws": "a fresh subset per repeat",
        },
        lambda: levers(
            store,
            _variant_stores(model, store, out, scale, progress) if evals is not None else {},
            lever_layers,
            scale.seed,
        ),
    )
    behaviour: dict[str, Any] = {}
    if evals is not None:
        ekey = {**key, "eval": dataclasses.asdict(evals)}
        behaviour["steering"] = _step(
            steps,
            "steering",
            {**ekey, "coeffs": list(coeffs), "layer": target},
            lambda: steering_curve(model, axis, target, _norms(model, store), evals, coeffs),
        )
        configs = _cap_configs(cap_rows, axis)
        behaviour["capping"] = _step(
            steps,
            "capping",
            {**ekey, "caps": cap_rows, "measure": measure},
            lambda: cap_eval(model, axis, configs, measure, evals),
        )
        behaviour["drift"] = _step(
            steps,
            "drift",
            {**ekey, "caps": cap_rows, "layers": [target, measure]},
            lambda: drift(
                model,
                axis,
                {k: v for k, v in configs.items() if v.percentile == 25.0},
                [target, measure],
                evals,
            ),
        )
        held = np.asarray(
            _step(
                steps,
                "heldout",
                {**ekey, "layers": caps, "drift": behaviour["drift"]},
                lambda: heldout_tokens(model, axis, behaviour["drift"], caps),
            )
        )
        held = held.reshape(-1, len(caps))
        for row in cap_rows:  # what each cap would touch on tokens it was not computed from
            row["heldout_touched"], row["heldout_lift"] = (
                _touch(held, np.asarray(row["thresholds"])) if len(held) else (None, None)
            )
        behaviour["heldout_tokens"] = int(held.shape[0])
    result: dict[str, Any] = {
        "model": prov.to_dict(),
        "scale": dataclasses.asdict(scale),
        "eval_scale": dataclasses.asdict(evals) if evals is not None else None,
        "personas": {"source": cat.source, "sha256": cat.content_hash()},
        "judge": "keep_all (no filtering: the embedded models cannot judge reliably)",
        "store": str(store.root),
        "n_roles": len(rv.names),
        "n_role_items": int(sum(rv.counts)),
        "n_default_items": rv.default_count,
        "design": dict(store.manifest["generation"]["design"]),
        "estimator": {
            "name": estimator,
            "reason": rv.provenance["estimator_reason"],
        },
        "target_layer": {"layer": target, "source": target_src},
        "cap_window": {"layers": caps, "source": caps_src},
        "measure_layer": measure,
        "layers": per_layer[estimator],
        "layers_by_estimator": per_layer,
        "pc1_loadings": loadings[estimator],
        "pc1_loadings_by_estimator": loadings,
        "caps": cap_rows,
        "token_distribution": {
            "n_tokens": int(pooled_tokens.shape[0]),
            "n_responses": len(resp_values.ids),
            "response_std": as_floats(resp_values.values.numpy().std(0)),
            "token_std": as_floats(pooled_tokens.std(0)),
        },
        "levers": lever,
        "steer_units": "coefficient x mean residual norm at the target layer, along the unit axis",
        **behaviour,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    path = out / f"{slug}.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    from axislens.plots.thresholds import cap_distributions

    at = caps[len(caps) // 2]
    j = caps.index(at)
    taus = {
        f"p{round(100 * c['percentile'])} {c['unit']}": c["thresholds"][j]
        for c in cap_rows
        if c["percentile"] == 0.25
    }
    fig = cap_distributions(resp_values.at(at).numpy(), pooled_tokens[:, j], taus, layer=at)
    fig.write_html(out / f"{slug}-cap-distributions.html", include_plotlyjs="cdn")
    figures(result).write_html(out / f"{slug}-figures.html", include_plotlyjs="cdn")
    return result


def figures(r: dict[str, Any]) -> Any:
    """One page of figures for a result: per-layer persona space with the split-half cosines
    beside it, the steering curve, and the drift trajectories (first monitored layer)."""
    from plotly.subplots import make_subplots

    has = "steering" in r
    rows = 3 if has else 1
    fig = make_subplots(
        rows=rows,
        cols=1,
        subplot_titles=[
            "per layer: PC1 variance, cos(axis, PC1), split-half cosine of the axis",
            *(
                [
                    f"identity rate vs steering coefficient (layer {r['target_layer']['layer']}, norm units)",
                    f"drift: projection per assistant turn (layer {r['target_layer']['layer']})",
                ]
                if has
                else []
            ),
        ],
        vertical_spacing=0.08,
    )
    lay = r["layers"]
    for key, name in (
        ("pc1_variance", "PC1 variance"),
        ("cos_axis_pc1", "|cos(axis, PC1)|"),
        ("split_half_item", "split-half cos (item)"),
        ("split_half_question", "split-half cos (question)"),
    ):
        if lay[key] is None:
            continue
        y = [abs(v) for v in lay[key]] if key == "cos_axis_pc1" else lay[key]
        fig.add_scatter(x=lay["layer"], y=y, name=name, mode="lines+markers", row=1, col=1)
    if has:
        st = r["steering"]
        for key in ("identity_rate_roles", "identity_rate_default"):
            fig.add_scatter(
                x=[s["coeff"] for s in st], y=[s[key] for s in st], name=key, row=2, col=1
            )
        layer = str(r["target_layer"]["layer"])
        for conv, d in r["drift"].items():
            for label, run_ in d["runs"].items():
                y = run_["projections"][layer]
                fig.add_scatter(x=list(range(len(y))), y=y, name=f"{conv} ({label})", row=3, col=1)
    fig.update_layout(height=420 * rows, title=r["model"]["model_id"])
    return fig


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Pearson correlation of the PC1 role loadings of two runs on their common roles."""
    common = sorted(set(a["pc1_loadings"]) & set(b["pc1_loadings"]))
    if len(common) < 3:
        raise ValueError(f"only {len(common)} roles in common; need >= 3")
    x = np.array([a["pc1_loadings"][r] for r in common])
    y = np.array([b["pc1_loadings"][r] for r in common])
    return {
        "models": [a["model"]["model_id"], b["model"]["model_id"]],
        "design": a.get("design", {}).get("name"),
        "estimator": [a.get("estimator", {}).get("name"), b.get("estimator", {}).get("name")],
        "layers": [a["target_layer"]["layer"], b["target_layer"]["layer"]],
        "n_roles": len(common),
        "pc1_loading_r": float(np.corrcoef(x, y)[0, 1]),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None, fmt: str = "+.2f") -> str:
    return "-" if v is None else format(v, fmt)


def _at(values: list[float] | None, k: int) -> str:
    """``values[k]`` as ``+0.12``, or ``n/a`` when that split could not be made."""
    return "n/a" if values is None else f"{values[k]:+.2f}"


def _model_md(r: dict[str, Any]) -> list[str]:
    lay = r["layers"]
    t = r["target_layer"]["layer"]
    k = lay["layer"].index(t)
    s = r["scale"]
    sh = f"{_at(lay['split_half_item'], k)} / {_at(lay['split_half_question'], k)}"
    lines = [
        f"## {r['model']['model_id']}, {(r.get('design') or {}).get('name', 'unrecorded')} design",
        "",
        f"Scale: {r['n_roles']} roles x {s['n_prompts']} prompts x {s['n_questions']} questions "
        f"({r['n_role_items']} role items), {r['n_default_items']} default items, "
        f"{s['max_new_tokens']} new tokens, sampled (seed {s['seed']}). Catalogue: "
        f"{r['personas']['source']}. Target layer {t} ({r['target_layer']['source']}); cap window "
        f"{r['cap_window']['layers'][0]}-{r['cap_window']['layers'][-1]}; behaviour measured at "
        f"layer {r['measure_layer']}.",
        "",
        _design_md(r),
        "",
        "### Persona space (split-half cosine beside each figure)",
        "",
        "| figure | here | split-half cos (item / question) | paper |",
        "| --- | --- | --- | --- |",
        f"| PC1 variance (layer {t}) | {100 * lay['pc1_variance'][k]:.1f}% | {sh} | "
        f"{PAPER['pc1_variance']} |",
        f"| dims to 70% (layer {t}) | {lay['dims_70'][k]} | {sh} | {PAPER['dims_70']} |",
        f"| cos(axis, PC1) (layer {t}) | {lay['cos_axis_pc1'][k]:+.2f} | {sh} | "
        f"{PAPER['cos_axis_pc1']} |",
        "",
    ]
    for lay_e in r.get("layers_by_estimator", {"": lay}).values():
        lines += _layers_md(lay_e)
    lev = r["levers"]
    lines += [
        "",
        f"### Stability levers (split-half cosine by item, mean +- sd of {lev['splits']} splits)",
        "",
        "| lever | value | roles | role items | default items | "
        + " | ".join(f"layer {x}" for x in lev["layers"])
        + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in lev["layers"]) + " |",
    ]
    for row in lev["rows"]:
        cells = " | ".join(
            f"{m:+.2f} +- {sd:.2f}" for m, sd in zip(row["cos_mean"], row["cos_sd"], strict=True)
        )
        value = "-" if row.get("value") is None else row["value"]
        lines.append(
            f"| {row['lever']} | {value} | {row['n_roles']} | {row['n_role_items']} | "
            f"{row['n_default_items']} | {cells} |"
        )
    lines += [
        "",
        "### Caps: thresholds and how much they act",
        "",
        "Per pool (default = the Assistant's own responses, the documented default; balanced = "
        "roles and default weighted equally; all = every item): the mean tau over the cap "
        "layers; the share of the pooled response tokens (role + default) below it and their "
        "mean lift tau - projection (partly the percentile's own data: near the percentile by "
        "construction for a token-unit cap on the all pool); and the same on held-out tokens, "
        + (
            f"the unsteered drift replies ({r['heldout_tokens']} tokens), which no threshold "
            "was computed from."
            if r.get("heldout_tokens") is not None
            else "not measured in this run."
        ),
        "",
        "| unit | p | pool | layers | mean tau | pooled tokens below | mean lift | "
        "held-out tokens below | held-out lift |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in r["caps"]:
        held = c.get("heldout_touched")
        lines.append(
            f"| {c['unit']} | {c['percentile']} | {c.get('pool', 'all')} | "
            f"{c['layers'][0]}-{c['layers'][-1]} | {np.mean(c['thresholds']):+.2f} | "
            f"{100 * np.mean(c['tokens_touched']):.1f}% | {np.mean(c['mean_lift_touched']):.2f} | "
            + (
                f"{100 * np.mean(held):.1f}% | {np.mean(c['heldout_lift']):.2f} |"
                if held is not None
                else "- | - |"
            )
        )
    td = r["token_distribution"]
    lines += [
        "",
        f"Spread at the cap layers: per-response sd {np.mean(td['response_std']):.2f}, per-token "
        f"sd {np.mean(td['token_std']):.2f} ({td['n_tokens']} tokens of {td['n_responses']} "
        "responses).",
    ]
    if "steering" in r:
        lines += _behaviour_md(r)
    return [*lines, ""]


def _design_md(r: dict[str, Any]) -> str:
    """One paragraph: the question design and the estimator."""
    d = r.get("design") or {}
    e = r.get("estimator") or {}
    if not d:
        return (
            "Question design: not recorded: a run of axislens 0.2 (nested design, plain "
            "estimator, cap thresholds over the all pool, 0.2's default prompts)."
        )
    return (
        f"Question design: **{d['name']}**: {d['questions_per_role']} questions per role, "
        f"{d['default_questions']} for the default set, {d['role_questions_distinct']} distinct "
        f"role questions, overlap {d['overlap']}, roles per default question "
        f"{d['roles_per_question'] if d['roles_per_question'] is not None else 'unequal'}. "
        f"Estimator: **{e.get('name', 'plain')}** ({e.get('reason', '')})."
    )


def _layers_md(lay: dict[str, Any]) -> list[str]:
    """The per-layer table of one estimator."""
    est = lay.get("estimator", "plain")
    off, cos = lay.get("offset_over_axis"), lay.get("cos_axis_offset")
    lines = [
        "",
        f"Per layer, {est} estimator (|b|/|axis|: the question-offset estimate against this "
        "axis, 0 on a balanced design):",
        "",
        "| layer | PC1 var | dims 70% | cos(axis, PC1) | split-half (item) | "
        "split-half (question) | abs(b)/abs(axis) | cos(axis, b) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j, layer in enumerate(lay["layer"]):
        c = None if cos is None else cos[j]
        lines.append(
            f"| {layer} | {100 * lay['pc1_variance'][j]:.1f}% | {lay['dims_70'][j]} | "
            f"{lay['cos_axis_pc1'][j]:+.2f} | {_at(lay['split_half_item'], j)} | "
            f"{_at(lay['split_half_question'], j)} | "
            f"{'n/a' if off is None else format(off[j], '.2f')} | {'-' if c is None else format(c, '+.2f')} |"
        )
    for by, why in lay.get("split_half_unavailable", {}).items():
        lines += ["", f"The split by {by} could not be made: {why}."]
    return lines


def _behaviour_md(r: dict[str, Any]) -> list[str]:
    e = r["eval_scale"]
    lines = [
        "",
        f"### Identity rate vs steering coefficient (layer {r['target_layer']['layer']})",
        "",
        f"Greedy replies ({e['eval_tokens']} tokens) to {e['eval_identity']} identity probes; "
        f'coefficient in {r["steer_units"]}. Identity rate: share labelled "assistant" by the '
        f"keyword classifier; paper: {PAPER['steering']}.",
        "",
        "| coeff | identity rate (role prompts) | identity rate (no prompt) | "
        "projection (identity replies) | perplexity |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in r["steering"]:
        lines.append(
            f"| {s['coeff']:+g} | {_pct(s.get('identity_rate_roles'))} | "
            f"{_pct(s.get('identity_rate_default'))} | {_num(s.get('projection_identity'))} | "
            f"{_num(s.get('perplexity'), '.1f')} |"
        )
    lines += [
        "",
        f"### Persona attacks and capability, unsteered vs capped (measured at layer "
        f"{r['measure_layer']})",
        "",
        f"{e['eval_attacks']} persona attacks, {e['eval_identity']} identity probes, "
        f"{e['eval_qa']} QA items; paper: {PAPER['capping']}. Attack identity rate: the share "
        'of attack replies the keyword classifier labels "assistant" (the model kept its '
        "Assistant identity: higher = more robust).",
        "",
        "| setting | attack identity rate | attack refusal (kw) | identity rate (roles) | "
        "QA contains | perplexity | KL | projection (attacks) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in r["capping"]:
        lines.append(
            f"| {c['setting']} | {_pct(c.get('attack_identity_rate'))} | "
            f"{_pct(c.get('attack_refusal_kw_rate'))} | {_pct(c.get('identity_rate_roles'))} | "
            f"{_pct(c.get('qa_contains'))} | {_num(c.get('perplexity'), '.1f')} | "
            f"{_num(c.get('kl'), '.4f')} | {_num(c.get('projection_attacks'))} |"
        )
    t = str(r["target_layer"]["layer"])
    m = str(r["measure_layer"])
    lines += [
        "",
        f"### Drift over four conversations ({e['drift_turns']} turns, {e['drift_tokens']} "
        "tokens, greedy)",
        "",
        f"Mean projection of the assistant turns at layer {t} / layer {m}, first turn -> last "
        f"turn (slope per turn at layer {t}); paper: {PAPER['drift']}.",
        "",
        "| conversation | run | layer "
        + t
        + " first -> last | slope | layer "
        + m
        + " first -> last | cap engaged |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in r["drift"].values():
        for label, run_ in d["runs"].items():
            a, b = run_["projections"][t], run_["projections"][m]
            slope = float(np.polyfit(np.arange(len(a)), a, 1)[0]) if len(a) > 1 else 0.0
            lines.append(
                f"| {d['domain']} | {label} | {a[0]:+.2f} -> {a[-1]:+.2f} | {slope:+.2f} | "
                f"{b[0]:+.2f} -> {b[-1]:+.2f} | {sum(run_['capped'])}/{len(a)} |"
            )
    return lines


def results_md(
    results: list[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]] = (),
    notes: str = "",
) -> str:
    """docs/results.md: our numbers beside the paper's published figures (``notes``: a
    hand-written reading of them, placed after the introduction)."""
    lines = [
        "# Results: the paper's numbers on the embedded models",
        "",
        "Written by `experiments/paper_table.py`; numbers as they came out (nothing tuned).",
        "Every role response is kept (no judge). The split-half cosine of the axis is shown next",
        "to every figure: where it is low, the figure rests on noise.",
        "",
        *([notes.strip(), ""] if notes.strip() else []),
    ]
    for r in results:
        lines += _model_md(r)
    if comparisons:
        lines += ["## Between models", ""]
        for c in comparisons:
            lines += [
                f"PC1 role-loading correlation, {c.get('design') or 'unrecorded'} design "
                f"({c['n_roles']} common roles, layers {c['layers']}, estimators "
                f"{' / '.join(str(e) for e in c.get('estimator', []))}): "
                f"r = {c['pc1_loading_r']:+.2f} (paper: {PAPER['pc1_loading_correlation']}).",
                "",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--small", action="store_true", help="a smoke-scale run (minutes on 2 cores)")
    p.add_argument("--out", default="experiments/results")
    p.add_argument("--personas", default=None, help="catalogue folder (paper layout accepted)")
    p.add_argument("--results-md", default=None, help="also write this markdown table")
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="JSON",
        help="results to tabulate; runs of different models with the same design are correlated",
    )
    p.add_argument("--notes", default=None, help="markdown placed after the introduction")
    p.add_argument("--no-behaviour", action="store_true", help="skip steps 7-9")
    p.add_argument("--coeffs", type=float, nargs="+", default=None, help="steering coefficients")
    for cls in (Scale, EvalScale):
        for f in dataclasses.fields(cls):
            if f.name != "design":
                p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=None)
    p.add_argument(
        "--design",
        choices=("shared", "rotated", "nested"),
        default=None,
        help="question design (default: axislens' own); a named design writes <model>-<design>.*",
    )
    args = p.parse_args(argv)
    if args.compare:
        runs = [json.loads(Path(x).read_text()) for x in args.compare]
        cmps = [
            compare(a, b)
            for i, a in enumerate(runs)
            for b in runs[i + 1 :]
            if a["model"]["model_id"] != b["model"]["model_id"]
            and a.get("design", {}).get("name") == b.get("design", {}).get("name")
        ]
        print(json.dumps(cmps, indent=1))
        if args.results_md:
            notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
            Path(args.results_md).write_text(results_md(runs, cmps, notes) + "\n", encoding="utf-8")
        return 0
    import axislens
    from axislens.personas import load_personas

    def _over(base: Any) -> Any:
        return dataclasses.replace(
            base,
            **{
                f.name: getattr(args, f.name)
                for f in dataclasses.fields(base)
                if getattr(args, f.name) is not None
            },
        )

    scale = dataclasses.replace(_over(SMALL if args.small else SCALE), design=args.design)
    evals = None if args.no_behaviour else _over(SMALL_EVAL if args.small else EVAL)
    coeffs = args.coeffs or ((-1.0, 1.0) if args.small else STEER_COEFFS)
    torch.manual_seed(scale.seed)
    model = axislens.load_model(args.model)
    result = run(
        model,
        Path(args.out),
        scale,
        evals=evals,
        coeffs=coeffs,
        personas=load_personas(args.personas),
    )
    if args.results_md:
        Path(args.results_md).write_text(results_md([result]) + "\n", encoding="utf-8")
    print(f"wrote {Path(args.out)} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
