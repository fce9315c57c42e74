"""The axislens version, in one leaf module that imports nothing from the package.

Every module that records the version (store manifests, saved directions, eval provenance, the
CLI's ``--version``) reads it from here, so the version has one home and importing it pulls in
no stage.

Example:
    >>> from axislens.version import __version__
    >>> __version__.count(".") >= 2
    True
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.2.0"
