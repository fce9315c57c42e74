"""``axislens export``: write a cap or a steering intervention as a file for the axislens vLLM
plugin (``integrations/vllm``), without loading the model.

Example::

    axislens export --vllm cap.safetensors --cap runs/smol/axis/cap.json
    axislens export --vllm steer.safetensors --axis axis.safetensors --layers 12:16 --coeff -4
"""

from __future__ import annotations

import argparse

from axislens.cli.app import (
    command,
    layers,
    load_cap,
    load_direction,
    number,
    out_file,
    positive_int,
)


def _positions(text: str) -> object:
    from axislens.interventions.operations import parse_positions

    if text not in ("all", "prompt", "response"):
        raise argparse.ArgumentTypeError(
            f"vLLM runs all, prompt or response positions, not {text!r}"
        )
    return parse_positions(text)


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vllm", required=True, type=out_file, help="the file to write (.safetensors)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--cap", help="CapConfig .json, or a public capping_config.pt")
    what.add_argument("--axis", help="Direction file (.safetensors) or torch .pt, to steer along")
    p.add_argument("--experiment", default=None, help="experiment id or index inside a .pt config")
    p.add_argument(
        "--n-layers", type=positive_int, default=None, help="the model's layer count (a .pt config)"
    )
    p.add_argument(
        "--layers", type=layers("--layers"), default=None, help="with --axis: e.g. 12:16"
    )
    p.add_argument(
        "--coeff", type=number, default=None, help="with --axis: c in raw units of the direction"
    )
    p.add_argument(
        "--op",
        default="add",
        choices=["add", "ablate"],
        help="with --axis: add c*v, or project out + c*v",
    )
    p.add_argument("--positions", type=_positions, default="all", help="all, prompt or response")


@command(
    "export",
    _add_export_args,
    summary="write a cap or a steering intervention for the axislens vLLM plugin",
    example="axislens export --vllm cap.safetensors --cap runs/smol/axis/cap.json\n"
    "axislens export --vllm steer.safetensors --axis axis.safetensors --layers 12:16 --coeff -4",
)
def _cmd_export(args: argparse.Namespace) -> int:
    from axislens.interventions.attach import Intervention, cap_intervention
    from axislens.interventions.operations import Ablate, Add
    from axislens.interventions.vllm_files import to_vllm

    if args.cap is not None:
        for flag in ("layers", "coeff"):
            if getattr(args, flag) is not None:
                raise ValueError(
                    f"--{flag} goes with --axis; a cap carries its own layers and thresholds"
                )
        if args.cap.endswith(".pt") and args.n_layers is None:
            raise ValueError(
                f"{args.cap}: a capping_config.pt needs --n-layers (the model's layer count)"
            )
        cap = load_cap(args.cap, args.experiment, args.n_layers or 0)
        iv = cap_intervention(cap, positions=args.positions)
        what = f"cap at layers {', '.join(map(str, cap.layers))}"
    else:
        if args.layers is None or args.coeff is None:
            raise ValueError("--axis needs --layers and --coeff")
        op = Add(args.coeff) if args.op == "add" else Ablate(args.coeff)
        iv = Intervention(op, load_direction(args.axis), args.layers, positions=args.positions)
        what = f"{args.op} {args.coeff:g} along {args.axis}"
    path = to_vllm(args.vllm, iv)
    print(f"wrote {path}: {what}, positions {type(iv.positions).__name__.lower()}")
    print(f"serve it: AXISLENS_VLLM_INTERVENTIONS=name={path.resolve()} vllm serve MODEL ...")
    return 0
