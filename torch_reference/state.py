"""State dicts as numpy arrays, for any ``torch.nn.Module``: how the architectures (:mod:`.models`), checkpoints and
parity's engine (which knows no architecture) exchange weights. Keys are the module's own (torch) names."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping

import numpy as np

from ._torch import torch


def numpy_state(module: torch.nn.Module, copy: bool = True) -> "OrderedDict[str, np.ndarray]":
    """The module's state dict as numpy copies (on the CPU); ``copy=False``: views of the module's own tensors where
    they are on the CPU (copies otherwise), for callers that only read them while the module is left alone."""
    arrays = OrderedDict((k, v.detach().cpu().numpy()) for k, v in module.state_dict().items())
    return OrderedDict((k, v.copy()) for k, v in arrays.items()) if copy else arrays


def load_numpy_state(module: torch.nn.Module, state: Mapping[str, np.ndarray], strict: bool = True,
                     share: bool = False) -> None:
    """Load a numpy state dict, casting to each tensor's dtype. ``share=True``: each tensor whose array already has
    its dtype and shape (C-contiguous, writable) then uses the array's memory instead of a copy of it, so the module
    and the arrays are one set of weights: for callers that change neither."""
    # views of the arrays, not casts: load_state_dict copies each into its tensor with ``copy_``, which casts as it
    # copies (a float32 state into a float64 model had been cast whole first: VGG11's 1.0 GiB beside the model)
    tensors: Dict[str, torch.Tensor] = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    module.load_state_dict(tensors, strict=strict)
    if share:
        with torch.no_grad():
            for k, t in module.state_dict(keep_vars=True).items():
                a = state.get(k)
                if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable:
                    view = torch.from_numpy(a)   # no copy
                    if view.dtype == t.dtype and view.shape == t.shape:
                        t.data = view
