"""numpy arrays into MindSpore parameters: the one copy that the run checkpoints (``checkpoint.load_state_into``) and
the parity engine's port (``parity.engine.mindspore_side.load_weights``) both make. No architecture module is
imported here (the parity engine may not load one)."""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, dtype_to_nptype

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)


def copy_into(param: Parameter, value: np.ndarray) -> None:
    """Copy ``value`` into ``param``'s own memory, cast to its dtype (the caller's array is not aliased). The source
    tensor shares the array's memory (``Tensor.from_numpy``): a tensor copy made first stayed until a loop over a
    network's parameters ended (VGG11-BN, two loads: 0.40 GiB above the weights and 0.8 s; none and 0.1 s this way)."""
    param.copy_(Tensor.from_numpy(np.ascontiguousarray(value, dtype=dtype_to_nptype(param.dtype))))
