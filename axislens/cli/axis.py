"""``axislens axis``: the Assistant Axis, persona space and cap thresholds of a store, as files.

Writes into ``--out``:

- ``axis.safetensors``: the axis (:meth:`Direction.save`), one row per model layer;
- ``cap.json`` (+ ``cap.safetensors``, its direction): floor-convention cap thresholds at the
  cap layers (:func:`~axislens.analysis.vectors.calibrate_cap`);
- ``summary.json``: the numbers behind every figure (PC1 variance, dims for 70/80/90/95%,
  cos(axis, PC1) and axis norm per layer, role projections, thresholds, roles used/excluded);
- ``report.html``: one self-contained page (plotly.js embedded once, works offline).

Example (shell)::

    axislens axis --store runs/smol --min-score 3 --min-count 50 --out runs/smol/axis

Example (Python):
    >>> summary = run_axis("runs/smol", "runs/smol/axis", min_score=None)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import warnings

from axislens.cli.app import command, one_layer, open_fraction, out_dir, positive_int

__all__: list[str] = []


def _min_score(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0-3 or 'none', got {text!r}") from None
    if not 0 <= value <= 3:
        raise argparse.ArgumentTypeError(f"expected 0-3 or 'none', got {text!r}")
    return value


def _add_axis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="activation store folder")
    p.add_argument("--out", type=out_dir, required=True, help="output folder")
    p.add_argument(
        "--layer", type=one_layer("--layer"), default=None, help="layer for PCA (default: middle)"
    )
    p.add_argument(
        "--min-score",
        type=_min_score,
        default=3,
        help="judge score a role response needs (0-3), or 'none' for all responses",
    )
    p.add_argument("--min-count", type=positive_int, default=50, help="responses a role needs")
    p.add_argument(
        "--percentile", type=open_fraction, default=0.25, help="cap quantile, a fraction"
    )
    p.add_argument(
        "--cap-layers",
        default=None,
        help="layers to cap: 21:26 (stop-exclusive), -6:, 21,23 or all stored layers "
        "(default: 70-85%% depth)",
    )
    p.add_argument(
        "--scale", default="center", choices=["center", "center_l2"], help="PCA preprocessing"
    )
    p.add_argument("--hook", default="resid_post", help="stored hook to read")
    p.add_argument(
        "--adjust",
        default="auto",
        choices=["auto", "questions", "none"],
        help="question effects: 'questions' removes them (role effects with the default set's "
        "question mix), 'none' uses plain means, 'auto' adjusts when the roles and the default "
        "set weigh the questions differently",
    )


@command(
    "axis",
    _add_axis_args,
    summary="compute the Assistant Axis, persona space and cap thresholds of a store",
    example="axislens axis --store runs/smol --min-score 3 --min-count 50 --out runs/smol/axis",
)
def _cmd_axis(args: argparse.Namespace) -> int:
    from axislens.jobs.axis import run_axis
    from axislens.model.layers import parse_layers
    from axislens.plots.reports import balance_rows, stability_row, weak_axis_warning
    from axislens.store import check_writable

    if args.cap_layers is not None:
        parse_layers(args.cap_layers, "--cap-layers")  # syntax errors before reading the store
    check_writable(args.out)  # an unwritable --out fails now, not after the computation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_axis(
            args.store,
            args.out,
            layer=args.layer,
            min_score=args.min_score,
            min_count=args.min_count,
            percentile=args.percentile,
            cap_layers=args.cap_layers,
            scale=args.scale,
            hook=args.hook,
            adjust=args.adjust,
        )
    for w in caught:
        print(f"note: {w.message}")
    pca = summary["pca"]
    print(
        f"{summary['model']}: {len(summary['roles_used'])} roles used, "
        f"{len(summary['roles_excluded'])} excluded, {summary['n_default']} default responses\n"
        f"layer {pca['layer']}: PC1 explains {100 * pca['pc1_variance']:.1f}% of variance, "
        f"{pca['dims']['70']} dims reach 70%, cos(axis, PC1) = {pca['cos_axis_pc1']:.3f}\n"
        + "".join(f"{k}: {v}\n" for k, v in balance_rows(summary.summary, pca["layer"]))
        + f"{': '.join(stability_row(summary['stability'], pca['layer']))} "
        "(near 1: a stable axis; near 0: noise)\n"
        f"cap: layers {summary['cap']['layers']} at the {100 * args.percentile:g}th percentile "
        f"of the {summary['cap']['pool']['name']} pool\n"
        f"wrote {', '.join(summary['files'])} to {args.out}"
    )
    warning = weak_axis_warning(summary["stability"], pca["layer"])
    if warning is not None:
        print(f"warning: {warning}")
    return 0
