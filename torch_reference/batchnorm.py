"""torch's side of PreciseBN (:mod:`ms_transfer.core.callbacks.precise_bn`): which BatchNorm layers train, the
moments of their inputs in one forward pass, and writing their recomputed statistics."""
from __future__ import annotations

from typing import Any, Callable, Collection, List, Mapping, Tuple

import numpy as np
from ._torch import torch

__all__ = ["trainable_batchnorms", "batchnorm_moments", "set_batchnorm_statistics"]


def trainable_batchnorms(model: torch.nn.Module, frozen: Collection[torch.nn.Module]) -> List[str]:
    """Names of the ``BatchNorm2d`` modules of ``model`` not in ``frozen`` (the stage's inference-mode ones)."""
    frozen_ids = {id(m) for m in frozen}
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and id(m) not in frozen_ids]


def batchnorm_moments(model: torch.nn.Module, names: List[str],
                      forward: Callable[[], Any]) -> List[Tuple[str, int, np.ndarray, np.ndarray]]:
    """``(name, elements per channel, mean, biased variance)`` of each named BatchNorm's input during
    ``forward()``, run without autograd with the model in eval mode except those layers (batch statistics). Their
    running statistics and ``num_batches_tracked`` are restored afterwards, bit for bit; the model is left in eval
    mode (the backend sets its mode before every use)."""
    modules = dict(model.named_modules())
    moments: List[Tuple[str, int, np.ndarray, np.ndarray]] = []

    def hook(name: str):
        def record(module, inputs):
            t = inputs[0].detach()
            dims = [0] + list(range(2, t.dim()))
            var, mean = torch.var_mean(t, dim=dims, unbiased=False)
            moments.append((name, t.numel() // t.shape[1], mean.cpu().numpy(), var.cpu().numpy()))
        return record

    saved = {n: [b.clone() for b in modules[n].buffers()] for n in names}
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    model.eval()
    for n in names:
        modules[n].train()
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, buffers in saved.items():
                for live, kept in zip(modules[n].buffers(), buffers):
                    live.copy_(kept)
        model.eval()
    return moments


def set_batchnorm_statistics(model: torch.nn.Module, stats: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """Overwrite the named BatchNorms' ``running_mean`` / ``running_var`` (``num_batches_tracked`` is kept)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (mean, var) in stats.items():
            bn = modules[name]
            bn.running_mean.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
            bn.running_var.copy_(torch.from_numpy(np.asarray(var, np.float32)))
