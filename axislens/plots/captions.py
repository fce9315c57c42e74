"""One-line captions that say what to look for in a figure, and figures as captioned HTML.

A plot function attaches its caption with :func:`with_caption` (kept in the figure's
``layout.meta``, so it travels with the figure); a report renders the figure with
:func:`figure_html`, which puts the caption under it in a ``<figcaption>`` (and, when given, a
one-line ``note`` above it: the numbers a report adds, e.g. the axis's split-half cosine).

Example:
    >>> import plotly.graph_objects as go
    >>> caption(with_caption(go.Figure(), "higher is more Assistant-like"))
    'higher is more Assistant-like'
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["caption", "figure_html", "with_caption"]


def with_caption(fig: Any, text: str) -> Any:
    """Attach ``text`` (one line) as ``fig``'s caption; returns ``fig``."""
    if not text or "\n" in text:
        raise ValueError(f"a caption is one non-empty line, got {text!r}")
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    fig.update_layout(meta={**meta, "caption": text})
    return fig


def caption(fig: Any) -> str | None:
    """The caption attached with :func:`with_caption`, or None."""
    meta = fig.layout.meta
    return meta.get("caption") if isinstance(meta, dict) else None


def figure_html(
    fig: Any, *, include_plotlyjs: bool | str = False, note: str | None = None, **kwargs: Any
) -> str:
    """``fig`` as an HTML ``<figure>`` with its caption; raises if it has none.

    ``note`` (one line) is shown right above the plot as ``<p class="figure-note">``."""
    text = caption(fig)
    if text is None:
        title = fig.layout.title.text if fig.layout.title else None
        raise ValueError(f"figure {title!r} has no caption (attach one with with_caption)")
    if note is not None and (not note or "\n" in note):
        raise ValueError(f"a figure note is one non-empty line, got {note!r}")
    head = f'<p class="figure-note">{html.escape(note)}</p>' if note is not None else ""
    div = fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, **kwargs)
    return f"<figure>{head}{div}<figcaption>{html.escape(text)}</figcaption></figure>"
