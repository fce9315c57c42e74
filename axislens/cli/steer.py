r"""``axislens steer`` and ``axislens cap``: one prompt, answered with and without an intervention.

Registered on import through :func:`axislens.cli.app.command` (``axislens.cli.app`` imports this module
after defining ``command``).

``--coeff`` is in the units of the Python API: raw units of the direction vector (``h + c * v``,
as ``steer(model, direction, c, layers)``), or, with ``--norm-units``, in average residual norms
measured on the prompt (``h + c * |h|_avg * v/|v|``, as ``norm_units=residual_norms(...)``).

Example::

    axislens steer --model smollm2-135m-instruct --axis axis.safetensors --layers 12:16 \
        --coeff -4 "Who are you?"
    axislens steer --axis axis.safetensors --layers 12:16 --coeff -0.5 --norm-units "Who are you?"
    axislens cap --model Qwen/Qwen3-32B --cap capping_config.pt --experiment layers_46:54-p0.25 "..."
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from typing import TYPE_CHECKING, Any

from axislens.cli.app import (
    add_model_args,
    add_sampling_args,
    check_cap_file,
    command,
    layers,
    load_cap,
    load_direction,
    load_from_args,
    non_negative_int,
    number,
    sampling_from_args,
)

if TYPE_CHECKING:
    from axislens.model.protocol import Model

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


def _positions(text: str) -> Any:
    from axislens.interventions.operations import parse_positions

    try:
        return parse_positions(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("prompt", help="the user message")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument(
        "--positions",
        type=_positions,
        default="all",
        help="all, prompt, response, last or 3:7,9:12",
    )
    add_sampling_args(p, max_new_tokens=64)
    p.add_argument(
        "--width", type=non_negative_int, default=0, help="output width (0: the terminal's)"
    )


def _add_steer_args(p: argparse.ArgumentParser) -> None:
    _add_generation_args(p)
    p.add_argument("--axis", required=True, help="Direction file (.safetensors) or torch .pt")
    p.add_argument(
        "--layers", type=layers("--layers"), required=True, help="e.g. 12:16, -4:, 7 or 3,5,9"
    )
    p.add_argument(
        "--coeff",
        type=number,
        required=True,
        help="steering coefficient c, in raw units of the direction vector (adds c * v), as in "
        "the Python API; with --norm-units, in average residual norms",
    )
    p.add_argument(
        "--norm-units",
        action="store_true",
        help="count --coeff in average residual norms per layer, measured on the prompt "
        "(residual_norms), along the unit direction",
    )
    p.add_argument(
        "--op", default="add", choices=["add", "ablate"], help="add c*v, or project out + c*v"
    )
    p.add_argument(
        "--hook",
        default=None,
        choices=["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"],
        help="hook point (default: the axis's hook)",
    )


def _add_cap_args(p: argparse.ArgumentParser) -> None:
    _add_generation_args(p)
    p.add_argument("--cap", required=True, help="CapConfig .json, or a public capping_config.pt")
    p.add_argument("--experiment", default=None, help="experiment id or index inside a .pt config")


def _conversation(args: argparse.Namespace, model: Model) -> Any:
    from axislens.model.chat import format_conversation

    messages = [{"role": "system", "content": args.system}] if args.system is not None else []
    messages.append({"role": "user", "content": args.prompt})
    return format_conversation(model, messages, add_generation_prompt=True)


def _compare(args: argparse.Namespace, model: Model, intervention: Any, title: str) -> int:
    from axislens.interventions.attach import intervene
    from axislens.model.decoding import generate_text

    conv = _conversation(args, model)
    sampling = sampling_from_args(args)
    with intervene(model, intervention):  # validates before the unsteered run costs anything
        pass
    plain = generate_text(model, [conv], sampling)[0]
    with intervene(model, intervention):
        changed = generate_text(model, [conv], sampling)[0]
    print(side_by_side("unsteered", plain, title, changed, args.width))
    return 0


@command(
    "steer",
    _add_steer_args,
    summary="answer one prompt with and without steering along a direction, side by side",
    example="axislens steer --model smollm2-135m-instruct --axis runs/smol/axis/axis.safetensors \\\n"
    '    --layers 12:16 --coeff -4 "Who are you?"',
)
def _cmd_steer(args: argparse.Namespace) -> int:
    from axislens.interventions.attach import Intervention, residual_norms
    from axislens.interventions.operations import Ablate, Add

    direction = load_direction(args.axis)
    op = Add(args.coeff) if args.op == "add" else Ablate(args.coeff)
    iv = Intervention(op, direction, args.layers, hook=args.hook, positions=args.positions)
    sampling_from_args(args)  # checks the sampling flags before the model loads
    model = load_from_args(args)
    units = "x axis"
    assert iv.hook is not None  # set from the axis when --hook is not given
    norms = residual_norms(model, [_conversation(args, model)], args.layers, hook=iv.hook)
    if args.norm_units:
        iv = Intervention(
            op, direction, args.layers, hook=args.hook, positions=args.positions, norm_units=norms
        )
        units = "x residual norm along the axis"
    _report_strength(args, direction, norms)
    where = _layers_text(args.layers)
    title = f"{args.op} {args.coeff:g} {units} at layers {where} ({iv.hook})"
    return _compare(args, model, iv, title)


STRONG_SHARE = 0.5
"""A step of more than half the residual norm at a layer usually wrecks the text (measured on
SmolLM2: ``--coeff -4`` at layers 12:16 is 0.75-0.8 of the norm and writes ``memory, memory``)."""


def _report_strength(args: argparse.Namespace, direction: Any, norms: Any) -> None:
    """Print |c v| as a share of the prompt's mean residual norm at each steered layer, and warn
    above :data:`STRONG_SHARE`."""
    import math

    shares = {}
    for layer, norm in enumerate(norms.tolist()):
        if math.isnan(norm) or norm <= 0:
            continue
        step = abs(args.coeff) * (
            norm if args.norm_units else float(direction.vectors[layer].norm())
        )
        shares[layer] = step / norm
    if not shares:
        return
    text = ", ".join(f"L{la} {s:.2f}" for la, s in shares.items())
    print(f"step |c*v| / residual norm: {text}")
    worst = max(shares, key=shares.__getitem__)
    if shares[worst] > STRONG_SHARE:
        print(
            f"warning: the step is {shares[worst]:.2f} of the residual norm at layer {worst} "
            f"(above {STRONG_SHARE}): expect degenerate text; try --norm-units --coeff "
            f"{math.copysign(0.25, args.coeff):g}"
        )


def _layers_text(spec: Any) -> str:
    if isinstance(spec, slice):
        start = "" if spec.start is None else spec.start
        stop = "" if spec.stop is None else spec.stop
        return f"{start}:{stop}"
    return ",".join(str(x) for x in spec)


@command(
    "cap",
    _add_cap_args,
    summary="answer one prompt with and without activation capping, side by side",
    example='axislens cap --model smollm2-135m-instruct --cap runs/smol/axis/cap.json "Who are you?"\n'
    'axislens cap --model Qwen/Qwen3-32B --cap capping_config.pt --experiment layers_46:54-p0.25 "..."',
)
def _cmd_cap(args: argparse.Namespace) -> int:
    from axislens.interventions.attach import cap_intervention

    sampling_from_args(args)
    check_cap_file(args.cap, args.experiment)  # before the model loads
    model = load_from_args(args)
    cap_config = load_cap(args.cap, args.experiment, int(model.cfg.n_layers))
    iv = cap_intervention(cap_config, positions=args.positions)
    layers = cap_config.layers
    title = f"capped at layers {layers[0]}..{layers[-1]} ({len(layers)} layers)"
    return _compare(args, model, iv, title)
