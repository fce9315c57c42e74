"""``axislens collect``: generate role responses, collect span means, judge, in one resumable run.

The command is a thin wrapper over :func:`run_collect`, which takes a loaded model (so tests and
notebooks can call it with a tiny model). Every stage is resumable: rerun the same command after
an interruption and it continues where it stopped (corrupt activation shards are recomputed).

Example (shell)::

    axislens collect --model smollm2-135m-instruct --out runs/smol --roles 20 \\
        --prompts 2 --questions 10 --max-new-tokens 64 --judge model

Example (Python):
    >>> summary = run_collect(model, "runs/x", roles=6, n_prompts=2, n_questions=4,
    ...                       max_new_tokens=32, judge="none")  # doctest: +SKIP
    >>> print(summary)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from axislens.cli import _add_model_arg, command, load_from_args

if TYPE_CHECKING:
    from axislens.collect import CollectSummary
    from axislens.judge import Judge, JudgeSummary

__all__ = ["CollectMode", "JudgeChoice", "RunSummary", "parse_layers", "parse_roles", "run_collect"]

CollectMode = Literal["response", "prefill"]
JudgeChoice = Literal["none", "model", "openai"]


def parse_roles(text: str | None) -> int | list[str] | None:
    """``"20"`` -> 20 (the first 20 roles of the catalogue's spread order); ``"ghost,pirate"`` ->
    names; ``None``/``"all"`` -> every role."""
    if text is None or text.strip() in ("", "all"):
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--roles: expected a number or comma-separated role names, got {text!r}")
    return names


def parse_layers(text: str | None) -> list[int] | slice | None:
    """``None``/``"all"`` -> all layers; ``"0,7,-1"`` -> a list; ``"10:20"`` -> a slice."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            return slice(*parts)
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--layers: expected 'all', a comma list such as 0,7,-1, or a slice such as 10:20; "
            f"got {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What :func:`run_collect` did: items, tokens, seconds per stage."""

    out: str
    mode: CollectMode
    items: int
    generated: int
    generated_tokens: int
    generate_seconds: float
    collect: CollectSummary
    judge: JudgeSummary | None
    seconds: float

    @property
    def tokens(self) -> int:
        """Tokens processed this run: generated tokens plus teacher-forced tokens."""
        return self.generated_tokens + self.collect.tokens

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [f"store: {self.out} (span={self.mode})"]
        if self.mode == "response":
            rate = self.generated_tokens / self.generate_seconds if self.generate_seconds else 0.0
            lines.append(
                f"generate: {self.generated} new responses, {self.generated_tokens} tokens in "
                f"{self.generate_seconds:.1f} s ({rate:.1f} tokens/s)"
            )
        lines.append(f"collect: {self.collect}")
        if self.collect.skipped_reasons:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(self.collect.skipped_reasons.items()))
            lines.append(f"  skipped: {why}")
        if self.judge is not None:
            lines.append(str(self.judge))
        lines.append(
            f"total: {self.items} items, {self.tokens} tokens in {self.seconds:.1f} s "
            f"({self.tokens_per_second:.1f} tokens/s)"
        )
        return "\n".join(lines)


def _pick_roles(personas: Any, roles: int | Sequence[str] | None) -> list[str] | None:
    if roles is None:
        return None
    if isinstance(roles, int):
        spread = personas.spread_roles()
        if not 1 <= roles <= len(spread):
            raise ValueError(f"--roles {roles}: the catalogue has {len(spread)} roles")
        return [r.name for r in spread[:roles]]
    return [personas.role(name).name for name in roles]


@dataclass(slots=True)
class _CountingBackend:
    """The bridge backend, counting generated tokens (stop tokens excluded)."""

    model: Any
    batch_size: int
    tokens: int = 0

    def generate(
        self, conversations: Sequence[Any], sampling: Any, keys: Sequence[str]
    ) -> list[str]:
        from axislens.generate import generate_tokens

        toks = generate_tokens(
            self.model,
            [c.input_ids for c in conversations],
            sampling,
            keys=keys,
            batch_size=self.batch_size,
        )
        self.tokens += sum(len(t) for t in toks)
        return [self.model.tokenizer.decode(t, skip_special_tokens=True).strip() for t in toks]


def _make_judge(choice: JudgeChoice | Judge, model: Any, batch_size: int) -> Judge | None:
    from axislens.judge import ModelJudge, OpenAIJudge

    if not isinstance(choice, str):
        return choice
    if choice not in get_args(JudgeChoice):
        raise ValueError(
            f"unknown judge {choice!r}; expected one of {', '.join(get_args(JudgeChoice))}"
        )
    if choice == "none":
        return None
    if choice == "model":
        return ModelJudge(model, batch_size=batch_size)
    return OpenAIJudge()


def run_collect(
    model: Any,
    out: str | os.PathLike[str],
    *,
    personas: Any = None,
    roles: int | Sequence[str] | None = None,
    n_prompts: int = 5,
    n_questions: int = 240,
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    mode: CollectMode = "response",
    judge: JudgeChoice | Judge = "none",
    hooks: Sequence[str] = ("resid_post",),
    layers: Sequence[int] | slice | None = None,
    include_default: bool = True,
    progress: bool = True,
) -> RunSummary:
    """Generate responses (``mode="response"``), collect span means, and judge, into ``out``.

    Args:
        personas: a :class:`~axislens.personas.Personas`, a catalogue directory, or ``None`` for
            the shipped catalogue.
        roles: ``N`` = the first N roles of the catalogue's spread order (categories
            interleaved), a list of names, or ``None`` for all.
        mode: ``"response"`` generates responses and averages over them; ``"prefill"`` skips
            generation and records the activation at the generation-prompt position.
        judge: ``"none"`` (no scores), ``"model"`` (this model judges, greedy), ``"openai"``
            (:class:`~axislens.judge.OpenAIJudge` configured from the environment) or a judge
            object. Only role responses are judged; ``"prefill"`` has nothing to judge.

    Resumable: items already generated, collected or scored are skipped.
    """
    from axislens.collect import collect, collection_manifest, resolve_layers, span_policy
    from axislens.generate import (
        SamplingConfig,
        generate_responses,
        generation_provenance,
        persona_items,
    )
    from axislens.judge import judge_store
    from axislens.models import model_provenance
    from axislens.personas import Personas, load_personas
    from axislens.store import ActivationStore

    t0 = time.perf_counter()
    if mode not in get_args(CollectMode):
        raise ValueError(
            f"unknown mode {mode!r}; expected one of {', '.join(get_args(CollectMode))}"
        )
    if mode == "prefill" and judge != "none":
        raise ValueError(
            "--judge needs responses; --mode prefill generates none (use --judge none)"
        )
    cat = personas if isinstance(personas, Personas) else load_personas(personas)
    role_names = _pick_roles(cat, roles)
    judge_obj = _make_judge(judge, model, batch_size)
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    prov = generation_provenance(cat, sampling)
    if mode == "prefill":
        prov = {"personas": prov["personas"]}
    policy = span_policy(mode)
    layer_list = resolve_layers(layers, int(model.cfg.n_layers))
    # Create (or check) the store before any work: a mismatched model/hooks/span fails fast.
    store = ActivationStore.create(
        out, collection_manifest(model, tuple(hooks), layer_list, policy, prov)
    )
    gen_t0 = time.perf_counter()
    generated = 0
    backend = _CountingBackend(model, batch_size)
    if mode == "response":
        before = {
            rid
            for rid, r in store.records().items()
            if r.messages and r.messages[-1]["role"] == "assistant"
        }
        records = generate_responses(
            model,
            cat,
            store,
            roles=role_names,
            n_prompts=n_prompts,
            n_questions=n_questions,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            include_default=include_default,
            backend=backend,
            progress=progress,
        )
        generated = sum(1 for r in records if r.id not in before)
    else:
        records = persona_items(
            cat,
            roles=role_names,
            n_prompts=n_prompts,
            n_questions=n_questions,
            include_default=include_default,
            model_name=model_provenance(model).model_id.split("/")[-1],
        )
    gen_seconds = time.perf_counter() - gen_t0
    summary = collect(
        model,
        records,
        store,
        hooks=hooks,
        layers=list(layer_list),
        span=policy,
        batch_size=batch_size,
        provenance=prov,
        progress=progress,
    )
    judged = None
    if judge_obj is not None:
        judged = judge_store(store, cat, judge_obj, progress=progress)
    return RunSummary(
        out=str(Path(out)),
        mode=mode,
        items=len(records),
        generated=generated,
        generated_tokens=backend.tokens,
        generate_seconds=gen_seconds if mode == "response" else 0.0,
        collect=summary,
        judge=judged,
        seconds=time.perf_counter() - t0,
    )


def _add_collect_args(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p, positional=False)
    p.add_argument("--out", required=True, help="store directory (created, or resumed)")
    p.add_argument(
        "--roles", default=None, help="N (first N roles, categories interleaved) or name,name"
    )
    p.add_argument("--prompts", type=int, default=5, help="system-prompt variants per role")
    p.add_argument("--questions", type=int, default=240, help="extraction questions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", choices=get_args(CollectMode), default="response")
    p.add_argument(
        "--judge",
        choices=get_args(JudgeChoice),
        default="none",
        help="openai reads AXISLENS_JUDGE_MODEL, AXISLENS_JUDGE_BASE_URL/OPENAI_BASE_URL, "
        "OPENAI_API_KEY",
    )
    p.add_argument("--layers", default=None, help="all (default), 0,7,-1 or 10:20")
    p.add_argument("--hooks", default="resid_post", help="comma list, e.g. resid_post,mlp_out")
    p.add_argument("--personas", default=None, help="catalogue directory (default: shipped)")
    p.add_argument("--no-default", action="store_true", help="skip the default-prompt items")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@command("collect", _add_collect_args)
def _cmd_collect(args: argparse.Namespace) -> int:
    from axislens.judge import OpenAIJudge
    from axislens.personas import load_personas

    # Check everything that can be checked before the (slow) model load.
    roles = parse_roles(args.roles)
    layers = parse_layers(args.layers)
    personas = load_personas(args.personas)
    _pick_roles(personas, roles)
    judge: JudgeChoice | Judge = OpenAIJudge() if args.judge == "openai" else args.judge
    model = load_from_args(args)
    summary = run_collect(
        model,
        args.out,
        personas=personas,
        roles=roles,
        n_prompts=args.prompts,
        n_questions=args.questions,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
        mode=args.mode,
        judge=judge,
        hooks=tuple(h.strip() for h in args.hooks.split(",") if h.strip()),
        layers=layers,
        include_default=not args.no_default,
        progress=not args.quiet,
    )
    print(summary)
    return 0
