"""``axislens monitor``: chat with a model while watching its projection on the axis.

Interactive (type messages; an empty line, ``/quit`` or end of input stops)::

    axislens monitor smollm2-135m-instruct --axis runs/smollm2/axis.safetensors --layers 15 20

Replay the user turns of a transcript, generating the assistant turns, and write the trajectory
(a JSON file that is also a transcript of the new conversation)::

    axislens monitor --axis axis.safetensors --cap cap.json --threshold 12 \\
        --script transcripts/therapy.json --out drift.json

Importing this module registers the subcommand with :func:`axislens.cli.app.command`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from axislens.cli.app import _add_model_arg, command, load_from_args

__all__: list[str] = []


def _add_monitor_args(p: argparse.ArgumentParser) -> None:
    _add_model_arg(p)
    p.add_argument("--axis", required=True, help="Direction file (.safetensors, or .pt tensor)")
    p.add_argument("--cap", default=None, help="CapConfig JSON (floor cap) to apply")
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="layers to monitor (default: the cap layers, else the middle layer)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="drift threshold: the cap engages once the projection falls below it "
        "(with --cap and no --threshold the cap is always on)",
    )
    p.add_argument("--engage", choices=["token", "turn"], default="token")
    p.add_argument("--script", default=None, help="transcript whose user turns are replayed")
    p.add_argument("--out", default=None, help="write the trajectory JSON here")
    p.add_argument("--system", default=None, help="system prompt (overrides the transcript's)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)


def _load_axis(path: str) -> Any:
    from axislens.directions import Direction

    return Direction.from_torch(path) if Path(path).suffix == ".pt" else Direction.load(path)


@command("monitor", _add_monitor_args)
def _cmd_monitor(args: argparse.Namespace) -> int:
    from axislens.directions import CapConfig
    from axislens.model.decoding import SamplingConfig
    from axislens.monitoring.projection import load_transcript
    from axislens.monitoring.session import chat_session

    axis = _load_axis(args.axis)
    cap = CapConfig.load(args.cap) if args.cap else None
    script = load_transcript(args.script) if args.script else None
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    model = load_from_args(args)
    layers = args.layers or (list(cap.layers) if cap else [int(model.cfg.n_layers) // 2])
    system = args.system if args.system is not None else (script.system if script else None)
    session = chat_session(
        model,
        axis=axis,
        cap=cap,
        monitor_layers=layers,
        drift_threshold=args.threshold,
        system=system,
        sampling=sampling,
        engage=args.engage,
    )
    if script is not None:
        for text in script.user_turns:
            print(f"user> {text}")
            report = session.send(text)
            print(f"assistant> {report.reply}\n  {report}", flush=True)
    else:
        print("Type a message (empty line or /quit to stop).")
        while True:
            try:
                text = input("you> ")
            except EOFError:
                break
            if not text.strip() or text.strip() == "/quit":
                break
            report = session.send(text)
            print(f"assistant> {report.reply}\n  {report}", flush=True)
    if args.out:
        traj = session.trajectory
        if script is not None:
            meta = {
                **traj.metadata,
                "script": str(script.path),
                "script_metadata": dict(script.metadata),
            }
            traj = replace(traj, metadata=MappingProxyType(meta))
        print(f"trajectory written to {traj.save(args.out)}")
    return 0
