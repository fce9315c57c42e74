"""Notebook display of the result objects: a compact ``__repr__`` and an HTML ``_repr_html_``.

Each result class builds a short list of ``(name, value)`` facts (shapes and key numbers, never
raw tensors); :func:`compact_repr` turns them into one line and :func:`html_summary` into an HTML
table, optionally followed by the first rows of the object's ``to_pandas()`` table.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

__all__ = ["as_floats", "compact_repr", "fmt", "html_summary", "shape"]

_MAX_ITEMS = 4


def as_floats(values: Iterable[Any]) -> list[float]:
    """Python floats of a tensor, array or sequence (a JSON-ready list; the one converter that
    summaries and figures share).

    Example:
        >>> as_floats((1, 2.5))
        [1.0, 2.5]
    """
    if hasattr(values, "detach"):  # a tensor, on any device: one transfer, not one per value
        values = values.detach().double().cpu().tolist()
    return [float(v) for v in values]


def fmt(value: Any) -> str:
    """A short text for one fact: floats to 4 significant digits, long sequences elided."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, (list, tuple)):
        items = [fmt(v) for v in value[:_MAX_ITEMS]]
        more = len(value) - _MAX_ITEMS
        if more > 0:
            items.append(f"... +{more}")
        return "[" + ", ".join(items) + "]"
    return str(value)


def shape(t: Any) -> str:
    """``[a, b, c]`` for a tensor or array (its shape only)."""
    return "[" + ", ".join(str(int(n)) for n in t.shape) + "]"


def compact_repr(name: str, facts: Iterable[tuple[str, Any]]) -> str:
    """``Name(key=value, ...)`` from the facts, each value shortened with :func:`fmt`."""
    body = ", ".join(f"{k}={fmt(v)}" for k, v in facts)
    return f"{name}({body})"


def html_summary(
    name: str,
    facts: Iterable[tuple[str, Any]],
    table: Any = None,
    *,
    caption: str | None = None,
    max_rows: int = 12,
) -> str:
    """An HTML block: a title, a two-column table of the facts and, when ``table`` (a pandas
    DataFrame) is given, its first ``max_rows`` rows."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(fmt(v))}</td></tr>"
        for k, v in facts
    )
    out = [f"<div><strong>{html.escape(name)}</strong>", f"<table>{rows}</table>"]
    if table is not None:
        n = len(table)
        note = caption or ""
        if n > max_rows:
            note = f"{note} (first {max_rows} of {n} rows)".strip()
        if note:
            out.append(f"<p>{html.escape(note)}</p>")
        out.append(table.head(max_rows).to_html(float_format=lambda x: f"{x:.4g}"))
    out.append("</div>")
    return "".join(out)
