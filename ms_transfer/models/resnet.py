"""ResNet family in MindSpore, numerically identical to ``torchvision.models.resnet``.

The module keeps the MindSpore ResNet50 tutorial's shape and parameter names (``ResidualBlockBase``,
``ResidualBlock``, ``make_layer``, ``norm``/``norm{i}``/``down_sample``) so the tutorial checkpoint
``resnet50_224_new.ckpt`` loads as is, while fixing what makes the tutorial differ from torchvision:

* every conv and the stem max-pool use explicit symmetric padding (``pad_mode='pad'``); MindSpore's
  default ``'same'`` pads bottom/right only for stride 2 (TensorFlow style), an O(1) output change;
* the bottleneck puts its stride on the 3x3 conv (torchvision "ResNet v1.5");
* the basic block has two BatchNorms (the tutorial shares one ``norm`` and feeds conv2 the wrong width);
* global average pooling is a mean over H, W, so any input size works (not a fixed ``AvgPool2d(7)``);
* BatchNorm momentum is MindSpore's convention: ``moving = m * moving + (1 - m) * batch`` with
  ``m = 1 - torch_momentum = 0.9``; eps is torch's 1e-5.

``padding="same"`` builds the tutorial's own network instead (the convention its ``resnet50_224_new.ckpt`` was
trained and evaluated with): the stem conv, the max-pool and every strided conv use MindSpore's ``'same'``
padding, which at stride 2 pads ``total = max((ceil(n/s) - 1) * s + k - n, 0)`` split as ``total // 2``
top/left and the rest bottom/right. ``torch_reference.models`` reproduces it with explicit asymmetric padding.

Models know nothing about checkpoints: :mod:`ms_transfer.models.factory` builds them and loads weights.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Type, Union

from mindspore import Tensor, nn
from mindspore.common.initializer import HeNormal, Uniform

from ..core.archs import ArchSpec
from .registry import register_family

__all__ = [
    "ResidualBlockBase", "ResidualBlock", "ResNet", "make_layer", "conv3x3", "conv1x1", "batch_norm",
    "build_resnet", "BLOCKS", "PADDINGS", "TORCH_BN_MOMENTUM",
]

#: torch's BatchNorm default momentum. MindSpore's ``momentum`` is the weight of the *old* statistic.
TORCH_BN_MOMENTUM = 0.1
BN_EPS = 1e-5
#: ``torch``: torchvision's symmetric padding (default); ``same``: the MindSpore tutorial's network
PADDINGS = ("torch", "same")


def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    return padding


def _pad_args(kernel_size: int, stride: int, padding: str) -> dict:
    """Symmetric ``(k - 1) // 2`` (torch), or MindSpore's ``'same'`` where it differs from it (stride > 1)."""
    if padding == "same" and stride > 1:
        return {"pad_mode": "same"}
    pad = (kernel_size - 1) // 2
    return {"pad_mode": "pad", "padding": pad} if pad else {"pad_mode": "valid"}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, padding: str = "torch",
            groups: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias, padded 1 on every side (or ``'same'`` at stride 2, see the module doc), in
    ``groups`` groups (ResNeXt)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, has_bias=False, group=groups,
                     weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), **_pad_args(3, stride, padding))


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, padding: str = "torch") -> nn.Conv2d:
    """1x1 convolution without padding or bias (``'same'`` adds none either, at any stride)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, has_bias=False,
                     weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), **_pad_args(1, stride, padding))


def batch_norm(num_features: int) -> nn.BatchNorm2d:
    """BatchNorm2d equivalent to ``torch.nn.BatchNorm2d(num_features)`` (eps 1e-5, momentum 0.1)."""
    return nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=1.0 - TORCH_BN_MOMENTUM)


class ResidualBlockBase(nn.Cell):
    """Basic residual block (ResNet18/34): two 3x3 convs, expansion 1."""

    expansion: int = 1

    def __init__(self, in_channel: int, out_channel: int, stride: int = 1,
                 down_sample: Optional[nn.Cell] = None, padding: str = "torch", groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        if (groups, base_width) != (1, 64):  # torchvision's BasicBlock refuses them too
            raise ValueError(f"the basic block has no groups or width: got groups={groups}, base_width={base_width}")
        self.conv1 = conv3x3(in_channel, out_channel, stride, padding)
        self.norm1 = batch_norm(out_channel)
        self.conv2 = conv3x3(out_channel, out_channel)
        self.norm2 = batch_norm(out_channel)
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


class ResidualBlock(nn.Cell):
    """Bottleneck block (ResNet50/101/152): 1x1 -> 3x3 (strided, v1.5) -> 1x1, expansion 4.

    ``groups`` / ``base_width`` make it ResNeXt's or Wide ResNet's, as torchvision's ``Bottleneck``: the inner width
    is ``int(out_channel * base_width / 64) * groups`` and the 3x3 conv runs in ``groups`` groups."""

    expansion: int = 4

    def __init__(self, in_channel: int, out_channel: int, stride: int = 1,
                 down_sample: Optional[nn.Cell] = None, padding: str = "torch", groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        width = int(out_channel * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(in_channel, width)
        self.norm1 = batch_norm(width)
        self.conv2 = conv3x3(width, width, stride, padding, groups)
        self.norm2 = batch_norm(width)
        self.conv3 = conv1x1(width, out_channel * self.expansion)
        self.norm3 = batch_norm(out_channel * self.expansion)
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


Block = Type[Union[ResidualBlockBase, ResidualBlock]]


def make_layer(last_out_channel: int, block: Block, channel: int, block_nums: int,
               stride: int = 1, padding: str = "torch", groups: int = 1, base_width: int = 64) -> nn.SequentialCell:
    """Stack ``block_nums`` blocks; the first one downsamples (1x1 conv + BN) when shape changes. ``groups`` /
    ``base_width`` go to every block (ResNeXt, Wide ResNet)."""
    down_sample = None
    if stride != 1 or last_out_channel != channel * block.expansion:
        down_sample = nn.SequentialCell([conv1x1(last_out_channel, channel * block.expansion, stride, padding),
                                         batch_norm(channel * block.expansion)])
    width = {"groups": groups, "base_width": base_width}
    layers = [block(last_out_channel, channel, stride=stride, down_sample=down_sample, padding=padding, **width)]
    for _ in range(1, block_nums):
        layers.append(block(channel * block.expansion, channel, **width))
    return nn.SequentialCell(layers)


class ResNet(nn.Cell):
    """ResNet with torchvision's numerics and the MindSpore tutorial's parameter names.

    ``forward_features`` returns the pooled ``num_features``-d trunk feature (2048 for ResNet50);
    ``forward_head`` applies the classifier ``fc``. ``reset_classifier`` swaps the head for transfer.
    """

    def __init__(self, block: Block, layer_nums: Sequence[int], num_classes: int = 1000, padding: str = "torch",
                 arch: Optional[str] = None, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        self.arch = arch  # the registered name (set by the builders), read by checkpoint loading and backends
        self.padding = _check_padding(padding)
        self.block = block
        self.layer_nums = tuple(layer_nums)
        self.num_features = 512 * block.expansion
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, has_bias=False,
                               weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), **_pad_args(7, 2, padding))
        self.norm = batch_norm(64)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, **_pad_args(3, 2, padding))
        width = {"padding": padding, "groups": groups, "base_width": width_per_group}
        self.layer1 = make_layer(64, block, 64, layer_nums[0], **width)
        self.layer2 = make_layer(64 * block.expansion, block, 128, layer_nums[1], stride=2, **width)
        self.layer3 = make_layer(128 * block.expansion, block, 256, layer_nums[2], stride=2, **width)
        self.layer4 = make_layer(256 * block.expansion, block, 512, layer_nums[3], stride=2, **width)
        self.fc = _linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk: stem, four stages and global average pooling -> (N, num_features)."""
        x = self.max_pool(self.relu(self.norm(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(axis=(2, 3))

    def forward_head(self, x: Tensor) -> Tensor:
        """Classifier on pooled features -> (N, num_classes) logits."""
        return self.fc(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised ``num_features -> num_classes`` head."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.fc = _linear(self.num_features, num_classes)
        self.num_classes = num_classes


def _linear(in_features: int, out_features: int) -> nn.Dense:
    """``nn.Dense`` initialised like ``torch.nn.Linear`` (U(-1/sqrt(in), 1/sqrt(in)) for both tensors)."""
    bound = 1.0 / math.sqrt(in_features)
    return nn.Dense(in_features, out_features, weight_init=Uniform(bound), bias_init=Uniform(bound))


#: block kind of :class:`ms_transfer.core.layouts.ResNetLayout` -> block cell
BLOCKS = {"basic": ResidualBlockBase, "bottleneck": ResidualBlock}


@register_family("resnet")
def build_resnet(spec: ArchSpec, num_classes: int = 1000, padding: str = "torch") -> ResNet:
    """The ResNet-family network of ``spec`` (ResNet, ResNeXt, Wide ResNet: :mod:`ms_transfer.core.archs`)."""
    layout = spec.layout
    return ResNet(BLOCKS[layout.block], layout.depths, num_classes, padding=padding, arch=spec.name,
                  groups=layout.groups, width_per_group=layout.width_per_group)
