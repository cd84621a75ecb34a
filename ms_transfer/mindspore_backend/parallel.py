"""MindSpore data parallelism under ``msrun``: communication, gradient averaging, threads, small collectives.

``msrun --worker_num=2 --local_worker_num=2 --master_port=P --join=True python -m ms_transfer.train ...`` starts
the ranks (and a scheduler process running the same command, which serves the cluster from ``init()``).
:func:`init_data_parallel` runs in the backend's ``setup``: ``init()`` (``mccl`` on CPU, NCCL/HCCL on GPU/Ascend),
then ``DATA_PARALLEL`` with ``gradients_mean=True``, so ``nn.TrainOneStepCell`` averages the ranks' gradients
(an AllReduce in the compiled step; measured: a 2-rank step equals one process on the whole batch to ~1e-7);
custom steps (the frozen-trunk fast path) add :func:`grad_reducer`. MindSpore has no initial parameter broadcast:
every rank builds the model from the same seed (the loop checks that the ranks agree, bit for bit).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)
from ..core.distributed import Dist, threads_per_rank

__all__ = ["init_data_parallel", "is_data_parallel", "grad_reducer", "barrier", "all_gather"]

_JOINED = False   # init() once per process (parity's worker runs several trainers in one)


def init_data_parallel(dist: Dist) -> Dist:
    """Join the cluster and switch on data parallelism (see the module docstring); returns ``dist`` as the cluster
    sees it. Call after :func:`~ms_transfer.mindspore_backend.context.set_context` and before building any cell."""
    from mindspore.communication import get_group_size, get_rank, init

    global _JOINED
    if not _JOINED:
        init()   # msrun's scheduler process never returns from here: it serves the cluster until the ranks finish
        _JOINED = True
    rank, world = get_rank(), get_group_size()
    if (rank, world) != (dist.rank, dist.world_size):
        raise RuntimeError(f"msrun exported rank {dist.rank} of {dist.world_size}, but the cluster says rank {rank} "
                           f"of {world}")
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    threads = threads_per_rank(dist)
    try:  # MindSpore's CPU kernels default to 25 threads per process: two ranks would fight for the cores
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:   # set once per process (a second fit() in the same process)
        pass
    print(f"Data parallel (msrun, mccl): rank {rank} of {world}, {threads} CPU kernel thread(s) per rank "
          f"(OMP_NUM_THREADS={__import__('os').environ.get('OMP_NUM_THREADS', 'unset')})")
    return dist


def is_data_parallel() -> bool:
    """Whether cells built now average their gradients over the ranks."""
    return ms.get_auto_parallel_context("parallel_mode") == ms.ParallelMode.DATA_PARALLEL


def grad_reducer(parameters) -> nn.Cell:
    """The ranks' gradient mean for a custom train step (what ``nn.TrainOneStepCell`` builds itself);
    ``nn.Identity`` in a single process."""
    if not is_data_parallel():
        return nn.Identity()
    from mindspore.communication import get_group_size
    mean = ms.get_auto_parallel_context("gradients_mean")
    return nn.DistributedGradReducer(parameters, mean=mean, degree=get_group_size())


def barrier() -> None:
    """Wait for every rank: a one-value :func:`all_gather` (MindSpore 2.10 on CPU has no ``Barrier`` kernel:
    "Unsupported op [Barrier] on CPU")."""
    all_gather(np.zeros(1, np.float32))


def all_gather(array: np.ndarray) -> np.ndarray:
    """``(world_size, *array.shape)``: every rank's ``array`` (float32), rank order. Written as an AllReduce-sum of
    zero-padded rows: the primitive ``ops.AllReduce`` runs outside a graph on CPU, while ``comm_func``'s
    ``all_gather_into_tensor`` ("kernel InnerCommAllGather unregistered") and ``barrier`` do not (2.10)."""
    from mindspore import ops
    from mindspore.communication import get_group_size, get_rank
    a = np.ascontiguousarray(array, np.float32)
    rows = np.zeros((get_group_size(), a.size), np.float32)
    rows[get_rank()] = a.reshape(-1)
    return ops.AllReduce()(ms.Tensor(rows)).asnumpy().reshape((get_group_size(),) + a.shape)
