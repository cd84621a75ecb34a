"""MindSpore freezing (by parameter-name patterns) and optimizers with torch's semantics.

MindSpore's optimizers skip weight decay on every parameter whose name contains ``gamma`` or ``beta``
(all BatchNorm affine parameters) when ``weight_decay`` is a plain float; ``torch.optim.SGD`` decays
every parameter. Passing the parameters as one group with its own ``weight_decay`` makes MindSpore decay
them all, which the parity suite's optimizer check verifies.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from . import context  # noqa: F401  (oneDNN cap before MindSpore's first kernel)
from mindspore import Parameter, nn  # noqa: E402

from .core.freeze import FreezeReport, freeze_report, is_frozen, lr_multiplier  # noqa: E402


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


def apply_freeze(net, freeze: Sequence[str], unfreeze: Sequence[str]) -> FreezeReport:
    """Set ``requires_grad`` by name and put fully frozen BatchNorms in inference mode.

    Patterns match this project's (MindSpore tutorial) parameter names, e.g. ``layer4.*``, ``fc.*``,
    ``*.norm*`` (moving statistics are never trainable and are not counted as parameters).
    """
    entries = []
    for p in net.get_parameters():
        if p.name.endswith(("moving_mean", "moving_variance")):
            continue
        p.requires_grad = not is_frozen(p.name, freeze, unfreeze)
        entries.append((p.name, p.size, p.requires_grad))
    frozen_bn = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            frozen = not (cell.gamma.requires_grad or cell.beta.requires_grad)
            cell.use_batch_statistics = False if frozen else None
            frozen_bn += frozen
    return freeze_report(entries, frozen_bn)


def lr_groups(params: Sequence, lr_mult: Mapping[str, float]) -> List[Tuple[float, List]]:
    """Split ``params`` by the first matching ``lr_mult`` pattern: ``[(multiplier, params), ...]``."""
    groups: Dict[float, List] = OrderedDict()
    for p in params:
        groups.setdefault(lr_multiplier(p.name, lr_mult), []).append(p)
    return list(groups.items())
