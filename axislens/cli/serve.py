"""``axislens serve``: an OpenAI-compatible server for a (capped or steered) model.

Example::

    axislens serve smollm2-135m-instruct --cap runs/smol/cap.json --port 8000
    axislens serve Qwen/Qwen3-32B --device cuda --dtype bfloat16 \\
        --steer runs/qwen/axis.safetensors 4.0 --steer-layers 30:34 --monitor-layers 32 40

Then any OpenAI client works against ``http://127.0.0.1:8000/v1``; every reply carries an extra
``axislens`` field with the per-turn projection on the axis (see :mod:`axislens.serving.engine`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from axislens.cli.app import command, load_from_args

__all__: list[str] = []


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    from axislens.model.loading import DEFAULT_MODEL

    p.set_defaults(help_text="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help="embedded name, folder or hub id"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--cap", metavar="FILE", help="a CapConfig JSON file (axislens floor convention)"
    )
    p.add_argument(
        "--steer",
        nargs=2,
        metavar=("FILE", "COEFF"),
        help="a Direction file and a coefficient: adds COEFF * v at --steer-layers",
    )
    p.add_argument(
        "--steer-layers",
        default=None,
        help="layers for --steer: start:stop, one layer or a comma list (default: middle layer)",
    )
    p.add_argument(
        "--axis",
        metavar="FILE",
        help="Direction to monitor (default: the --cap direction, else the --steer direction)",
    )
    p.add_argument(
        "--monitor-layers",
        nargs="+",
        type=int,
        default=None,
        help="layers whose projection each reply reports (default: the axis's middle layer)",
    )
    p.add_argument("--name", default=None, help="model id clients send (default: the model's id)")
    p.add_argument("--max-tokens", type=int, default=1024, help="upper bound for max_tokens")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


def build_interventions(args: argparse.Namespace, n_layers: int) -> tuple[list[Any], Any]:
    """``(interventions, monitor axis)`` from ``--cap``, ``--steer`` and ``--axis``."""
    from axislens.directions import CapConfig, Direction
    from axislens.interventions.attach import Intervention, cap_intervention
    from axislens.interventions.operations import Add
    from axislens.model.hooks import parse_layers

    interventions: list[Any] = []
    axis = Direction.load(args.axis) if args.axis else None
    if args.cap:
        cap = CapConfig.load(args.cap)
        interventions.append(cap_intervention(cap, n_layers=n_layers))
        axis = axis or cap.direction
    if args.steer:
        path, coeff_text = args.steer
        try:
            coeff = float(coeff_text)
        except ValueError:
            raise ValueError(f"--steer: COEFF must be a number, got {coeff_text!r}") from None
        direction = Direction.load(path)
        layers = (
            parse_layers(args.steer_layers) if args.steer_layers is not None else (n_layers // 2,)
        )
        interventions.append(Intervention(Add(coeff), direction, layers))
        axis = axis or direction
    return interventions, axis


@command("serve", _add_serve_args)
def _cmd_serve(args: argparse.Namespace) -> int:
    from axislens.serving.engine import ServeLimits, serve

    if args.steer_layers is not None and not args.steer:
        raise ValueError("--steer-layers needs --steer FILE COEFF")
    model = load_from_args(args)
    interventions, axis = build_interventions(args, int(model.cfg.n_layers))
    if args.monitor_layers is not None and axis is None:
        raise ValueError("--monitor-layers needs an axis: give --axis, --cap or --steer")
    limits = ServeLimits(max_tokens=args.max_tokens, default_max_tokens=min(256, args.max_tokens))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"axislens serve: listening on {args.host}: the API has no authentication",
            file=sys.stderr,
        )
    serve(
        model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        interventions=interventions,
        axis=axis,
        monitor_layers=args.monitor_layers,
        name=args.name,
        limits=limits,
    )
    return 0
