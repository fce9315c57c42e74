"""Run plans: what a long command will do, said before it starts, and the ``--yes`` gate.

``collect``, ``demo`` and ``experiments/cap_sweep.py`` build a :class:`RunPlan` (items to
generate, an upper bound on generated tokens, the device) and print :meth:`RunPlan.describe`
before loading anything. On a CPU a plan above :data:`CPU_TOKEN_LIMIT` generated tokens is
refused by :meth:`RunPlan.check` unless the user passed ``--yes``. The estimate before the run
uses :data:`CPU_TOKENS_PER_SECOND`; the measured ETA is the progress bar's, after the first chunk.

The embedded models are CPU models: :func:`cpu_sized` gives the CPU-sized defaults a command
uses for them on a CPU (shorter replies) when the user set none.

Example:
    >>> plan = RunPlan("collect", items=330_000, new_tokens=330_000 * 128, device="cpu")
    >>> plan.too_large
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CPU_DEFAULTS",
    "CPU_TOKENS_PER_SECOND",
    "CPU_TOKEN_LIMIT",
    "PlanTooLarge",
    "RunPlan",
    "collect_plan",
    "cpu_sized",
]

CPU_TOKEN_LIMIT = 200_000
"""Generated tokens above which a run on a CPU needs ``--yes`` (about half an hour for the
embedded 135M model on two cores; the demo generates about 15,000)."""

CPU_TOKENS_PER_SECOND = 100.0
"""Generation rate assumed for the estimate printed before a run on a CPU (the embedded
SmolLM2-135M, batch 8-16, on a few cores); larger models are slower, so it is a lower bound on
the time."""

CPU_DEFAULTS = {"max_new_tokens": 128, "batch_size": 16}
"""Defaults for an embedded model on a CPU where the paper's (512 tokens per reply, batch 8)
would take many hours."""


class PlanTooLarge(ValueError):
    """A run too large for this device was started without ``--yes``."""


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a command will generate: ``items`` sequences, at most ``new_tokens`` tokens.

    ``detail`` names the sizes (e.g. ``"275 roles x 5 prompts x 240 questions"``);
    ``flags`` the options that shrink the run (named in the refusal).
    """

    command: str
    items: int
    new_tokens: int
    device: str = "cpu"
    detail: str = ""
    flags: str = "--roles/--prompts/--questions/--max-new-tokens"

    @property
    def on_cpu(self) -> bool:
        return self.device.split(":")[0] == "cpu"

    @property
    def too_large(self) -> bool:
        """On a CPU and above :data:`CPU_TOKEN_LIMIT` generated tokens."""
        return self.on_cpu and self.new_tokens > CPU_TOKEN_LIMIT

    def eta_seconds(self, tokens_per_second: float = CPU_TOKENS_PER_SECOND) -> float:
        """Estimated generation time at ``tokens_per_second`` (every reply at full length)."""
        return self.new_tokens / tokens_per_second

    def describe(self) -> str:
        """One line: items, tokens and, on a CPU, the estimated time."""
        sizes = f" ({self.detail})" if self.detail else ""
        line = (
            f"{self.command} plan: {self.items:,} items{sizes}, "
            f"up to {self.new_tokens:,} generated tokens on {self.device}"
        )
        if self.on_cpu and self.new_tokens:
            line += (
                f"; ETA about {_duration(self.eta_seconds())} at an assumed "
                f"{CPU_TOKENS_PER_SECOND:.0f} tokens/s (the progress bar measures it after the "
                "first chunk)"
            )
        return line

    def check(self, yes: bool) -> None:
        """Raise :class:`PlanTooLarge` (one line naming ``--yes``) for a too-large plan."""
        if self.too_large and not yes:
            raise PlanTooLarge(
                f"{self.command}: {self.new_tokens:,} generated tokens on a CPU would take about "
                f"{_duration(self.eta_seconds())}; pass --yes to start it anyway, or make it "
                f"smaller with {self.flags}"
            )


def cpu_sized(model: str, device: str) -> bool:
    """Whether the CPU-sized defaults apply: an embedded model on a CPU."""
    from axislens.model.loading import EMBEDDED_MODELS

    return model in EMBEDDED_MODELS and device.split(":")[0] == "cpu"


def collect_plan(
    personas: Any,
    roles: int | Sequence[str] | None,
    *,
    n_prompts: int,
    n_questions: int,
    max_new_tokens: int,
    include_default: bool = True,
    generate: bool = True,
    device: str = "cpu",
    command: str = "collect",
    default_prompts: int | None = None,
    default_questions: int | None = None,
    design: Any = None,
) -> RunPlan:
    """The plan of a :func:`~axislens.jobs.collect.run_collect` run (nothing loaded: the items are
    counted from the catalogue). ``generate=False`` (prefill mode) generates no tokens;
    ``default_prompts`` / ``default_questions`` / ``design`` size the default set and choose
    the question design as in :func:`~axislens.collection.responses.persona_items`."""
    from axislens.collection.responses import persona_items

    if isinstance(roles, int):
        names: list[str] | None = [r.name for r in personas.spread_roles()[:roles]]
    else:
        names = None if roles is None else list(roles)
    with warnings.catch_warnings():  # a nested design's warning is given by the run itself
        warnings.simplefilter("ignore", UserWarning)
        items = persona_items(
            personas,
            roles=names,
            n_prompts=n_prompts,
            n_questions=n_questions,
            include_default=include_default,
            default_prompts=default_prompts,
            default_questions=default_questions,
            design=design,
        )
    n_defaults = sum(1 for i in items if i.kind == "default")
    n_roles = len(names) if names is not None else len(personas.roles)
    return RunPlan(
        command,
        items=len(items),
        new_tokens=len(items) * max_new_tokens if generate else 0,
        device=device,
        detail=f"{n_roles} roles x {n_prompts} prompts x {n_questions} questions"
        + (f" + {n_defaults} default items" if include_default else ""),
    )
