"""The command line: argument parsing only. Each subcommand checks its arguments, then calls a
job in :mod:`axislens.jobs` or a library function; no computation lives here.
"""

from __future__ import annotations

from axislens.cli.app import main

__all__ = ["main"]
