"""VGG family in MindSpore, numerically identical to ``torchvision.models.vgg``, built from the plain-data
:class:`~ms_transfer.core.archs.VggSpec` (torchvision's ``cfgs``).

* 3x3 convs with explicit symmetric padding 1 (``pad_mode='pad'``; MindSpore's default ``'same'`` would agree at
  stride 1, but the explicit form states torch's rule), 2x2 max-pools at stride 2 (torch's floor mode);
* ``nn.AdaptiveAvgPool2d((7, 7))`` as torch: output bin ``i`` of an ``n``-long axis averages rows
  ``floor(i * n / 7)`` to ``ceil((i + 1) * n / 7) - 1`` (measured: MindSpore's op agrees with torch's to 1.2e-7 at
  n = 1, 2, 3, 5, 10, 14; identity at n = 7, i.e. 224 px), so any input size >= 32 works;
* ``nn.Dropout(p=...)``: the drop probability, passed by keyword. ``nn.Dropout(0.5)`` positionally is
  MindSpore's deprecated ``keep_prob`` (the same at 0.5, inverted at any other rate);
* torchvision's init: conv weights Kaiming-normal (fan_out, ReLU gain), biases 0, BatchNorm 1 / 0, Linear
  weights N(0, 0.01), biases 0; BatchNorm eps 1e-5 and torch momentum 0.1 (MindSpore's 0.9).

Parameter names are torchvision's (``features.N.*``, ``classifier.N.*``) with MindSpore's BatchNorm tensor names
(``gamma``/``beta``/``moving_mean``/``moving_variance``): mindcv's VGG convention, so mindcv's checkpoints need no
renaming and the naming table maps torchvision's by the BatchNorm suffix alone. The head is ``classifier``
(``core.archs.head_module``); ``reset_classifier`` replaces its class layer ``classifier.6``, as torchvision users
do.
"""
from __future__ import annotations

import dataclasses
from typing import List

from mindspore import Tensor, nn
from mindspore.common.initializer import HeNormal, Normal

from ..core.archs import ArchSpec, VggSpec
from .registry import register_family
from .resnet import batch_norm

__all__ = ["VGG", "make_features", "make_classifier", "build_vgg"]


def _dense(in_features: int, out_features: int) -> nn.Dense:
    """``nn.Dense`` initialised as torchvision's VGG initialises ``nn.Linear``: N(0, 0.01), bias 0."""
    return nn.Dense(in_features, out_features, weight_init=Normal(sigma=0.01), bias_init="zeros")


def make_features(spec: VggSpec) -> nn.SequentialCell:
    """``features``: torchvision's ``make_layers`` (children numbered 0, 1, ... as in ``nn.Sequential``)."""
    cells: List[nn.Cell] = []
    for _, kind, args in spec.feature_layers():
        if kind == "conv":
            cells.append(nn.Conv2d(*args, kernel_size=3, pad_mode="pad", padding=1, has_bias=True,
                                   weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), bias_init="zeros"))
        elif kind == "bn":
            cells.append(batch_norm(args[0]))
        elif kind == "relu":
            cells.append(nn.ReLU())
        else:
            cells.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.SequentialCell(cells)


def make_classifier(spec: VggSpec, num_classes: int) -> nn.SequentialCell:
    """``classifier``: Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear (indices 0-6)."""
    make = {"dense": _dense, "relu": nn.ReLU, "dropout": lambda p: nn.Dropout(p=p)}
    return nn.SequentialCell([make[kind](*args) for kind, args in spec.head_layers(num_classes)])


class VGG(nn.Cell):
    """torchvision's VGG: ``features``, ``avgpool`` (adaptive 7x7), flatten, ``classifier``.

    ``forward_features`` returns the pooled, flattened 25088-d features (the frozen-trunk fast path caches them);
    ``forward_head`` applies ``classifier``; ``reset_classifier`` swaps its class layer for transfer.
    """

    def __init__(self, spec: VggSpec, num_classes: int = 1000, padding: str = "torch") -> None:
        super().__init__()
        if padding != "torch":  # VGG was only ever trained with torchvision's padding
            raise ValueError(f"{spec.name} has only torch-style (explicit) padding, got padding={padding!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.padding, self.spec = spec.name, padding, spec
        self.num_classes, self.num_features = num_classes, spec.feature_dim()
        self.features = make_features(spec)
        self.avgpool = nn.AdaptiveAvgPool2d((spec.pool, spec.pool))
        self.flatten = nn.Flatten()
        self.classifier = make_classifier(spec, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Convolutions, adaptive pooling to 7x7 -> (N, 25088) features."""
        return self.flatten(self.avgpool(self.features(x)))

    def forward_head(self, x: Tensor) -> Tensor:
        """``classifier`` -> (N, num_classes) logits."""
        return self.classifier(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised class layer ``classifier.6`` for ``num_classes`` (the hidden layers are kept)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers = [self.classifier[i] for i in range(len(self.classifier) - 1)]
        self.classifier = nn.SequentialCell(layers + [_dense(self.spec.hidden, num_classes)])
        self.num_classes = num_classes


@register_family("vgg")
def build_vgg(spec: ArchSpec, num_classes: int = 1000, padding: str = "torch", dropout: float = 0.5) -> VGG:
    """The VGG of ``spec``; ``dropout``: the classifier's drop probability (torchvision's argument)."""
    return VGG(dataclasses.replace(spec.layout, dropout=float(dropout)), num_classes, padding)
