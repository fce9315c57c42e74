"""One axis vocabulary for every tensor shape in axislens.

Every annotated tensor in the package uses these dimension names (checked at run time in tests
through jaxtyping):

- ``batch``: independent sequences in one forward pass;
- ``pos``: token positions within a sequence;
- ``layer``: transformer blocks, 0-based;
- ``d_model``: width of the residual stream;
- ``sample``: stored items (responses, conversations) in an activation store;
- ``role``: persona roles; ``component``: residual-stream contributions (embed, heads, MLPs);
- ``group``: the roles and the default set of a persona run; ``question``: extraction questions;
- ``vocab``: vocabulary entries.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

Resid = Float[Tensor, "batch pos d_model"]
"""Residual-stream activations at one hook point."""
Vec = Float[Tensor, "d_model"]
"""One vector in the residual stream."""
LayerVecs = Float[Tensor, "layer d_model"]
"""One vector per layer, e.g. a direction or a span mean."""
SampleLayerVecs = Float[Tensor, "sample layer d_model"]
"""Per-item span means as stored in an activation store."""
Tokens = Int[Tensor, "batch pos"]
"""Token ids."""
Mask = Bool[Tensor, "batch pos"]
"""Per-token masks (spans, positions)."""

__all__ = [
    "Bool",
    "Float",
    "Int",
    "LayerVecs",
    "Mask",
    "Resid",
    "SampleLayerVecs",
    "Tensor",
    "Tokens",
    "Vec",
]
