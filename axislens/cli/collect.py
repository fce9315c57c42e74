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
from typing import TYPE_CHECKING, get_args

from axislens.cli.app import _add_model_arg, command, load_from_args
from axislens.model.hooks import parse_layers
from axislens.pipelines import CollectMode, JudgeChoice, _pick_roles, run_collect

if TYPE_CHECKING:
    from axislens.collection.judges import Judge

__all__ = ["parse_roles"]


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
    from axislens.collection.judges import OpenAIJudge
    from axislens.personas import load_personas

    # Check everything that can be checked before the (slow) model load.
    roles = parse_roles(args.roles)
    layers = parse_layers(args.layers, "--layers") if args.layers is not None else None
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
