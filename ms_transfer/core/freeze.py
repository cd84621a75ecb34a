"""Freezing by parameter name (glob patterns), strategy presets, per-pattern learning-rate multipliers.

Patterns always use this project's (MindSpore tutorial) parameter names; ``torch_reference`` translates its
torchvision names through :mod:`ms_transfer.core.naming` before matching, so a pattern means the same layers in
both frameworks. Each backend applies them to its own parameters (``ms_transfer.mindspore_backend.optim.apply_freeze``,
``torch_reference.backend``).

A frozen BatchNorm (gamma and beta frozen) runs in inference mode: it normalises with its moving
statistics and never updates them, so a frozen trunk is truly frozen (the tutorial's frozen BNs drift).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from .archs import head_module

STAGES = ("layer1", "layer2", "layer3", "layer4")


def head_patterns(arch: Optional[str] = None) -> List[str]:
    """The pattern that selects ``arch``'s head module: ``fc.*`` (ResNets, seed networks), ``classifier.*`` (VGG)."""
    return [f"{head_module(arch)}.*"]


def strategy_patterns(strategy: str, partial_from: str = "layer4",
                      arch: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """(freeze, unfreeze) glob patterns of a strategy preset for ``arch`` (``fixed_feature`` trains the head
    module: ``fc`` of a ResNet, the whole ``classifier`` MLP of a VGG)."""
    if strategy == "finetune":
        return [], []
    if strategy == "fixed_feature":
        return ["*"], head_patterns(arch)
    if strategy == "partial":
        if partial_from not in STAGES:
            raise ValueError(f"partial_from must be one of {', '.join(STAGES)}, got {partial_from!r}")
        return ["*"], [f"{s}.*" for s in STAGES[STAGES.index(partial_from):]] + head_patterns(arch)
    raise ValueError(f"unknown strategy {strategy!r}; use finetune, fixed_feature or partial")


def is_frozen(name: str, freeze: Sequence[str], unfreeze: Sequence[str]) -> bool:
    """Frozen when a freeze pattern matches and no unfreeze pattern does."""
    return any(fnmatchcase(name, p) for p in freeze) and not any(fnmatchcase(name, p) for p in unfreeze)


def lr_multiplier(name: str, lr_mult: Mapping[str, float]) -> float:
    """Learning-rate multiplier of parameter ``name``: the first matching ``lr_mult`` pattern's, else 1."""
    return float(next((m for pattern, m in lr_mult.items() if fnmatchcase(name, pattern)), 1.0))


@dataclass
class FreezeReport:
    """Trainable / frozen parameter counts per top-level module."""

    rows: "OrderedDict[str, List[int]]"  # module -> [trainable elements, frozen elements]
    frozen_bn: int

    def table(self) -> str:
        lines = [f"{'module':<10} {'trainable':>12} {'frozen':>12}"]
        for module, (t, f) in self.rows.items():
            lines.append(f"{module:<10} {t:>12,} {f:>12,}")
        total_t = sum(r[0] for r in self.rows.values())
        total_f = sum(r[1] for r in self.rows.values())
        lines.append(f"{'total':<10} {total_t:>12,} {total_f:>12,}")
        lines.append(f"BatchNorm layers in inference mode (frozen): {self.frozen_bn}")
        return "\n".join(lines)


def freeze_report(entries: Iterable[Tuple[str, int, bool]], frozen_bn: int) -> FreezeReport:
    """Report from ``(parameter name, number of elements, trainable)`` entries."""
    rows: "OrderedDict[str, List[int]]" = OrderedDict()
    for name, size, trainable in entries:
        row = rows.setdefault(name.split(".")[0], [0, 0])
        row[0 if trainable else 1] += int(size)
    return FreezeReport(rows, frozen_bn)
