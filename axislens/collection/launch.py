r"""Where this process sits in a multi-process job started by a standard launcher.

``accelerate launch`` and ``torchrun`` (hence also multi-node jobs and SLURM through them) start N
copies of ``axislens collect`` or of a script calling :func:`axislens.collect`; each copy learns
its rank and the world size from accelerate's ``PartialState``. axislens has no launcher of its
own. A plain run (no ``WORLD_SIZE`` > 1 in the environment) is one process and never touches
``torch.distributed``.

Example (shell)::

    accelerate launch --multi_gpu --num_processes 8 --no_python axislens collect \
        --model Qwen/Qwen3-32B --device cuda --out runs/qwen
    torchrun --nproc-per-node 8 --no-python axislens collect --model Qwen/Qwen3-32B \
        --device cuda --out runs/qwen
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Launch", "current_launch"]


@dataclass(frozen=True, slots=True)
class Launch:
    """This process's place in a job: ``rank`` of ``world`` processes of job ``job``.

    ``local_rank`` is the rank on this node (which GPU to use). ``Launch()`` is a plain,
    one-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    job: str = ""

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"Launch: rank {self.rank} is not in a world of {self.world}")

    @property
    def distributed(self) -> bool:
        """Whether this process is one of several (then it writes as a ``SharedWriter``)."""
        return self.world > 1

    def owns(self, chunk: int) -> bool:
        """Whether chunk number ``chunk`` (of the full, deterministic chunk list) is this rank's:
        chunk k goes to rank ``k % world``, whatever is already stored."""
        return chunk % self.world == self.rank

    def device(self, requested: str) -> str:
        """The device for this rank: ``"cuda"`` becomes ``"cuda:<local_rank>"`` in a job (one GPU
        per process); anything else is kept."""
        return f"cuda:{self.local_rank}" if self.distributed and requested == "cuda" else requested


def _job_id() -> str:
    """A label the ranks of one job share (the launcher's rendezvous)."""
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    addr = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
    return f"{run}@{addr}" if run and run != "none" else addr


def current_launch() -> Launch:
    """This process's :class:`Launch`: from accelerate's ``PartialState`` when started by a
    launcher with more than one process (``WORLD_SIZE`` > 1), else ``Launch()``."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
    if world <= 1:
        return Launch()
    import torch
    from accelerate import PartialState

    # cpu=True where there is no GPU: accelerate otherwise treats a CPU job as one process.
    state = PartialState(cpu=not torch.cuda.is_available())
    if int(state.num_processes) != world:
        raise RuntimeError(
            f"WORLD_SIZE={world} but accelerate's PartialState sees {state.num_processes} "
            f"process(es) ({state.distributed_type}); launch with accelerate launch or torchrun"
        )
    return Launch(
        rank=int(state.process_index),
        world=int(state.num_processes),
        local_rank=int(state.local_process_index),
        job=_job_id(),
    )
