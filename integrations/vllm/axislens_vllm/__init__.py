"""axislens-vllm: steering and activation capping inside vLLM.

Installed next to vLLM, the plugin does nothing until ``AXISLENS_VLLM_INTERVENTIONS`` names
intervention files (``name=path,...``, exported by ``axislens export --vllm``). Then it overrides
the Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 decoder models with subclasses that apply
them after the chosen layers' blocks:

- ``AXISLENS_VLLM_DEFAULT=NAME`` applies ``NAME`` to every request that does not choose;
- a request chooses with ``extra_body={"vllm_xargs": {"axislens": NAME}}`` (``"none"`` for no
  intervention); an unknown name is an HTTP 400 listing the loaded names.

Sweeps without a restart: :func:`update_engine` replaces a loaded intervention's values in place
and resets the prefix cache.

This package never imports axislens (vLLM pins its own transformers).
"""

from __future__ import annotations

from typing import Any

from axislens_vllm.spec import (
    ENV_DEFAULT,
    ENV_INTERVENTIONS,
    FORMAT,
    Spec,
    SpecError,
    configured,
    read_spec,
    write_spec,
)

__all__ = [
    "ENV_DEFAULT",
    "ENV_INTERVENTIONS",
    "FORMAT",
    "Spec",
    "SpecError",
    "read_spec",
    "register",
    "update_engine",
    "write_spec",
]
__version__ = "0.1.0"


def register() -> None:
    """VLLM general-plugin entry point: override the supported architectures when configured."""
    if not configured():  # also checks the variables, in every process, before the model loads
        return
    from vllm import ModelRegistry

    from axislens_vllm.model import ARCHITECTURES

    for arch in ARCHITECTURES:
        ModelRegistry.register_model(arch, f"axislens_vllm.model:{arch}")


def update_engine(llm: Any, name: str, path: str) -> None:
    """Replace the values of loaded intervention ``name`` from ``path`` in an in-process
    ``vllm.LLM`` and reset its prefix cache.

    Example:
        >>> update_engine(llm, "sweep", "cap_p50.safetensors")  # doctest: +SKIP
    """
    from axislens_vllm.model import update

    llm.apply_model(lambda model: update(model, name, path))
    llm.reset_prefix_cache()
