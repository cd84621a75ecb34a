"""Porting bugs injected into the MindSpore side, to prove the parity suite catches them.

Each bug is a plausible mistake when porting torchvision to MindSpore (most are ResNet's; ``classifier_transposed``
and ``pool_bins`` are VGG's, ``dropout_keep_prob`` any network with dropout, ``fc_transposed`` any classifier).
``inject(name, net, state)`` mutates the freshly built network and/or its converted MindSpore state dict *before* any
comparison.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import numpy as np
from mindspore import nn, ops

from ms_transfer.core.naming import head_names
from ms_transfer.models import VGG, ResidualBlock, ResidualBlockBase, ResNet

State = Dict[str, np.ndarray]


def replace_cell(net: nn.Cell, dotted_name: str, new: nn.Cell) -> None:
    """Swap the sub-cell at ``dotted_name`` (e.g. ``layer2.0.conv2``) and give its parameters full names."""
    *parents, last = dotted_name.split(".")
    parent = net
    for part in parents:
        parent = parent[_index(parent, part)] if isinstance(parent, nn.SequentialCell) else getattr(parent, part)
    if isinstance(parent, nn.SequentialCell):
        parent[_index(parent, last)] = new
    else:
        setattr(parent, last, new)
    new.update_parameters_name(dotted_name + ".")


def _index(seq: nn.SequentialCell, part: str) -> int:
    """Position of child ``part`` in a SequentialCell (children named by index, or by key as the seeds' nets)."""
    return int(part) if part.isdigit() else list(seq._cells).index(part)


def _replace_batchnorms(net: nn.Cell, layer: str = "", **overrides) -> None:
    """Every BatchNorm (of ``layer``) rebuilt with ``overrides``; a callable override maps the cell's own value."""
    bns = [(name, cell) for name, cell in net.cells_and_names() if isinstance(cell, nn.BatchNorm2d)
           and (not layer or name.startswith(layer + "."))]
    for name, cell in bns:
        # nn.BatchNorm2d stores 1 - momentum in .momentum
        kwargs = dict(num_features=cell.num_features, eps=cell.eps, momentum=1.0 - cell.momentum)
        kwargs.update({k: v(kwargs[k]) if callable(v) else v for k, v in overrides.items()})
        replace_cell(net, name, nn.BatchNorm2d(**kwargs))


def maxpool_same(net: ResNet, state: State) -> None:
    """Stem max-pool with MindSpore's default-style ``pad_mode='same'`` (pads bottom/right only)."""
    replace_cell(net, "max_pool", nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same"))


def strided_conv_same(net: ResNet, state: State) -> None:
    """The first stride-2 3x3 conv (stage 2, block 0) with ``pad_mode='same'`` instead of padding 1."""
    name = "layer2.0.conv2" if net.block is ResidualBlock else "layer2.0.conv1"
    old = net.layer2[0].conv2 if net.block is ResidualBlock else net.layer2[0].conv1
    replace_cell(net, name, nn.Conv2d(old.in_channels, old.out_channels, 3, stride=2, pad_mode="same",
                                      has_bias=False, group=old.group))


def bn_eps_1e3(net: ResNet, state: State, layer: str = "") -> None:
    """Every BatchNorm (of ``layer``, default: all) with the other framework family's eps: 1e-3 (Keras) instead of
    torch's 1e-5, or 1e-5 where the network has Keras' 1e-3 (the Fashion-MNIST network's)."""
    _replace_batchnorms(net, layer, eps=lambda eps: 1e-5 if abs(eps - 1e-3) < 1e-9 else 1e-3)


def conv_padding_shifted(net: ResNet, state: State, layer: str = "layer3.1") -> None:
    """The 3x3 conv of block ``layer`` padded bottom/right only, by 2 (same output size, shifted by a pixel)."""
    name = f"{layer}.conv2" if net.block is ResidualBlock else f"{layer}.conv1"
    old = dict(net.cells_and_names())[name]
    replace_cell(net, name, nn.Conv2d(old.in_channels, old.out_channels, 3, stride=old.stride, pad_mode="pad",
                                      padding=(0, 2, 0, 2), has_bias=False, group=old.group))


def bn_momentum_torch_convention(net: ResNet, state: State) -> None:
    """torch's BN momentum (0.1; 0.01 for the Fashion-MNIST network's Keras constants) passed unchanged to MindSpore, where it weighs
    the *old* statistic."""
    _replace_batchnorms(net, momentum=lambda m: 1.0 - m)


def fc_weight_transposed(net: ResNet, state: State) -> None:
    """The class layer's weight (``fc``; VGG: ``classifier.6``) read in the wrong memory order: the (in, out)
    buffer reinterpreted as (out, in)."""
    name = head_names("ms_transfer", net.arch)[0]
    w = state[name]
    state[name] = np.ascontiguousarray(w.T).reshape(w.shape)


def classifier_transposed(net: VGG, state: State) -> None:
    """VGG's square hidden classifier layer (``classifier.3``, 4096 x 4096) loaded transposed: a Keras-style
    (in, out) weight taken for torch's (out, in), which a square shape cannot reveal."""
    state["classifier.3.weight"] = np.ascontiguousarray(state["classifier.3.weight"].T)


class _FloorBinPool(nn.Cell):
    """Adaptive average pooling with the wrong bin rule: bin ``i`` of an ``n``-long axis ends at
    ``floor((i + 1) n / out)`` (at least one row) instead of torch's ``ceil``. The same at n = 7 (224 px) or any
    multiple of 7; different wherever bins overlap (n = 2 at 64 px: torch's bin 3 averages rows 0 and 1)."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.out = out

    def construct(self, x):
        n_h, n_w = x.shape[2], x.shape[3]
        rows = []
        for i in range(self.out):
            h0 = (i * n_h) // self.out
            h1 = max(((i + 1) * n_h) // self.out, h0 + 1)
            cols = []
            for j in range(self.out):
                w0 = (j * n_w) // self.out
                w1 = max(((j + 1) * n_w) // self.out, w0 + 1)
                cols.append(x[:, :, h0:h1, w0:w1].mean(axis=(2, 3)))
            rows.append(ops.stack(cols, axis=-1))
        return ops.stack(rows, axis=2)


def pool_bins(net: VGG, state: State) -> None:
    """VGG's ``AdaptiveAvgPool2d((7, 7))`` with a floor-ended bin rule (see :class:`_FloorBinPool`)."""
    replace_cell(net, "avgpool", _FloorBinPool(net.spec.pool))


def dropout_keep_prob(net: nn.Cell, state: State) -> None:
    """Every dropout built as ``nn.Dropout(p)`` with ``p`` positional: MindSpore's first argument is the
    deprecated ``keep_prob``, so the layer drops ``1 - p`` (a no-op at p = 0.5; seen by the dropout check at any
    other rate, e.g. the Fashion-MNIST network's 0.2 or ``--dropout 0.2``)."""
    for name, cell in [(n, c) for n, c in net.cells_and_names() if isinstance(c, nn.Dropout)]:
        replace_cell(net, name, nn.Dropout(float(cell.p)))


class _BottleneckNoFinalReLU(ResidualBlock):
    def construct(self, x):
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return out + identity


class _BasicNoFinalReLU(ResidualBlockBase):
    def construct(self, x):
        identity = x
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return out + identity


def missing_relu_after_add(net: ResNet, state: State, layer: str = "layer3.0") -> None:
    """The ReLU after the residual addition forgotten in one block (default: stage 3, block 0)."""
    block = dict(net.cells_and_names())[layer]
    block.__class__ = _BottleneckNoFinalReLU if isinstance(block, ResidualBlock) else _BasicNoFinalReLU


def bn_stats_swapped(net: ResNet, state: State) -> None:
    """moving_mean and moving_variance swapped on load (e.g. a name table with the two rows crossed)."""
    for name in [n for n in state if n.endswith(".moving_mean")]:
        var = name[: -len("moving_mean")] + "moving_variance"
        state[name], state[var] = state[var], state[name]


BUGS: Mapping[str, Callable[[ResNet, State], None]] = {
    "maxpool_same": maxpool_same,
    "strided_conv_same": strided_conv_same,
    "bn_eps": bn_eps_1e3,
    "bn_momentum": bn_momentum_torch_convention,
    "fc_transposed": fc_weight_transposed,
    "missing_relu": missing_relu_after_add,
    "conv_padding": conv_padding_shifted,
    "bn_stats_swapped": bn_stats_swapped,
    "classifier_transposed": classifier_transposed,
    "pool_bins": pool_bins,
    "dropout_keep_prob": dropout_keep_prob,
}


#: bugs that take a block: ``BUG@LAYER`` (e.g. ``bn_eps@layer3.1``) puts them there
LAYER_BUGS = ("bn_eps", "conv_padding", "missing_relu")


def inject(name: str, net: ResNet, state: State) -> None:
    """Apply the bug ``name`` (``BUG`` or ``BUG@LAYER``, see :data:`LAYER_BUGS`) to ``net`` / ``state`` in place."""
    bug, _, layer = name.partition("@")
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; choose one of {', '.join(BUGS)}")
    if not layer:
        BUGS[bug](net, state)
        return
    blocks = [n for n, c in net.cells_and_names() if isinstance(c, (ResidualBlock, ResidualBlockBase))]
    if bug not in LAYER_BUGS or layer not in blocks:
        raise ValueError(f"{name!r}: BUG@LAYER works for {', '.join(LAYER_BUGS)} with LAYER a residual block "
                         f"({blocks[0]} ... {blocks[-1]})")
    BUGS[bug](net, state, layer)
