"""The seeds' small networks in MindSpore, built from their plain-data description
(:data:`ms_transfer.core.archs.SEQ_SPECS`); ``torch_reference.models`` builds the torch side from the same spec.

Numerics follow torch: explicit symmetric padding, ``nn.Flatten`` over NCHW (torch's ``flatten(1)`` order),
BatchNorm momentum converted to MindSpore's convention (weight of the old average: ``1 - torch_momentum``),
conv and dense tensors initialised like ``torch.nn.Conv2d`` / ``nn.Linear`` (U(+-1/sqrt(fan_in))).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import List

from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Uniform

from ..core.archs import ArchSpec, PairSpec, SeqSpec
from .registry import register_family

__all__ = ["SeqNet", "PairNet", "build_trunk", "build_head", "build_seq", "build_pair"]


def _conv(in_channels: int, out: int, kernel: int, padding: int) -> nn.Conv2d:
    bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
    pad = {"pad_mode": "pad", "padding": padding} if padding else {"pad_mode": "valid"}
    return nn.Conv2d(in_channels, out, kernel, has_bias=True, weight_init=Uniform(bound), bias_init=Uniform(bound),
                     **pad)


def _dense(in_features: int, out: int) -> nn.Dense:
    bound = 1.0 / math.sqrt(in_features)
    return nn.Dense(in_features, out, weight_init=Uniform(bound), bias_init=Uniform(bound))


def build_trunk(spec: SeqSpec) -> nn.SequentialCell:
    """The spec's trunk as a ``SequentialCell`` of named cells (parameter names ``features.<layer>.*``)."""
    cells, channels = OrderedDict(), spec.in_channels
    for name, kind, args in spec.layers:
        if kind == "conv":
            cells[name] = _conv(channels, *args)
            channels = args[0]
        elif kind == "bn":
            eps, torch_momentum = args
            cells[name] = nn.BatchNorm2d(channels, eps=eps, momentum=1.0 - torch_momentum)
        elif kind == "relu":
            cells[name] = nn.ReLU()
        elif kind == "maxpool":
            cells[name] = nn.MaxPool2d(kernel_size=args[0], stride=args[0])
        elif kind == "flatten":
            cells[name] = nn.Flatten()
        else:
            raise ValueError(f"{spec.name}: unknown layer kind {kind!r} ({name})")
    return nn.SequentialCell(cells)


def build_head(spec, num_classes: int) -> nn.SequentialCell:
    """The dense head ``fc`` (the spec's Dense / ReLU / Dropout layers); children named by index."""
    cells: List[nn.Cell] = []
    for kind, args in spec.head_layers(num_classes):
        cells.append(_dense(*args) if kind == "dense" else nn.ReLU() if kind == "relu" else nn.Dropout(p=args[0]))
    return nn.SequentialCell(cells)


class SeqNet(nn.Cell):
    """A small network of :data:`~ms_transfer.core.archs.SEQ_SPECS`: ``features`` (trunk, flattened) and ``fc``."""

    def __init__(self, spec: SeqSpec, num_classes: int = 10, padding: str = "torch") -> None:
        super().__init__()
        if padding != "torch":  # explicit symmetric padding is the only convention these networks have
            raise ValueError(f"{spec.name} has only torch-style (explicit) padding, got padding={padding!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.padding, self.spec = spec.name, padding, spec
        self.num_classes, self.num_features = num_classes, spec.feature_dim()
        self.features = build_trunk(spec)
        self.fc = build_head(spec, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk -> (N, num_features) flattened features."""
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Dense head -> (N, num_classes) logits."""
        return self.fc(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised head for ``num_classes``."""
        self.fc = build_head(self.spec, num_classes)
        self.num_classes = num_classes


class PairNet(nn.Cell):
    """Seed 000's digit adder (:class:`~ms_transfer.core.archs.PairSpec`): ``branch_a`` and ``branch_b`` (each the
    recogniser's trunk, separate parameters), their features concatenated, the head ``fc`` -> (N, 1) sum."""

    def __init__(self, spec: PairSpec, num_classes: int = 1, padding: str = "torch") -> None:
        super().__init__()
        if padding != "torch":
            raise ValueError(f"{spec.name} has only torch-style (explicit) padding, got padding={padding!r}")
        if num_classes != spec.outputs:
            raise ValueError(f"{spec.name} has {spec.outputs} output(s) (the sum, or the 19 sums' logits), got "
                             f"num_classes={num_classes}")
        self.arch, self.padding, self.spec = spec.name, padding, spec
        self.num_classes, self.num_features = spec.outputs, spec.feature_dim()
        self.branch_a = build_trunk(spec.branch_spec)
        self.branch_b = build_trunk(spec.branch_spec)
        self.fc = build_head(spec, spec.outputs)
        self.concat = ops.Concat(axis=1)

    def forward_features(self, a: Tensor, b: Tensor) -> Tensor:
        """Both branches -> (N, 2 * branch features), ``a``'s first."""
        return self.concat((self.branch_a(a), self.branch_b(b)))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(x)

    def construct(self, a: Tensor, b: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(a, b))


@register_family("seq")
def build_seq(spec: ArchSpec, num_classes: int = 10, padding: str = "torch") -> SeqNet:
    """The small network of ``spec`` (the Keras Fashion-MNIST CNN, the digit recogniser)."""
    return SeqNet(spec.layout, num_classes, padding)


@register_family("pair")
def build_pair(spec: ArchSpec, num_classes: int = 1, padding: str = "torch") -> PairNet:
    """The digit adder of ``spec`` (two digits -> their sum)."""
    return PairNet(spec.layout, num_classes, padding)
