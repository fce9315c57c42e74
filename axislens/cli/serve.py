r"""``axislens serve``: an OpenAI-compatible server for a (capped or steered) model.

Example::

    axislens serve --model smollm2-135m-instruct --cap runs/smol/cap.json --port 8000
    axislens serve --model Qwen/Qwen3-32B --device cuda --dtype bfloat16 \
        --steer runs/qwen/axis.safetensors 4.0 --steer-layers 30:34 --monitor-layers 32,40

``--steer FILE COEFF`` takes the files ``axislens steer --axis`` takes and ``COEFF`` in the same
raw units (adds ``COEFF * v``); ``--cap`` takes the files ``axislens cap --cap`` takes.

Then any OpenAI client works against ``http://127.0.0.1:8000/v1``; every reply carries an extra
``axislens`` field with the per-turn projection on the axis (see :mod:`axislens.serving.engine`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from axislens.cli.app import (
    add_model_args,
    check_cap_file,
    command,
    layers,
    load_cap,
    load_direction,
    load_from_args,
    port,
    positive_int,
)

__all__: list[str] = []


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, legacy_positional=True)
    p.add_argument(
        "--cap",
        metavar="FILE",
        help="CapConfig file (as for `axislens cap`), or a capping_config.pt",
    )
    p.add_argument("--experiment", default=None, help="experiment id or index inside a .pt cap")
    p.add_argument(
        "--steer",
        nargs=2,
        metavar=("FILE", "COEFF"),
        help="a Direction file (as for `axislens steer --axis`) and a coefficient in raw units "
        "of its vector: adds COEFF * v at --steer-layers",
    )
    p.add_argument(
        "--steer-layers",
        type=layers("--steer-layers"),
        default=None,
        help="layers for --steer: 30:34 (stop-exclusive), -4:, 32 or 30,32 (default: middle layer)",
    )
    p.add_argument(
        "--axis",
        metavar="FILE",
        help="Direction to monitor (default: the --cap direction, else the --steer direction)",
    )
    p.add_argument(
        "--monitor-layers",
        type=layers("--monitor-layers"),
        default=None,
        help="layers whose projection each reply reports, e.g. 32,40 (default: the axis's middle "
        "layer)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="model id clients send (default: --model as given; a local folder's name)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("AXISLENS_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $AXISLENS_API_KEY, which keeps the "
        "key out of `ps`; a flag's value shows there); needed to listen beyond loopback",
    )
    p.add_argument(
        "--trusted-host",
        action="append",
        default=None,
        metavar="HOST",
        help="accepted Host header name, repeatable ('*': any; default: loopback names and --host)",
    )
    p.add_argument(
        "--max-tokens", type=positive_int, default=1024, help="upper bound for max_tokens"
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=positive_int,
        default=4096,
        help="longest formatted prompt accepted (longer: HTTP 400); a long prefill holds up "
        "every request batched with it",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


def build_interventions(args: argparse.Namespace, n_layers: int) -> tuple[list[Any], Any]:
    """``(interventions, monitor axis)`` from ``--cap``, ``--steer`` and ``--axis``."""
    from axislens.interventions.attach import Intervention, cap_intervention
    from axislens.interventions.operations import Add

    interventions: list[Any] = []
    axis = load_direction(args.axis) if args.axis else None
    if args.cap:
        cap = load_cap(args.cap, args.experiment, n_layers)
        interventions.append(cap_intervention(cap, n_layers=n_layers))
        axis = axis or cap.direction
    if args.steer:
        path = args.steer[0]
        direction = load_direction(path)
        at = args.steer_layers if args.steer_layers is not None else (n_layers // 2,)
        interventions.append(Intervention(Add(_coeff(args.steer[1])), direction, at))
        axis = axis or direction
    return interventions, axis


def _coeff(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--steer: COEFF must be a number, got {text!r}") from None
    if value != value or abs(value) == float("inf"):
        raise ValueError(f"--steer: COEFF must be finite, got {text!r}")
    return value


@command(
    "serve",
    _add_serve_args,
    summary="serve a (capped or steered) model over an OpenAI-compatible HTTP API",
    example="axislens serve --model smollm2-135m-instruct --cap runs/smol/axis/cap.json "
    "--port 8000",
)
def _cmd_serve(args: argparse.Namespace) -> int:
    from axislens.model.layers import resolve_layers
    from axislens.serving.engine import ServeLimits, is_loopback, serve

    if args.steer_layers is not None and not args.steer:
        raise ValueError("--steer-layers needs --steer FILE COEFF")
    if args.steer:
        _coeff(args.steer[1])
    if args.monitor_layers is not None and not (args.axis or args.cap or args.steer):
        raise ValueError("--monitor-layers needs an axis: give --axis, --cap or --steer")
    if args.cap:
        check_cap_file(args.cap, args.experiment)
    if not args.api_key and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} listens beyond loopback: it needs --api-key")
    model = load_from_args(args)
    n_layers = int(model.cfg.n_layers)
    interventions, axis = build_interventions(args, n_layers)
    monitor_layers = (
        list(resolve_layers(args.monitor_layers, n_layers, "--monitor-layers"))
        if args.monitor_layers is not None
        else None
    )
    limits = ServeLimits(
        max_tokens=args.max_tokens,
        default_max_tokens=min(256, args.max_tokens),
        max_prompt_tokens=args.max_prompt_tokens,
    )
    serve(
        model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        interventions=interventions,
        axis=axis,
        monitor_layers=monitor_layers,
        name=args.name or _served_name(args.model),
        limits=limits,
        api_key=args.api_key,
        allowed_hosts=args.trusted_host,
    )
    return 0


def _served_name(model: str) -> str:
    """The id clients send by default: the model as named on the command line (a local
    folder's name, never its path)."""
    return Path(model).resolve().name if Path(model).is_dir() else model
