"""MindSpore optimizers with torch's semantics.

MindSpore's optimizers skip weight decay on every parameter whose name contains ``gamma`` or ``beta``
(all BatchNorm affine parameters) when ``weight_decay`` is a plain float; ``torch.optim.SGD`` decays
every parameter. Passing the parameters as one group with its own ``weight_decay`` makes MindSpore decay
them all, which the parity suite's optimizer check verifies.
"""
from __future__ import annotations

from typing import Iterable

from mindspore import Parameter, nn


def momentum_sgd(params: Iterable[Parameter], lr: float, momentum: float, weight_decay: float = 0.0) -> nn.Momentum:
    """``nn.Momentum`` equivalent to ``torch.optim.SGD(params, lr, momentum, weight_decay=weight_decay)``."""
    return nn.Momentum([{"params": list(params), "weight_decay": weight_decay}], learning_rate=lr,
                       momentum=momentum)
