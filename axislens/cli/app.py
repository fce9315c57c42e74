"""The ``axislens`` command.

Each subcommand lives in a small ``_cmd_*`` function; heavy imports happen inside them so that
``axislens --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(
    name: str, add_args: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Command], Command]:
    """Register a subcommand: ``add_args`` declares its flags, the function runs it."""

    def register(fn: Command) -> Command:
        _COMMANDS[name] = (add_args, fn)
        return fn

    return register


def _add_models_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(help_text="list embedded models, whether prepared, and the cache path")


@command("models", _add_models_args)
def _cmd_models(args: argparse.Namespace) -> int:
    from axislens.model.loading import EMBEDDED_MODELS, cache_dir

    print(f"cache: {cache_dir()}")
    for name, spec in EMBEDDED_MODELS.items():
        folder = cache_dir() / "models" / f"{name}-{spec.sha256[:12]}"
        prepared = (folder / "axislens-embedded.json").is_file()
        try:
            spec.part_paths()
            installed = "installed"
        except ValueError:
            installed = f"not installed ({spec.pip})"
        state = f"prepared at {folder}" if prepared else "not prepared"
        print(
            f"{name:30s} {'chat' if spec.chat else 'base':4s}  {installed}; {state}\n    {spec.description}"
        )
    return 0


def _add_model_arg(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    from axislens.model.loading import DEFAULT_MODEL

    if positional:
        p.add_argument(
            "model", nargs="?", default=DEFAULT_MODEL, help="embedded name, folder or hub id"
        )
    else:
        p.add_argument("--model", default=DEFAULT_MODEL, help="embedded name, folder or hub id")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def _add_chat_args(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    p.add_argument("message", help="the user message")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)


def load_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Load the model named by ``--model``/``model``, ``--device`` and ``--dtype``."""
    import torch

    from axislens.model.loading import load_model

    return load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))


@command("chat", _add_chat_args)
def _cmd_chat(args: argparse.Namespace) -> int:
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_text

    model = load_from_args(args)
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else []) + [
        {"role": "user", "content": args.message}
    ]
    conv = format_conversation(model, messages, add_generation_prompt=True)
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    print(generate_text(model, [conv], sampling)[0])
    return 0


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    from axislens.pipelines import DemoConfig

    d = DemoConfig()
    p.add_argument("--model", default=d.model, help="embedded name, folder or hub id")
    p.add_argument("--out", default=d.out, help="output folder (the store inside is reused)")
    p.add_argument("--roles", type=int, default=d.n_roles, help="number of roles (spread order)")
    p.add_argument("--prompts", type=int, default=d.n_prompts)
    p.add_argument("--questions", type=int, default=d.n_questions)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--judge", choices=["keep_all", "model", "openai"], default=d.judge)
    p.add_argument("--min-count", type=int, default=d.min_count)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--full", action="store_true", help="paper scale (all roles, 5 prompts, 240 questions; GPU)"
    )


@command("demo", _add_demo_args)
def _cmd_demo(args: argparse.Namespace) -> int:
    from axislens.pipelines import DemoConfig, run_demo

    small = DemoConfig(
        model=args.model,
        out=args.out,
        n_roles=args.roles,
        n_prompts=args.prompts,
        n_questions=args.questions,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        judge=args.judge,
        min_count=args.min_count,
        device=args.device,
        dtype=args.dtype,
    )
    cfg = DemoConfig.full(model=args.model, out=args.out) if args.full else small
    run_demo(cfg)
    return 0


_PLUGINS = (
    "axislens.cli.collect",
    "axislens.cli.axis",
    "axislens.cli.steer",
    "axislens.cli.monitor",
    "axislens.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for module in _PLUGINS:  # each registers its subcommands with @command
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="axislens", description="Find, steer and cap the Assistant Axis."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _fn) in _COMMANDS.items():
        p = sub.add_parser(name)
        add_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _add_args, fn = _COMMANDS[args.command]
    try:
        return fn(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Our errors are one line naming what is wrong; no stack trace for bad input.
        print(f"axislens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
