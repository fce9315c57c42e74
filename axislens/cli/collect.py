r"""``axislens collect``: generate role responses, collect span means, judge, in one resumable run.

The command is a thin wrapper over :func:`run_collect`, which takes a loaded model (so tests and
notebooks can call it with a tiny model). Every stage is resumable: rerun the same command after
an interruption and it continues where it stopped (corrupt activation shards are recomputed).

Example (shell)::

    axislens collect --model smollm2-135m-instruct --out runs/smol --roles 20 \
        --prompts 2 --questions 10 --max-new-tokens 64 --judge model

Generation through an engine (vLLM, SGLang, TGI...), collection through the bridge::

    axislens collect --model Qwen/Qwen3-32B --out runs/qwen --engine openai \
        --engine-url http://127.0.0.1:8000/v1 --engine-model qwen3-32b --no-collect
    axislens collect --model Qwen/Qwen3-32B --out runs/qwen --device cuda   # collects

Example (Python):
    >>> summary = run_collect(model, "runs/x", roles=6, n_prompts=2, n_questions=4,
    ...                       max_new_tokens=32, judge="none")  # doctest: +SKIP
    >>> print(summary)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from axislens.cli.app import (
    add_engine_args,
    add_model_args,
    add_persona_args,
    add_sampling_args,
    backend_from_args,
    check_catalogue,
    check_defaults,
    check_design,
    check_device,
    command,
    engine_url,
    layers,
    load_from_args,
    out_dir,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from axislens.collection.judges import Judge, JudgeChoice

__all__ = ["parse_roles"]

# jobs.collect.CollectMode and collection.judges.JudgeChoice (a test checks they match), written
# out so that --help needs no torch.
_MODES = ("response", "prefill")
_JUDGES = ("none", "keep_all", "model", "openai")
_PAPER_SIZES = {"max_new_tokens": 512, "batch_size": 8}
# PersonaData's defaults (a test checks they match), written out so that --help needs no torch.
_PERSONA_DEFAULTS = {
    "n_prompts": 5,
    "n_questions": 240,
    "default_prompts": None,
    "default_questions": None,
}


def parse_roles(text: str | None) -> int | list[str] | None:
    """``"20"`` -> 20 (the first 20 roles of the catalogue's spread order); ``"ghost,pirate"`` ->
    names; ``None``/``"all"`` -> every role."""
    if text is None or text.strip() in ("", "all"):
        return None
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"--roles: expected at least 1 role, got {text}")
        return int(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--roles: expected a number or comma-separated role names, got {text!r}")
    return names


def _add_collect_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--out", type=out_dir, required=True, help="store folder (created, or resumed)")
    p.add_argument(
        "--roles", default="all", help="all, N (first N roles, categories interleaved) or name,name"
    )
    add_persona_args(p, _PERSONA_DEFAULTS)
    add_sampling_args(p, max_new_tokens=None, temperature=0.7)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="sequences per batch (default: 16 for an embedded model on a CPU, else 8)",
    )
    add_engine_args(p, choice=True)
    p.add_argument(
        "--no-collect",
        action="store_true",
        help="generate (and judge) only; a later run without it collects the activations",
    )
    p.add_argument("--mode", choices=_MODES, default="response", help="what the spans cover")
    p.add_argument(
        "--judge",
        choices=_JUDGES,
        default="none",
        help="openai reads AXISLENS_JUDGE_MODEL, AXISLENS_JUDGE_BASE_URL/OPENAI_BASE_URL, "
        "OPENAI_API_KEY",
    )
    p.add_argument(
        "--judge-url", type=engine_url, default=None, metavar="URL", help="--judge openai endpoint"
    )
    p.add_argument("--judge-model", default=None, metavar="NAME", help="--judge openai model")
    p.add_argument(
        "--judge-concurrency", type=positive_int, default=8, help="judge requests in flight"
    )
    p.add_argument(
        "--judge-rpm",
        type=positive_float,
        default=None,
        help="judge requests per minute (default: no limit)",
    )
    p.add_argument(
        "--layers", type=layers("--layers"), default=None, help="layers to store (default: all)"
    )
    p.add_argument("--hooks", default="resid_post", help="comma list, e.g. resid_post,mlp_out")
    p.add_argument("--personas", default=None, help="catalogue folder (default: the shipped one)")
    p.add_argument("--no-default", action="store_true", help="skip the default-prompt items")
    p.add_argument(
        "--store-dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="storage dtype of a new store (default float32; bfloat16 halves the disk use)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="resume a store whose persona catalogue, sampling settings or weights changed",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--yes",
        action="store_true",
        help="start a run too large for a CPU (the plan printed first says how large)",
    )


@command(
    "collect",
    _add_collect_args,
    summary="generate role responses, store their activations and judge them (resumable)",
    example="axislens collect --model smollm2-135m-instruct --out runs/smol --roles 20 \\\n"
    "    --prompts 2 --questions 10 --max-new-tokens 64 --judge model",
)
def _cmd_collect(args: argparse.Namespace) -> int:
    from axislens.collection.judges import OpenAIJudge
    from axislens.collection.plan import CPU_DEFAULTS, collect_plan, cpu_sized
    from axislens.directions import HOOKS, check_hook
    from axislens.jobs.collect import run_collect
    from axislens.personas import load_personas

    # Check everything that can be checked before the (slow) model load.
    roles = parse_roles(args.roles)
    hooks = tuple(check_hook(h.strip(), "--hooks") for h in args.hooks.split(",") if h.strip())
    if not hooks:
        raise ValueError(
            f"--hooks: expected a comma list of {', '.join(HOOKS)}, got {args.hooks!r}"
        )
    personas = load_personas(args.personas)
    check_catalogue(personas, roles, args.prompts, args.questions)
    check_defaults(
        personas, args.default_prompts or args.prompts, args.default_questions or args.questions
    )
    check_design(personas, roles, args.design, args.questions, args.default_questions)
    judge: JudgeChoice | Judge = args.judge
    if args.judge == "openai":
        judge = OpenAIJudge(
            args.judge_model,
            base_url=args.judge_url,
            concurrency=args.judge_concurrency,
            requests_per_minute=args.judge_rpm,
        )
    elif args.judge_url or args.judge_model:
        raise ValueError("--judge-url/--judge-model need --judge openai")
    from axislens.collection.launch import current_launch
    from axislens.store import check_not_in_use, check_writable

    check_writable(args.out)
    check_not_in_use(args.out)  # another run writing here: refused before the model loads
    launch = current_launch()  # accelerate launch / torchrun: one GPU per rank
    args.device = launch.device(args.device)
    check_device(args.device)
    backend = backend_from_args(args)  # reachable and serving --engine-model, before the load
    # Unset sizes: CPU-sized for an embedded model on a CPU, else the paper's.
    sizes = CPU_DEFAULTS if cpu_sized(args.model, args.device) else _PAPER_SIZES
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    plan = collect_plan(
        personas,
        roles,
        n_prompts=args.prompts,
        n_questions=args.questions,
        max_new_tokens=args.max_new_tokens,
        include_default=not args.no_default,
        default_prompts=args.default_prompts,
        default_questions=args.default_questions,
        design=args.design,
        device=args.device if backend is None else "engine",
        generate=args.mode == "response",
    )
    print(plan.describe(), flush=True)
    plan.check(args.yes)  # before the model load: a refused run costs nothing
    if backend is not None and args.no_collect and args.judge != "model":
        # Nothing runs the model here: its tokenizer and config are enough (a 32B model's
        # weights would take 64 GB before the first request).
        import torch

        from axislens.model.loading import load_model

        model = load_model(args.model, dtype=getattr(torch, args.dtype), weights=False)
    else:
        model = load_from_args(args)
    summary = run_collect(
        model,
        args.out,
        personas=personas,
        roles=roles,
        n_prompts=args.prompts,
        n_questions=args.questions,
        default_prompts=args.default_prompts,
        default_questions=args.default_questions,
        design=args.design,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
        mode=args.mode,
        judge=judge,
        hooks=hooks,
        layers=args.layers,
        include_default=not args.no_default,
        progress=not args.quiet,
        backend=backend,
        collect_activations=not args.no_collect,
        force=args.force,
        launch=launch,
        store_dtype=args.store_dtype,
    )
    print(summary)
    return 0
