"""MindSpore freezing by parameter-name patterns, and per-pattern LR groups; the optimizers with torch's semantics
(momentum SGD that decays every parameter, :class:`TorchAdam`) are in :mod:`.optimizers`, re-exported here."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

from mindspore import nn

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)
from ..core.freeze import FreezeReport, freeze_report, is_frozen, lr_multiplier
from .optimizers import TorchAdam, build_optimizer, momentum_sgd

__all__ = ["apply_freeze", "lr_groups", "momentum_sgd", "TorchAdam", "build_optimizer"]


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
