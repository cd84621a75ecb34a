"""MindSpore optimizers with torch's semantics.

MindSpore's optimizers skip weight decay on every parameter whose name contains ``gamma`` or ``beta``
(all BatchNorm affine parameters) when ``weight_decay`` is a plain float; ``torch.optim.SGD`` decays
every parameter. Passing the parameters as one group with its own ``weight_decay`` makes MindSpore decay
them all, which the parity suite's optimizer check verifies.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from mindspore import Parameter, nn


def momentum_sgd(params: Iterable[Parameter], lr: float, momentum: float, weight_decay: float = 0.0) -> nn.Momentum:
    """``nn.Momentum`` equivalent to ``torch.optim.SGD(params, lr, momentum, weight_decay=weight_decay)``."""
    return nn.Momentum([{"params": list(params), "weight_decay": weight_decay}], learning_rate=lr,
                       momentum=momentum)


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
