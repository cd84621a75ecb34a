"""The seeds' small networks as plain data: one description that both frameworks build from.

A :class:`SeqSpec` is a trunk (a sequence of named layers) and a dense head ``fc``. MindSpore
(:mod:`ms_transfer.models.seq`) and torch (:mod:`torch_reference.models`) build their modules from the same
spec, so the two cannot drift apart, and the parameter names follow from it::

    features.<layer>.weight|bias         conv / dense layers of the trunk (same in both frameworks)
    features.<bn>.weight|bias|running_*  torch BatchNorm; MindSpore: gamma|beta|moving_mean|moving_variance
    fc.<i>.weight|bias                   the head: Dense, ReLU, Dropout, ..., Dense(num_classes)

(``nn.Sequential`` / ``nn.SequentialCell`` name their children by key or index, identically.) The head is
``fc`` as in the ResNets, so the freezing presets (``fixed_feature``, the head-only stage), the frozen-trunk fast
path and the feature cache work unchanged: ``forward_features`` is the flattened trunk output.

Defaults are torch's (``nn.Conv2d`` / ``nn.Linear`` init, BN eps 1e-5); the Keras seed's BN is written with
Keras's constants (eps 1e-3, moving average keeping 0.99, i.e. torch ``momentum=0.01``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

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


def _conv_bn_relu(i: int, out: int, eps: float, momentum: float) -> Tuple[Layer, ...]:
    return ((f"conv{i}", "conv", (out, 3, 1)), (f"bn{i}", "bn", (eps, momentum)), (f"relu{i}", "relu", ()))


# Keras BatchNormalization: epsilon=1e-3, momentum=0.99 (weight of the *old* average) -> torch momentum 0.01
_KERAS_BN = (1e-3, 0.01)

SEQ_SPECS: Dict[str, SeqSpec] = {
    # Seed 004: the Keras Fashion-MNIST network (Conv16-BN-ReLU-MaxPool, Conv32-BN-ReLU-MaxPool,
    # Conv120-BN-ReLU, Flatten, Dense256-ReLU, Dropout 0.2, Dense), 3x3 'same' convs at stride 1.
    "fashion_cnn": SeqSpec(
        "fashion_cnn", 1, 28,
        _conv_bn_relu(1, 16, *_KERAS_BN) + (("pool1", "maxpool", (2,)),)
        + _conv_bn_relu(2, 32, *_KERAS_BN) + (("pool2", "maxpool", (2,)),)
        + _conv_bn_relu(3, 120, *_KERAS_BN) + (("flatten", "flatten", ()),),
        hidden=(256,), dropout=0.2,
        doc="seed 004's Fashion-MNIST CNN (Keras BN constants), 1x28x28 input"),
    # Seed 000: the digit recogniser (conv(1->4, 5x5) - pool - conv(4->8, 5x5) - pool, Dense 512, dropout 0.5),
    # whose trunk is each branch of the digit adder.
    "digit_cnn": SeqSpec(
        "digit_cnn", 1, 28,
        (("conv1", "conv", (4, 5, 2)), ("relu1", "relu", ()), ("pool1", "maxpool", (2,)),
         ("conv2", "conv", (8, 5, 2)), ("relu2", "relu", ()), ("pool2", "maxpool", (2,)),
         ("flatten", "flatten", ())),
        hidden=(512,), dropout=0.5,
        doc="seed 000's MNIST digit recogniser, 1x28x28 input"),
}


@dataclass(frozen=True)
class PairSpec:
    """Seed 000's digit adder: two branches, each the trunk of the recogniser ``branch`` (parameters
    ``branch_a.<layer>.*`` and ``branch_b.<layer>.*``), whose flattened features are concatenated into the dense
    head ``fc``, which regresses the sum of the two digits (one output, MSE; the accuracy rounds it)."""

    name: str
    branch: str               # the SEQ_SPECS network whose trunk each branch is
    hidden: Tuple[int, ...]   # the head's hidden widths (ReLU after each, Dropout after the first)
    dropout: float
    doc: str
    branches: Tuple[str, str] = ("branch_a", "branch_b")

    @property
    def branch_spec(self) -> SeqSpec:
        return SEQ_SPECS[self.branch]

    def feature_dim(self) -> int:
        return 2 * self.branch_spec.feature_dim()

    def head_layers(self, num_outputs: int = 1) -> List[Tuple[str, Tuple]]:
        """The seed's head: Dense-ReLU-Dropout, then Dense-ReLU per further hidden width, then a linear Dense(1).

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


PAIR_SPECS: Dict[str, PairSpec] = {
    # Seed 000's adder heads: "small" (2 layers) and "large" (4 layers, the seed's 1024-256-64-1)
    "digit_adder": PairSpec("digit_adder", "digit_cnn", hidden=(128,), dropout=0.5,
                            doc="seed 000's digit adder, 2-layer head: two 1x28x28 digits -> their sum"),
    "digit_adder4": PairSpec("digit_adder4", "digit_cnn", hidden=(1024, 256, 64), dropout=0.5,
                             doc="seed 000's digit adder, 4-layer head (1024-256-64-1)"),
}


#: torchvision's VGG configurations (``torchvision/models/vgg.py`` ``cfgs``): conv widths, ``M`` = 2x2 max-pool
_VGG_CFGS: Dict[str, Tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


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


VGG_SPECS: Dict[str, VggSpec] = {
    f"{depth}{'_bn' if bn else ''}": VggSpec(f"{depth}{'_bn' if bn else ''}", cfg, bn)
    for depth, cfg in _VGG_CFGS.items() for bn in (False, True)
}
#: the head module of each family (the module ``forward_head`` applies and the frozen-trunk fast path trains):
#: ``fc`` for the ResNets and the seed networks, ``classifier`` for VGG (torchvision's and mindcv's name)
_HEAD_MODULES = {**{arch: "classifier" for arch in VGG_SPECS}}


def vgg_spec(arch: str) -> Optional[VggSpec]:
    """The spec of a VGG, ``None`` for other architectures."""
    return VGG_SPECS.get(arch)


def head_module(arch: Optional[str]) -> str:
    """Name of ``arch``'s head module: ``classifier`` for VGG, ``fc`` otherwise (also for unknown models)."""
    return _HEAD_MODULES.get(arch or "", "fc")


def seq_spec(arch: str) -> Optional[SeqSpec]:
    """The spec of a small network, ``None`` for other architectures (the ResNets)."""
    return SEQ_SPECS.get(arch)


def pair_spec(arch: str) -> Optional[PairSpec]:
    """The spec of a two-input network (the digit adder), ``None`` for other architectures."""
    return PAIR_SPECS.get(arch)


def input_spec(arch: str) -> Tuple[int, Optional[int]]:
    """``(channels, fixed input size or None)`` of an architecture (ResNets and VGGs: 3 channels, any size >=
    32)."""
    spec = seq_spec(arch) or (pair_spec(arch).branch_spec if pair_spec(arch) else None)
    return (spec.in_channels, spec.input_size) if spec else (3, None)


def task_of(arch: str) -> str:
    """``classify`` (cross-entropy, one image in) or ``digit_sum`` (MSE on the sum of a pair of digits)."""
    return "digit_sum" if arch in PAIR_SPECS else "classify"
