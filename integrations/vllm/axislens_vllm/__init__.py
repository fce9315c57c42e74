"""axislens-vllm: steering and activation capping inside vLLM.

Installed next to vLLM, the plugin does nothing until ``AXISLENS_VLLM_INTERVENTIONS`` names
intervention files (``name=path,...``, exported by ``axislens export --vllm``). Then it overrides
the Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 decoder models with subclasses that apply
them after the chosen layers' blocks:

- ``AXISLENS_VLLM_DEFAULT=NAME`` applies ``NAME`` to every request that does not choose;
- a request chooses with ``extra_body={"vllm_xargs": {"axislens": NAME}}`` (``"none"`` for no
  intervention); an unknown name is an HTTP 400 listing the loaded names.

Sweeps without a restart: :func:`update_engine` replaces a loaded intervention's values in place
and resets the prefix cache. Debug mode (``AXISLENS_VLLM_DEBUG=1``): :func:`fire_counts` says,
per layer and intervention, how many tokens each cap moved.

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
    "fire_counts",
    "read_spec",
    "register",
    "reset_fire_counts",
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


def fire_counts(llm: Any) -> dict[int, dict[str, int]]:
    """Debug mode (``AXISLENS_VLLM_DEBUG=1`` when the engine starts), in-process ``vllm.LLM``:
    ``{layer: {name: tokens its cap terms moved}}`` since the start or the last reset."""
    from axislens_vllm.model import fire_counts as counts

    return llm.apply_model(counts)[0]  # type: ignore[no-any-return]


def reset_fire_counts(llm: Any) -> None:
    """Zero the debug fire counts of an in-process ``vllm.LLM``."""
    from axislens_vllm.model import reset_fire_counts as reset

    llm.apply_model(reset)


def update_engine(llm: Any, name: str, path: str) -> None:
    """Replace the values of loaded intervention ``name`` from ``path`` in an in-process
    ``vllm.LLM`` and reset its prefix cache.

    Example:
        >>> update_engine(llm, "sweep", "cap_p50.safetensors")  # doctest: +SKIP
    """
    from axislens_vllm.model import update

    llm.apply_model(lambda model: update(model, name, path))
    llm.reset_prefix_cache()
