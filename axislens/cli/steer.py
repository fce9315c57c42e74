"""``axislens steer`` and ``axislens cap``: one prompt, answered with and without an intervention.

Registered on import through :func:`axislens.cli.app.command` (``axislens.cli.app`` imports this module
after defining ``command``).

Example::

    axislens steer --model smollm2-135m-instruct --axis axis.safetensors --layers 12:16 \\
        --coeff -4 "Who are you?"
    axislens cap --model qwen3-32b --cap capping_config.pt --experiment layers_46:54-p0.25 "..."
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any

from axislens.cli.app import _add_model_arg, command, load_from_args

__all__ = ["side_by_side"]


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int = 0) -> str:
    """Two texts in two wrapped columns under their titles."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    col = max(20, (width - 3) // 2)

    def lines(title: str, text: str) -> list[str]:
        out = [title[:col], "-" * min(col, max(len(title), 1))]
        for para in text.splitlines() or [""]:
            out += textwrap.wrap(para, col) or [""]
        return out

    a, b = lines(left_title, left), lines(right_title, right)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"{x:<{col}} | {y}".rstrip() for x, y in zip(a, b, strict=True))


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p, positional=False)
    p.add_argument("prompt", help="the user message")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--positions", default="all", help="all, prompt, response, last or 3:7,9:12")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=0, help="output width (default: the terminal)")


def _add_steer_args(p: argparse.ArgumentParser) -> None:
    _add_generation_args(p)
    p.add_argument("--axis", required=True, help="Direction file (.safetensors) or torch .pt")
    p.add_argument("--layers", required=True, help="e.g. 12:16, -4:, 7 or 3,5,9")
    p.add_argument("--coeff", type=float, required=True, help="steering coefficient")
    p.add_argument(
        "--op", default="add", choices=["add", "ablate"], help="add c*v, or project out + c*v"
    )
    p.add_argument("--hook", default=None, help="resid_post (default: the axis's hook), ...")


def _add_cap_args(p: argparse.ArgumentParser) -> None:
    _add_generation_args(p)
    p.add_argument("--cap", required=True, help="CapConfig .json, or a public capping_config.pt")
    p.add_argument("--experiment", default=None, help="experiment id or index inside a .pt config")


def _load_direction(path: str) -> Any:
    from axislens.directions import Direction

    return Direction.from_torch(path) if Path(path).suffix == ".pt" else Direction.load(path)


def _load_cap(path: str, experiment: str | None, n_layers: int) -> Any:
    from axislens.directions import CapConfig

    if Path(path).suffix != ".pt":
        return CapConfig.load(path)
    if experiment is None:
        raise ValueError(f"{path}: a capping_config.pt needs --experiment (an id or an index)")
    exp: str | int = int(experiment) if experiment.lstrip("-").isdigit() else experiment
    return CapConfig.from_torch(path, exp, n_layers=n_layers)


def _compare(args: argparse.Namespace, model: Any, intervention: Any, title: str) -> int:
    from axislens.interventions.attach import intervene
    from axislens.model.chat import format_conversation
    from axislens.model.decoding import SamplingConfig, generate_text

    messages = [{"role": "system", "content": args.system}] if args.system is not None else []
    messages.append({"role": "user", "content": args.prompt})
    conv = format_conversation(model, messages, add_generation_prompt=True)
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    with intervene(model, intervention):  # validates before the unsteered run costs anything
        pass
    plain = generate_text(model, [conv], sampling)[0]
    with intervene(model, intervention):
        changed = generate_text(model, [conv], sampling)[0]
    print(side_by_side("unsteered", plain, title, changed, args.width))
    return 0


@command("steer", _add_steer_args)
def _cmd_steer(args: argparse.Namespace) -> int:
    from axislens.interventions.attach import Intervention
    from axislens.interventions.operations import Ablate, Add, parse_positions
    from axislens.model.hooks import parse_layers

    direction = _load_direction(args.axis)
    op = Add(args.coeff) if args.op == "add" else Ablate(args.coeff)
    iv = Intervention(
        op,
        direction,
        parse_layers(args.layers),
        hook=args.hook,
        positions=parse_positions(args.positions),
    )
    model = load_from_args(args)
    title = f"{args.op} {args.coeff:g} x axis at layers {args.layers} ({iv.hook})"
    return _compare(args, model, iv, title)


@command("cap", _add_cap_args)
def _cmd_cap(args: argparse.Namespace) -> int:
    from axislens.interventions.attach import cap_intervention
    from axislens.interventions.operations import parse_positions

    positions = parse_positions(args.positions)
    model = load_from_args(args)
    cap_config = _load_cap(args.cap, args.experiment, int(model.cfg.n_layers))
    iv = cap_intervention(cap_config, positions=positions)
    layers = cap_config.layers
    title = f"capped at layers {layers[0]}..{layers[-1]} ({len(layers)} layers)"
    return _compare(args, model, iv, title)
