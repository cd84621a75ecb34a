"""Data parallelism, framework-neutral: which rank this process is, which samples it trains on, how many threads.

The launchers are the frameworks' own: MindSpore's ``msrun`` (collectives over ``mccl`` on CPU, NCCL/HCCL on
GPU/Ascend) and PyTorch's ``torchrun`` (DDP over ``gloo`` on CPU, ``nccl`` on GPU). :func:`detect` reads what they
export; each backend initialises its communication from it (``ms_transfer.mindspore_backend.backend`` /
``torch_reference.backend``), and the one loop (:mod:`.loop`) shards with :func:`shard_epoch`.

Sharding. ``batch_size`` is per rank: the global batch is ``world_size * batch_size``. An epoch's order is the
single-process order (``shuffle_order(N, seed + epoch)``), cut into global batches; rank ``r`` takes the ``r``-th
contiguous slice of every global batch. So step ``i`` of a 2-rank run with per-rank batch ``B`` sees exactly the
samples of step ``i`` of a 1-process run with batch ``2B``, every sample once per epoch on exactly one rank. The
last global batch, when it does not divide by the world size, is cut to the largest multiple of it: the
``N mod world_size`` samples left (fewer than the ranks; a different few each epoch, the order being reshuffled)
are left out of that epoch, and the loop says so. Equal slices keep each step exactly a 1-process step: both
frameworks average the ranks' gradients with equal weights (``gradients_mean=True`` / DDP), which is the mean over
the global batch only when every rank holds as many samples.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Dist", "detect", "shard_epoch", "threads_per_rank", "launch_command", "launcher_env", "SINGLE"]


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    #: ranks on this machine (threads are divided among them)
    local_world_size: int = 1
    #: ``msrun`` / ``torchrun`` / ``""``
    launcher: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes checkpoints, metrics, plots and progress bars."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.launcher})" if self.enabled else "single process"


SINGLE = Dist()


def _int(environ: Mapping[str, str], key: str, launcher: str) -> int:
    try:
        return int(environ[key])
    except (KeyError, ValueError):
        raise RuntimeError(f"{launcher} environment incomplete: {key}={environ.get(key)!r}; start the run with "
                           f"{launcher} (see docs/distributed.md, 'More than one process')") from None


def detect(environ: Optional[Mapping[str, str]] = None) -> Dist:
    """The data-parallel environment set by the launcher, if any.

    ``msrun`` exports ``MS_ROLE`` (``MS_WORKER`` for ranks, ``MS_SCHED`` for its scheduler process, which runs the
    same script and serves from ``init()``), ``RANK_ID``, ``RANK_SIZE``, ``MS_WORKER_NUM`` (measured, 2.10);
    ``torchrun`` exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``. A scheduler process is reported as rank 0
    of ``world_size`` with launcher ``msrun-scheduler``: its backend's ``init()`` never returns.
    """
    env = os.environ if environ is None else environ
    role = env.get("MS_ROLE")
    if role in ("MS_WORKER", "MS_SCHED"):
        world = _int(env, "MS_WORKER_NUM" if "RANK_SIZE" not in env else "RANK_SIZE", "msrun")
        # msrun does not export the ranks per machine: all of them until the backend asks the cluster after init
        if role == "MS_SCHED":
            return Dist(0, world, world, "msrun-scheduler")
        return Dist(_int(env, "RANK_ID", "msrun"), world, world, "msrun")
    if "WORLD_SIZE" in env and "RANK" in env:
        world = _int(env, "WORLD_SIZE", "torchrun")
        return Dist(_int(env, "RANK", "torchrun"), world, int(env.get("LOCAL_WORLD_SIZE", world)), "torchrun")
    return SINGLE


def threads_per_rank(dist: Dist, cores: Optional[int] = None) -> int:
    """Op threads per rank so that the ranks on one machine do not oversubscribe it: its cores (the ones this
    process may run on) divided by the local ranks, at least 1."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, dist.local_world_size))


def shard_epoch(order: Sequence[int], batch_size: int, rank: int, world_size: int
                ) -> Tuple[List[int], int, int]:
    """Rank ``rank``'s samples of one epoch, in the order its loader must yield them (not shuffled again).

    ``order``: the epoch's single-process sample order; ``batch_size``: per rank. Returns ``(indices, steps,
    left_out)``: this rank's sample indices (``batch_size`` per step, the last step's slice smaller), the number of
    steps (the same on every rank) and how many samples no rank sees this epoch (``len(order) % world_size``
    when the last global batch does not divide; see the module docstring).
    """
    order = np.asarray(order)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    used = len(order) - len(order) % world_size
    global_batch = batch_size * world_size
    mine: List[int] = []
    steps = 0
    for start in range(0, used, global_batch):
        block = order[start:min(start + global_batch, used)]
        per_rank = len(block) // world_size
        mine.extend(int(i) for i in block[rank * per_rank:(rank + 1) * per_rank])
        steps += 1
    return mine, steps, len(order) - used


# --- launching (parity's and the benchmark's multi-rank runs) -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(launcher: str, world: int, module_args: Sequence[str], log_dir: Path) -> List[str]:
    """The launcher's command line running ``python -m <module_args>`` on ``world`` local ranks."""
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                "-m", *module_args]
    msrun = Path(sys.executable).parent / "msrun"
    return [str(msrun if msrun.exists() else shutil.which("msrun") or "msrun"), f"--worker_num={world}",
            f"--local_worker_num={world}", f"--master_port={free_port()}", f"--log_dir={log_dir}", "--join=True",
            "--cluster_time_out=300", "python", "-m", *module_args]


def launcher_env() -> Dict[str, str]:
    """msrun runs the ``python`` on PATH: this interpreter's; the project importable from any directory."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    root = str(Path(__file__).resolve().parents[2])   # the project: ms_transfer, torch_reference, parity
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
