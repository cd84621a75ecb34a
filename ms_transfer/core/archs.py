"""Every architecture the project builds, each declared once as an :class:`~ms_transfer.core.spec.ArchSpec`.

Adding a member of an existing family (another ResNet width or depth, another VGG) is one ``register_arch`` call
here; a new family is a layout (:mod:`ms_transfer.core.layouts`) plus one builder per framework
(``ms_transfer.models`` and ``torch_reference.models`` register theirs by family). Naming, conversion, arch
detection, freezing presets, the loop's task and input checks, the weights table and the parity suite all read the
specs through this module.

The lookups at the end (``seq_spec``, ``vgg_spec``, ``head_module``, ``task_of``, ...) are views of the registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .layouts import Layer, PairSpec, ResNetLayout, SeqSpec, VggSpec
from .spec import (IMAGENET_MEAN, IMAGENET_STD, ArchSpec, InputSpec, WeightsEntry, find_arch, get_arch, list_archs,
                   register_arch)

__all__ = ["ArchSpec", "InputSpec", "WeightsEntry", "ResNetLayout", "VggSpec", "SeqSpec", "PairSpec", "get_arch",
           "find_arch", "list_archs", "register_arch", "seq_spec", "vgg_spec", "pair_spec", "resnet_layout",
           "head_module", "input_spec", "task_of", "SEQ_SPECS", "PAIR_SPECS", "VGG_SPECS", "TUTORIAL_CKPT_URL",
           "IMAGENET_MEAN", "IMAGENET_STD"]

#: the MindSpore ResNet50 tutorial's ImageNet-pretrained checkpoint (tutorial parameter names)
TUTORIAL_CKPT_URL = ("https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/notebook/models/application/"
                     "resnet50_224_new.ckpt")


def torchvision_weights(arch: str, enum: str, table: Sequence[Tuple[str, str, int, float]]) -> Tuple[WeightsEntry, ...]:
    """The entries of torchvision's ``<enum>`` (e.g. ``ResNet50_Weights``): ``(version, url, eval resize, top-1)``
    rows, each named ``<arch>_imagenet1k_<version>`` and also accepted as ``<enum>.IMAGENET1K_<version>``. The
    sha256 is the 8-digit prefix torchvision puts in its file names (tests/test_archs.py checks every row against
    the installed torchvision)."""
    return tuple(WeightsEntry(
        name=f"{arch}_imagenet1k_{version.lower()}", arch=arch, url=url, sha256=Path(url).stem.rsplit("-", 1)[1],
        naming="torchvision", padding="torch", num_classes=1000, classes="imagenet1k", resize_size=resize,
        meta={"acc@1": acc, "source": f"torchvision {enum}.IMAGENET1K_{version}"},
        aliases=(f"{enum}.IMAGENET1K_{version}",)) for version, url, resize, acc in table)


_TV = "https://download.pytorch.org/models/"


def _resnet(name: str, layout: ResNetLayout, enum: str, table, doc: str, extra=()) -> ArchSpec:
    return register_arch(ArchSpec(name=name, family="resnet", layout=layout, doc=doc,
                                  weights=tuple(extra) + torchvision_weights(name, enum, table)))


# -- the ResNet family (torchvision/models/resnet.py 0.29: URLs, eval resize -- 232 for the V2 recipes -- and top-1)
_resnet("resnet18", ResNetLayout("basic", (2, 2, 2, 2)), "ResNet18_Weights",
        [("V1", _TV + "resnet18-f37072fd.pth", 256, 69.758)], "ResNet-18 (basic blocks [2, 2, 2, 2])")
_resnet("resnet34", ResNetLayout("basic", (3, 4, 6, 3)), "ResNet34_Weights",
        [("V1", _TV + "resnet34-b627a593.pth", 256, 73.314)], "ResNet-34 (basic blocks [3, 4, 6, 3])")
_resnet("resnet50", ResNetLayout("bottleneck", (3, 4, 6, 3)), "ResNet50_Weights",
        [("V1", _TV + "resnet50-0676ba61.pth", 256, 76.130), ("V2", _TV + "resnet50-11ad3fa6.pth", 232, 80.858)],
        "ResNet-50 (bottlenecks [3, 4, 6, 3]); the MindSpore tutorial's resnet50_224_new.ckpt loads into it",
        extra=[WeightsEntry(
            name="resnet50_tutorial", arch="resnet50", url=TUTORIAL_CKPT_URL, sha256=None, naming="ms_transfer",
            padding="same", num_classes=1000, classes="imagenet1k", aliases=("resnet50_224_new", "tutorial"),
            meta={"source": "MindSpore ResNet50 tutorial (resnet50_224_new.ckpt); its network pads 'same'"})])
_resnet("resnet101", ResNetLayout("bottleneck", (3, 4, 23, 3)), "ResNet101_Weights",
        [("V1", _TV + "resnet101-63fe2227.pth", 256, 77.374), ("V2", _TV + "resnet101-cd907fc2.pth", 232, 81.886)],
        "ResNet-101 (bottlenecks [3, 4, 23, 3])")
_resnet("resnet152", ResNetLayout("bottleneck", (3, 8, 36, 3)), "ResNet152_Weights",
        [("V1", _TV + "resnet152-394f9c45.pth", 256, 78.312), ("V2", _TV + "resnet152-f82ba261.pth", 232, 82.284)],
        "ResNet-152 (bottlenecks [3, 8, 36, 3])")
_resnet("resnext50_32x4d", ResNetLayout("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
        "ResNeXt50_32X4D_Weights",
        [("V1", _TV + "resnext50_32x4d-7cdf4587.pth", 256, 77.618),
         ("V2", _TV + "resnext50_32x4d-1a0047aa.pth", 232, 81.198)],
        "ResNeXt-50 32x4d (bottlenecks [3, 4, 6, 3], 3x3 convs in 32 groups of width 4 per 64 planes)")
_resnet("resnext101_32x8d", ResNetLayout("bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8),
        "ResNeXt101_32X8D_Weights",
        [("V1", _TV + "resnext101_32x8d-8ba56ff5.pth", 256, 79.312),
         ("V2", _TV + "resnext101_32x8d-110c445d.pth", 232, 82.834)],
        "ResNeXt-101 32x8d (bottlenecks [3, 4, 23, 3], 32 groups of width 8)")
_resnet("resnext101_64x4d", ResNetLayout("bottleneck", (3, 4, 23, 3), groups=64, width_per_group=4),
        "ResNeXt101_64X4D_Weights", [("V1", _TV + "resnext101_64x4d-173b62eb.pth", 232, 83.246)],
        "ResNeXt-101 64x4d (bottlenecks [3, 4, 23, 3], 64 groups of width 4)")
_resnet("wide_resnet50_2", ResNetLayout("bottleneck", (3, 4, 6, 3), width_per_group=128), "Wide_ResNet50_2_Weights",
        [("V1", _TV + "wide_resnet50_2-95faca4d.pth", 256, 78.468),
         ("V2", _TV + "wide_resnet50_2-9ba9bcbe.pth", 232, 81.602)],
        "Wide ResNet-50-2 (bottlenecks [3, 4, 6, 3], inner widths doubled)")
_resnet("wide_resnet101_2", ResNetLayout("bottleneck", (3, 4, 23, 3), width_per_group=128),
        "Wide_ResNet101_2_Weights",
        [("V1", _TV + "wide_resnet101_2-32ee1156.pth", 256, 78.848),
         ("V2", _TV + "wide_resnet101_2-d733dc28.pth", 232, 82.510)],
        "Wide ResNet-101-2 (bottlenecks [3, 4, 23, 3], inner widths doubled)")

# -- VGG (torchvision/models/vgg.py 0.29 ``cfgs``: conv widths, "M" = 2x2 max-pool). IMAGENET1K_V1 of every depth
# (eval resize 256, crop 224, ImageNet mean/std). VGG16_Weights.IMAGENET1K_FEATURES is left out: its classifier is
# NaN and its inputs are 0-255.
_VGG_CFGS: Dict[str, Tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
_VGG_WEIGHTS = {
    "vgg11": ("8a719046", 69.020), "vgg11_bn": ("6002323d", 70.370), "vgg13": ("19584684", 69.928),
    "vgg13_bn": ("abd245e5", 71.586), "vgg16": ("397923af", 71.592), "vgg16_bn": ("6c64b313", 73.360),
    "vgg19": ("dcbb9e9d", 72.376), "vgg19_bn": ("c79401a0", 74.218),
}
for _depth, _cfg in _VGG_CFGS.items():
    for _bn in (False, True):
        _name = f"{_depth}{'_bn' if _bn else ''}"
        _hash, _acc = _VGG_WEIGHTS[_name]
        register_arch(ArchSpec(
            name=_name, family="vgg", layout=VggSpec(_name, _cfg, _bn), head="classifier", naming="plain",
            doc=f"VGG-{_depth[3:]} (configuration {'ABDE'['vgg11 vgg13 vgg16 vgg19'.split().index(_depth)]})"
                f"{' with BatchNorm' if _bn else ''}",
            weights=torchvision_weights(_name, f"VGG{_name[3:].upper()}_Weights",
                                        [("V1", f"{_TV}{_name}-{_hash}.pth", 256, _acc)])))


# -- the small networks of the source articles (1x28x28 digits)
def _conv_bn_relu(i: int, out: int, eps: float, momentum: float) -> Tuple[Layer, ...]:
    return ((f"conv{i}", "conv", (out, 3, 1)), (f"bn{i}", "bn", (eps, momentum)), (f"relu{i}", "relu", ()))


# Keras BatchNormalization: epsilon=1e-3, momentum=0.99 (weight of the *old* average) -> torch momentum 0.01
_KERAS_BN = (1e-3, 0.01)
_DIGITS = InputSpec(channels=1, size=28)
# The Keras Fashion-MNIST network (Conv16-BN-ReLU-MaxPool, Conv32-BN-ReLU-MaxPool, Conv120-BN-ReLU, Flatten,
# Dense256-ReLU, Dropout 0.2, Dense), 3x3 'same' convs at stride 1.
_FASHION = SeqSpec(
    "fashion_cnn", 1, 28,
    _conv_bn_relu(1, 16, *_KERAS_BN) + (("pool1", "maxpool", (2,)),)
    + _conv_bn_relu(2, 32, *_KERAS_BN) + (("pool2", "maxpool", (2,)),)
    + _conv_bn_relu(3, 120, *_KERAS_BN) + (("flatten", "flatten", ()),),
    hidden=(256,), dropout=0.2, doc="the Keras Fashion-MNIST CNN (Keras BN constants), 1x28x28 input")
# The digit recogniser (conv(1->4, 5x5) - pool - conv(4->8, 5x5) - pool, Dense 512, dropout 0.5), whose trunk is
# each branch of the digit adder.
_DIGIT = SeqSpec(
    "digit_cnn", 1, 28,
    (("conv1", "conv", (4, 5, 2)), ("relu1", "relu", ()), ("pool1", "maxpool", (2,)),
     ("conv2", "conv", (8, 5, 2)), ("relu2", "relu", ()), ("pool2", "maxpool", (2,)),
     ("flatten", "flatten", ())),
    hidden=(512,), dropout=0.5, doc="the MNIST digit recogniser, 1x28x28 input")
for _seq in (_FASHION, _DIGIT):
    register_arch(ArchSpec(name=_seq.name, family="seq", layout=_seq, naming="plain", input=_DIGITS,
                           default_classes=10, doc=_seq.doc))
# The digit adder's heads: "small" (2 layers) and "large" (4 layers, the article's 1024-256-64-1)
for _pair in (PairSpec("digit_adder", _DIGIT, hidden=(128,), dropout=0.5,
                       doc="the digit adder, 2-layer head: two 1x28x28 digits -> their sum"),
              PairSpec("digit_adder4", _DIGIT, hidden=(1024, 256, 64), dropout=0.5,
                       doc="the digit adder, 4-layer head (1024-256-64-1)"),
              # not the seed's: its regression head stays far below the recogniser (docs/studies.md, the digit
              # adder); the same 2-layer head classifying the 19 sums learns them
              PairSpec("digit_adder_cls", _DIGIT, hidden=(128,), dropout=0.5, outputs=19,
                       doc="the digit adder, 2-layer head over the 19 sums (cross-entropy): two 1x28x28 digits -> "
                           "logits of the sums 0..18")):
    register_arch(ArchSpec(name=_pair.name, family="pair", layout=_pair, naming="plain",
                           task="digit_sum" if _pair.outputs == 1 else "digit_sum_class",
                           input=InputSpec(channels=1, size=28, count=2), default_classes=_pair.outputs,
                           doc=_pair.doc))


# -- views of the registry
def _layouts(family: str) -> Dict:
    return {name: get_arch(name).layout for name in list_archs(family)}


#: name -> layout of each small network / digit adder / VGG (read-only views, kept for existing callers)
SEQ_SPECS: Dict[str, SeqSpec] = _layouts("seq")
PAIR_SPECS: Dict[str, PairSpec] = _layouts("pair")
VGG_SPECS: Dict[str, VggSpec] = _layouts("vgg")


def _layout_of(arch: Optional[str], family: str):
    spec = find_arch(arch)
    return spec.layout if spec is not None and spec.family == family else None


def resnet_layout(arch: str) -> Optional[ResNetLayout]:
    """The layout of a ResNet-family architecture, ``None`` for other architectures."""
    return _layout_of(arch, "resnet")


def vgg_spec(arch: str) -> Optional[VggSpec]:
    """The spec of a VGG, ``None`` for other architectures."""
    return _layout_of(arch, "vgg")


def seq_spec(arch: str) -> Optional[SeqSpec]:
    """The spec of a small network, ``None`` for other architectures (the ResNets)."""
    return _layout_of(arch, "seq")


def pair_spec(arch: str) -> Optional[PairSpec]:
    """The spec of a two-input network (the digit adder), ``None`` for other architectures."""
    return _layout_of(arch, "pair")


def head_module(arch: Optional[str]) -> str:
    """Name of ``arch``'s head module: ``classifier`` for VGG, ``fc`` otherwise (also for unknown models)."""
    spec = find_arch(arch)
    return spec.head if spec is not None else "fc"


def input_spec(arch: str) -> Tuple[int, Optional[int]]:
    """``(channels, fixed input size or None)`` of an architecture (ResNets and VGGs: 3 channels, any size >=
    32)."""
    spec = find_arch(arch)
    return (spec.input.channels, spec.input.size) if spec is not None else (3, None)


def task_of(arch: str) -> str:
    """``classify`` (cross-entropy, one image in), ``digit_sum`` (MSE on the sum of a pair of digits) or
    ``digit_sum_class`` (cross-entropy over the 19 sums of a pair of digits)."""
    spec = find_arch(arch)
    return spec.task if spec is not None else "classify"
