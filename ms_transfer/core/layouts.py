"""Layouts: the shape of each architecture family as plain data, which both frameworks build from.

An :class:`~ms_transfer.core.spec.ArchSpec` holds one of these as its ``layout``:

* :class:`ResNetLayout` -- torchvision's ResNet / ResNeXt / Wide ResNet: block kind, blocks per stage, and the
  bottleneck's ``groups`` x ``width_per_group`` (ResNeXt: grouped 3x3 convs; Wide ResNet: twice the inner width);
* :class:`VggSpec` -- torchvision's VGG ``cfgs`` (conv widths and max-pools), with or without BatchNorm;
* :class:`SeqSpec` -- a small network: a trunk of named layers and a dense head ``fc``;
* :class:`PairSpec` -- the digit adder: two copies of a :class:`SeqSpec` trunk and a dense head.

Parameter names follow from a layout (:mod:`ms_transfer.core.naming`); MindSpore (``ms_transfer.models``) and torch
(``torch_reference.models``) build their modules from the same layout, so the two cannot drift apart. Defaults are
torch's (``nn.Conv2d`` / ``nn.Linear`` init, BN eps 1e-5); the Keras Fashion-MNIST network's BN is written with
Keras's constants (eps 1e-3, moving average keeping 0.99, i.e. torch ``momentum=0.01``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

#: a trunk layer: (name, kind, arguments); kinds: conv (out, kernel, padding), bn (eps, momentum: torch's
#: convention, the weight of the new batch), relu, maxpool (kernel = stride), flatten
Layer = Tuple[str, str, Tuple]


@dataclass(frozen=True)
class SeqSpec:
    """A small network: ``in_channels`` x ``input_size``^2 input, ``layers`` trunk, dense head ``fc``."""

    name: str
    in_channels: int
    input_size: int
    layers: Tuple[Layer, ...]
    hidden: Tuple[int, ...]   # widths of the head's hidden Dense layers (each followed by ReLU, Dropout)
    dropout: float            # drop probability of the head's Dropout layers
    doc: str

    def feature_dim(self) -> int:
        """Width of the flattened trunk output (the head's input)."""
        channels, size = self.in_channels, self.input_size
        for _, kind, args in self.layers:
            if kind == "conv":
                out, kernel, padding = args
                channels, size = out, size + 2 * padding - kernel + 1
            elif kind == "maxpool":
                size //= args[0]
        return channels * size * size

    def head_layers(self, num_classes: int) -> List[Tuple[str, Tuple]]:
        """``fc``'s layers in order: ``("dense", (in, out))``, ``("relu", ())``, ``("dropout", (p,))``."""
        layers, width = [], self.feature_dim()
        for hidden in self.hidden:
            layers += [("dense", (width, hidden)), ("relu", ()), ("dropout", (self.dropout,))]
            width = hidden
        return layers + [("dense", (width, num_classes))]

    def classifier_index(self, num_classes: int = 2) -> int:
        """Index of the last Dense inside ``fc`` (its weight's rows are the classes)."""
        return len(self.head_layers(num_classes)) - 1



@dataclass(frozen=True)
class PairSpec:
    """Seed 000's digit adder: two branches, each the trunk of the recogniser ``branch`` (parameters
    ``branch_a.<layer>.*`` and ``branch_b.<layer>.*``), whose flattened features are concatenated into the dense
    head ``fc``, which regresses the sum of the two digits (one output, MSE; the accuracy rounds it)."""

    name: str
    branch_spec: SeqSpec      # the network whose trunk each branch is (the digit recogniser)
    hidden: Tuple[int, ...]   # the head's hidden widths (ReLU after each, Dropout after the first)
    dropout: float
    doc: str
    branches: Tuple[str, str] = ("branch_a", "branch_b")
    #: 1: regress the sum (the seed's head, MSE); 19: logits over the sums 0..18 (cross-entropy)
    outputs: int = 1

    @property
    def branch(self) -> str:
        """Name of the network whose trunk each branch is."""
        return self.branch_spec.name

    def feature_dim(self) -> int:
        return 2 * self.branch_spec.feature_dim()

    def head_layers(self, num_outputs: int = 1) -> List[Tuple[str, Tuple]]:
        """The seed's head: Dense-ReLU-Dropout, then Dense-ReLU per further hidden width, then a linear
        Dense(``num_outputs``): 1 (the sum) or 19 (the sums' logits).

        The seed also puts a ReLU on the output. Left out here: whenever the initial output is negative for every
        input, that ReLU passes no gradient and training never starts (measured: the 2-layer head at seed 0 gave 0
        for 4 of 4 random pairs, with all gradients exactly 0)."""
        layers, width = [], self.feature_dim()
        for i, hidden in enumerate(self.hidden):
            layers += [("dense", (width, hidden)), ("relu", ())] + ([("dropout", (self.dropout,))] if i == 0 else [])
            width = hidden
        return layers + [("dense", (width, num_outputs))]

    def classifier_index(self, num_outputs: int = 1) -> int:
        """Index of the last Dense inside ``fc``."""
        return len(self.head_layers(num_outputs)) - 1


@dataclass(frozen=True)
class VggSpec:
    """torchvision's VGG: ``features`` (3x3 convs at padding 1, [BatchNorm,] ReLU, 2x2 max-pools; children
    numbered as ``nn.Sequential`` numbers them), ``avgpool`` (adaptive to ``pool`` x ``pool``), flatten, and the
    head ``classifier`` = Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear (indices 0-6; 6 is the class layer).

    Parameter names are torchvision's module paths in both frameworks (``features.N.*``, ``classifier.N.*``):
    mindcv's VGG uses the same ones, so only the BatchNorm tensor names differ between the schemes."""

    name: str
    widths: Tuple                 # the torchvision cfg: conv widths and "M"
    batch_norm: bool
    dropout: float = 0.5          # drop probability of the classifier's two Dropout layers
    hidden: int = 4096
    pool: int = 7                 # AdaptiveAvgPool2d((7, 7))
    in_channels: int = 3

    def feature_layers(self) -> List[Tuple[int, str, Tuple]]:
        """``(index, kind, args)`` of ``features``: conv (in, out), bn (channels,), relu (), maxpool ()."""
        layers: List[Tuple[int, str, Tuple]] = []
        channels = self.in_channels
        for width in self.widths:
            if width == "M":
                layers.append((len(layers), "maxpool", ()))
                continue
            layers.append((len(layers), "conv", (channels, width)))
            if self.batch_norm:
                layers.append((len(layers), "bn", (width,)))
            layers.append((len(layers), "relu", ()))
            channels = width
        return layers

    def feature_dim(self) -> int:
        """Width of the pooled, flattened features (the classifier's input): 512 * 7 * 7."""
        return [w for w in self.widths if w != "M"][-1] * self.pool * self.pool

    def head_layers(self, num_classes: int) -> List[Tuple[str, Tuple]]:
        """``classifier``'s layers in order, as :meth:`SeqSpec.head_layers` describes them."""
        h = self.hidden
        return [("dense", (self.feature_dim(), h)), ("relu", ()), ("dropout", (self.dropout,)),
                ("dense", (h, h)), ("relu", ()), ("dropout", (self.dropout,)), ("dense", (h, num_classes))]

    def classifier_index(self, num_classes: int = 2) -> int:
        """Index of the class layer inside ``classifier`` (6)."""
        return len(self.head_layers(num_classes)) - 1


@dataclass(frozen=True)
class ResNetLayout:
    """torchvision's ResNet family (``torchvision/models/resnet.py``): a stem, four stages of ``depths`` blocks, a
    global average pool and the head ``fc``.

    ``block`` is ``basic`` (two 3x3 convs, expansion 1) or ``bottleneck`` (1x1, 3x3 strided, 1x1; expansion 4). A
    bottleneck's inner width is ``int(planes * width_per_group / 64) * groups`` and its 3x3 conv has ``groups``
    groups: ResNeXt-50 32x4d is ``groups=32, width_per_group=4``, Wide ResNet-50-2 is ``width_per_group=128``."""

    block: str
    depths: Tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.block == "basic" and (self.groups, self.width_per_group) != (1, 64):
            raise ValueError("a basic block has no groups or width (torchvision's BasicBlock supports only "
                             "groups=1, width_per_group=64)")

    @property
    def expansion(self) -> int:
        """Output channels of a block per ``planes``: 4 for a bottleneck, 1 for a basic block."""
        return 4 if self.block == "bottleneck" else 1

    @property
    def num_features(self) -> int:
        """Width of the pooled trunk output (the head's input): 2048 for a bottleneck ResNet."""
        return 512 * self.expansion

    def width(self, planes: int) -> int:
        """Inner width of a block of ``planes``: the bottleneck's grouped 3x3 conv width (torchvision's rule)."""
        if self.block == "basic":
            return planes
        return int(planes * (self.width_per_group / 64.0)) * self.groups

    def first_conv2_shape(self) -> Tuple[int, int, int, int]:
        """Shape of ``layer1.0.conv2.weight``, which tells the variants of one depth apart (ResNet-50,
        ResNeXt-50 32x4d and Wide ResNet-50-2 have the same tensor names)."""
        width = self.width(64)
        return (width, width // self.groups, 3, 3)
