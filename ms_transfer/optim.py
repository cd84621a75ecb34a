"""MindSpore optimizers with torch's semantics.

MindSpore's optimizers skip weight decay on every parameter whose name contains ``gamma`` or ``beta``
(all BatchNorm affine parameters) when ``weight_decay`` is a plain float; ``torch.optim.SGD`` decays
every parameter. Passing the parameters as one group with its own ``weight_decay`` makes MindSpore decay
them all, which the parity suite's optimizer check verifies.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Tuple

from mindspore import Parameter, nn


def momentum_sgd(params: Iterable[Parameter], lr: float, momentum: float, weight_decay: float = 0.0) -> nn.Momentum:
    """``nn.Momentum`` equivalent to ``torch.optim.SGD(params, lr, momentum, weight_decay=weight_decay)``."""
    return nn.Momentum([{"params": list(params), "weight_decay": weight_decay}], learning_rate=lr,
                       momentum=momentum)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, base_lr: float, schedule: str,
          step_size: int = 1, gamma: float = 0.1) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total_steps``; the same rule on both sides.

    ``constant``; ``step``: times ``gamma`` every ``step_size`` epochs; ``cosine``: per-step cosine decay
    from ``base_lr`` towards 0 (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``T_max=total_steps``).
    """
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** ((step // steps_per_epoch) // step_size)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or step")


def build_optimizer(name: str, groups: Sequence[Tuple[float, List[Parameter]]], lr_per_step: Sequence[float],
                    momentum: float, weight_decay: float) -> nn.Optimizer:
    """MindSpore optimizer with torch semantics from ``[(lr multiplier, params)]`` and a per-step base LR.

    Every parameter is decayed (torch) and each group's LR is ``multiplier * lr_per_step[step]``; the
    optimizer's ``global_step`` indexes the list, so a restored optimizer continues its schedule.
    """
    base = [float(v) for v in lr_per_step]
    param_groups = [{"params": ps, "lr": [m * v for v in base], "weight_decay": weight_decay} for m, ps in groups]
    if name == "momentum":
        return nn.Momentum(param_groups, learning_rate=base, momentum=momentum)
    if name == "sgd":
        return nn.SGD(param_groups, learning_rate=base, momentum=momentum)
    if name == "adam":
        return nn.Adam(param_groups, learning_rate=base)
    raise ValueError(f"unknown optimizer {name!r}; use momentum, sgd or adam")
