"""The torch side of every registered architecture: torchvision's ResNets / ResNeXts / Wide ResNets and VGGs (never a
re-implementation), optionally with the MindSpore tutorial's ``'same'`` padding; the small networks from their
shared spec. One builder per family (:data:`FAMILY_BUILDERS`). Numpy state dicts: :mod:`.state` (re-exported here)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

from ._torch import torch
import torch.nn.functional as F
import torchvision

from ms_transfer.core.archs import ArchSpec, PairSpec, SeqSpec, get_arch

from .state import load_numpy_state, numpy_state  # noqa: F401  (re-exported: the models' weights as numpy)

PADDINGS = ("torch", "same")


def same_padding(size: int, kernel_size: int, stride: int) -> Tuple[int, int]:
    """``(before, after)`` padding of MindSpore's (TensorFlow's) ``pad_mode='same'`` along one axis: the output
    is ``ceil(size / stride)``; the extra pixel of an odd total goes after (bottom / right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class SamePadding:
    """Forward pre-hook padding a conv's / max-pool's input like MindSpore's ``pad_mode='same'`` (the module's own
    padding is set to 0); max-pool pads with ``-inf`` so padded cells never win."""

    def __init__(self, kernel_size: int, stride: int, value: float = 0.0) -> None:
        self.kernel_size, self.stride, self.value = kernel_size, stride, value

    def __call__(self, module: torch.nn.Module, args):
        x = args[0]
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        return (F.pad(x, (left, right, top, bottom), value=self.value),) + tuple(args[1:])


def _pad_same(module: torch.nn.Module, kernel_size: int, stride: int, value: float = 0.0) -> None:
    module.padding = 0 if isinstance(module, torch.nn.MaxPool2d) else (0, 0)
    module.register_forward_pre_hook(SamePadding(kernel_size, stride, value))


def use_same_padding(model: torch.nn.Module) -> torch.nn.Module:
    """Turn a torchvision ResNet into the MindSpore tutorial's network: the stem conv, the max-pool and every
    strided 3x3 conv pad ``'same'`` (asymmetric at stride 2); 1x1 convs have no padding in either convention.
    Parameter names and shapes are unchanged (hooks, not new modules)."""
    _pad_same(model.conv1, 7, 2)
    _pad_same(model.maxpool, 3, 2, value=float("-inf"))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3) and module.stride == (2, 2):
            _pad_same(module, 3, 2)
    return model


def _torchvision(spec: ArchSpec, num_classes: int, padding: str, **kwargs) -> torch.nn.Module:
    """``torchvision.models.get_model(<arch>, weights=None, num_classes=...)``: the real torchvision network."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if padding == "same" and spec.family != "resnet":
        raise ValueError(f"{spec.name} has only torch-style (explicit) padding, got padding={padding!r}")
    if kwargs and spec.family == "resnet":
        raise ValueError(f"{spec.name} takes no {', '.join(kwargs)} argument")
    model = torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes, **kwargs)
    return use_same_padding(model) if padding == "same" else model


def _small(spec: ArchSpec, num_classes: int, padding: str, **kwargs) -> torch.nn.Module:
    if padding != "torch":
        raise ValueError(f"{spec.name} has only torch-style (explicit) padding, got padding={padding!r}")
    if kwargs:
        raise ValueError(f"{spec.name} takes no {', '.join(kwargs)} argument")
    net = SeqNet if spec.family == "seq" else PairNet
    return net(spec.layout, num_classes)


#: architecture family -> torch builder (``builder(spec, num_classes, padding, **kwargs)``); the architectures
#: themselves are the specs of :mod:`ms_transfer.core.archs`
FAMILY_BUILDERS = {"resnet": _torchvision, "vgg": _torchvision, "seq": _small, "pair": _small}


def build_model(arch: str, num_classes: Optional[int] = None, padding: str = "torch", **kwargs) -> torch.nn.Module:
    """The torch network of a registered architecture: torchvision's own model for the ResNet family (ResNet,
    ResNeXt, Wide ResNet) and VGG (``padding="same"``: see :func:`use_same_padding`), the small networks from their
    spec. ``num_classes`` defaults to the architecture's; ``kwargs`` go to a VGG's torchvision builder
    (``dropout``)."""
    spec = get_arch(arch)
    return FAMILY_BUILDERS[spec.family](spec, spec.default_classes if num_classes is None else num_classes,
                                        padding, **kwargs)


def _trunk(spec: SeqSpec) -> torch.nn.Sequential:
    """The spec's trunk: named layers in order (parameter names ``<attribute>.<layer>.*``)."""
    layers, channels = OrderedDict(), spec.in_channels
    for name, kind, args in spec.layers:
        if kind == "conv":
            out, kernel, padding = args
            layers[name] = torch.nn.Conv2d(channels, out, kernel, padding=padding)
            channels = out
        elif kind == "bn":
            layers[name] = torch.nn.BatchNorm2d(channels, eps=args[0], momentum=args[1])
        elif kind == "relu":
            layers[name] = torch.nn.ReLU()
        elif kind == "maxpool":
            layers[name] = torch.nn.MaxPool2d(args[0])
        elif kind == "flatten":
            layers[name] = torch.nn.Flatten()
        else:
            raise ValueError(f"{spec.name}: unknown layer kind {kind!r} ({name})")
    return torch.nn.Sequential(layers)


def _head(layers) -> torch.nn.Sequential:
    make = {"relu": lambda: torch.nn.ReLU(), "dropout": lambda p: torch.nn.Dropout(p),
            "dense": lambda i, o: torch.nn.Linear(i, o)}
    return torch.nn.Sequential(*[make[kind](*args) for kind, args in layers])


class SeqNet(torch.nn.Module):
    """A small network of :data:`ms_transfer.core.archs.SEQ_SPECS` (the seeds' networks, which torchvision does
    not have), built from the same spec as ``ms_transfer.models.seq``: ``features`` (named layers) and ``fc``."""

    def __init__(self, spec: SeqSpec, num_classes: int = 10) -> None:
        super().__init__()
        self.arch, self.num_classes, self.num_features = spec.name, num_classes, spec.feature_dim()
        self.features = _trunk(spec)
        self.fc = _head(spec.head_layers(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class PairNet(torch.nn.Module):
    """Seed 000's digit adder from its :class:`~ms_transfer.core.archs.PairSpec` (as ``ms_transfer.models.seq``):
    ``branch_a``, ``branch_b`` (separate parameters), concatenated features, head ``fc`` -> (N, 1)."""

    def __init__(self, spec: PairSpec, num_classes: int = 1) -> None:
        super().__init__()
        if num_classes != spec.outputs:
            raise ValueError(f"{spec.name} has {spec.outputs} output(s) (the sum, or the 19 sums' logits), got "
                             f"num_classes={num_classes}")
        self.arch, self.num_classes, self.num_features = spec.name, spec.outputs, spec.feature_dim()
        self.branch_a, self.branch_b = _trunk(spec.branch_spec), _trunk(spec.branch_spec)
        self.fc = _head(spec.head_layers(spec.outputs))

    def forward_features(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_a(a), self.branch_b(b)), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(a, b))
