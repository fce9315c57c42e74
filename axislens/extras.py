"""Optional dependencies (pip extras) and the one-line error when one is missing.

``pip install axislens`` installs what finding, steering and capping an axis needs. The rest
comes with an extra: ``axislens[serve]`` (fastapi, uvicorn: ``axislens serve``),
``axislens[judge]`` (openai: LLM judges and OpenAI-compatible generation engines) and
``axislens[embedded]`` (gguf: converting the embedded GGUF models on first use).
``axislens[dev]`` includes all of them.

Example:
    >>> openai = require("openai", "judge", "the OpenAI judge")
    >>> require("gguf", "judge", "the OpenAI judge")
    Traceback (most recent call last):
    ...
    ValueError: extra 'judge' does not provide 'gguf'; extras: ...
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),
    "judge": ("openai",),
    "embedded": ("gguf",),
}
"""The import names each extra provides."""


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed; the message names the pip command.

    Also a ``ValueError``, so the command line reports it as one line like other bad input."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` saying ``what`` needs it and how to
    install the ``extra`` that provides it."""
    if module not in EXTRAS.get(extra, ()):
        raise ValueError(f"extra {extra!r} does not provide {module!r}; extras: {EXTRAS}")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{what} needs the {module!r} package, which is not installed: "
            f"pip install 'axislens[{extra}]'"
        ) from None
