"""Steer, ablate and cap a plain Hugging Face ``transformers`` model, with no TransformerLens:
``axislens.hf.steer / ablate / cap / intervene`` (see :mod:`axislens.interventions.hf`).

Example:
    Needs a real model (not run by the doctest suite).

    >>> from axislens import hf
    >>> with hf.cap(hf_model, CapConfig.load("cap.json")):  # doctest: +SKIP
    ...     out = hf_model.generate(**inputs)
"""

from __future__ import annotations

from axislens.interventions.hf import ablate, cap, decoder_layers, intervene, steer

__all__ = ["ablate", "cap", "decoder_layers", "intervene", "steer"]
