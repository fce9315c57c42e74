r"""``axislens monitor``: chat with a model while watching its projection on the axis.

Interactive (type messages; an empty line, ``/quit`` or end of input stops)::

    axislens monitor --model smollm2-135m-instruct --axis runs/smol/axis/axis.safetensors \
        --monitor-layers 15,20

Replay the user turns of a script (a transcript file, or a shipped conversation such as
``philosophy_drift``), generating the assistant turns, and write the trajectory (a JSON file that
is also a transcript of the new conversation, rewritten atomically after every turn)::

    axislens monitor --axis axis.safetensors --cap cap.json --threshold 12 \
        --script philosophy_drift --out drift.json

Importing this module registers the subcommand with :func:`axislens.cli.app.command`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from axislens.cli.app import (
    add_model_args,
    add_sampling_args,
    command,
    layers,
    load_cap,
    load_direction,
    load_from_args,
    number,
    one_layer,
    out_file,
    sampling_from_args,
)

__all__: list[str] = []


def _add_monitor_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, legacy_positional=True)
    p.add_argument("--axis", required=True, help="Direction file (.safetensors, or .pt tensor)")
    p.add_argument(
        "--cap", default=None, help="CapConfig file (floor cap) to apply, or a capping_config.pt"
    )
    p.add_argument("--experiment", default=None, help="experiment id or index inside a .pt cap")
    p.add_argument(
        "--monitor-layers",
        type=layers("--monitor-layers"),
        default=None,
        help="layers to monitor, e.g. 15,20 or 12:16 (default: the cap layers, else the middle "
        "layer)",
    )
    p.add_argument(
        "--trigger-layer",
        type=one_layer("--trigger-layer"),
        default=None,
        help="monitored layer whose projection engages the cap (default: the first monitored)",
    )
    p.add_argument(
        "--threshold",
        type=number,
        default=None,
        help="drift threshold: the cap engages once the projection falls below it "
        "(with --cap and no --threshold the cap is always on)",
    )
    p.add_argument(
        "--engage", choices=["token", "turn"], default="token", help="when the threshold is read"
    )
    p.add_argument(
        "--script",
        default=None,
        help="replay these user turns: a transcript file, or a shipped conversation "
        "(philosophy_drift, therapy_drift, coding_control, writing_control)",
    )
    p.add_argument(
        "--out",
        type=out_file,
        default=None,
        help="write the trajectory JSON here (rewritten after every turn)",
    )
    p.add_argument("--system", default=None, help="system prompt (overrides the script's)")
    add_sampling_args(p, max_new_tokens=128)


@command(
    "monitor",
    _add_monitor_args,
    summary="chat (or replay a script) while watching the projection on the axis, optionally "
    "capped",
    example="axislens monitor --model smollm2-135m-instruct --axis runs/smol/axis/axis.safetensors "
    "\\\n    --cap runs/smol/axis/cap.json --threshold 12 --script philosophy_drift --out drift.json",
)
def _cmd_monitor(args: argparse.Namespace) -> int:
    from axislens.model.layers import resolve_layers
    from axislens.monitoring.scripts import load_script
    from axislens.monitoring.session import chat_session

    if args.trigger_layer is not None and args.threshold is None:
        raise ValueError("--trigger-layer needs --threshold")
    axis = load_direction(args.axis)
    script = load_script(args.script) if args.script else None
    sampling = sampling_from_args(args)
    if args.cap is not None and args.cap.endswith(".pt") and args.experiment is None:
        raise ValueError(f"{args.cap}: a capping_config.pt needs --experiment (an id or an index)")
    model = load_from_args(args)
    n_layers = int(model.cfg.n_layers)
    cap = load_cap(args.cap, args.experiment, n_layers) if args.cap else None
    if args.monitor_layers is not None:
        monitored = list(resolve_layers(args.monitor_layers, n_layers, "--monitor-layers"))
    else:
        monitored = list(cap.layers) if cap else [n_layers // 2]
    trigger = None
    if args.trigger_layer is not None:
        trigger = resolve_layers(args.trigger_layer, n_layers, "--trigger-layer")[0]
        if trigger not in monitored:
            raise ValueError(f"--trigger-layer {trigger} is not a monitored layer {monitored}")
    system = args.system if args.system is not None else (script[1] if script else None)
    session = chat_session(
        model,
        axis=axis,
        cap=cap,
        monitor_layers=monitored,
        drift_threshold=args.threshold,
        system=system,
        sampling=sampling,
        engage=args.engage,
        trigger_layer=trigger,
    )

    def after_turn(text: str) -> None:
        report = session.send(text)
        print(f"assistant> {report.reply}\n  {report}", flush=True)
        if args.out:
            _save(session, script, args.out)

    if script is not None:
        for text in script[0]:
            print(f"user> {text}")
            after_turn(text)
    else:
        print("Type a message (empty line or /quit to stop).")
        while True:
            try:
                text = input("you> ")
            except EOFError:
                break
            if not text.strip() or text.strip() == "/quit":
                break
            after_turn(text)
    if args.out and session.trajectory.turns:
        print(f"trajectory written to {args.out}")
    return 0


def _save(session: Any, script: Any, out: str) -> None:
    """Write the trajectory so far (atomically: a reader never sees half a file)."""
    traj = session.trajectory
    if script is not None:
        meta = {**traj.metadata, "script": script[3], "script_metadata": dict(script[2])}
        traj = replace(traj, metadata=MappingProxyType(meta))
    traj.save(out)
