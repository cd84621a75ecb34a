"""One place per architecture: :class:`ArchSpec`, its pretrained :class:`WeightsEntry` list, and their registries.

An architecture is everything both frameworks, the converter, the loop and the parity suite need to know about a
network, stated once (in the spirit of timm's ``pretrained_cfg`` and torchvision's ``Weights`` enums, hung off the
model they belong to)::

    register_arch(ArchSpec(name="resnext50_32x4d", family="resnet",
                           layout=ResNetLayout("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
                           weights=(WeightsEntry(...), ...)))

Each framework maps a ``family`` to one builder (``ms_transfer.models``: a MindSpore cell;
``torch_reference.models``: the torchvision model), so a new member of an existing family is one spec and no code.
The declarations live in :mod:`ms_transfer.core.archs`; import that module (not this one) to look them up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .checkpoint_io import CheckpointError
from .presets import IMAGENET_MEAN, IMAGENET_STD

#: what a run learns: ``classify`` (one image -> class logits, cross-entropy), ``digit_sum`` (a pair of digit
#: images -> their sum, MSE) or ``digit_sum_class`` (a pair of digit images -> logits over the 19 sums,
#: cross-entropy)
TASKS = ("classify", "digit_sum", "digit_sum_class")
#: the tasks whose samples are pairs of digit images
PAIR_TASKS = ("digit_sum", "digit_sum_class")
#: how tensor names follow from the layout (:mod:`ms_transfer.core.naming`): ``resnet`` renders structural roles
#: per scheme (``bn1`` / ``norm`` / ...); ``plain`` uses module paths, where only BatchNorm tensor names differ
NAMING_RULES = ("resnet", "plain")


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained weight file of an architecture and everything needed to use it."""

    name: str
    arch: str
    url: str
    #: full sha256 hex digest, or a prefix of it (torchvision puts the first 8 hex digits in its file names)
    sha256: Optional[str]
    naming: str                      # parameter naming scheme of the file (ms_transfer.core.naming.SCHEMES)
    padding: str                     # "torch" (torchvision's) or "same" (the MindSpore tutorial's network)
    num_classes: int
    classes: str                     # which label set the head predicts
    resize_size: int = 256           # eval transform: shorter side, then center crop
    crop_size: int = 224
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    meta: Dict[str, object] = field(default_factory=dict)
    #: other names ``--pretrained`` accepts (e.g. torchvision's ``ResNet50_Weights.IMAGENET1K_V2``)
    aliases: Tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The file's name (the URL's basename)."""
        return Path(self.url.split("?")[0]).name

    def describe(self) -> str:
        """One line for logs and ``--help``."""
        return (f"{self.name}: {self.arch}, {self.num_classes} classes ({self.classes}), {self.naming} names, "
                f"{self.padding} padding, eval resize {self.resize_size} crop {self.crop_size}")


@dataclass(frozen=True)
class InputSpec:
    """What a network takes: ``count`` images of ``channels`` channels, ``size`` x ``size`` pixels (``None``: any
    size of at least ``min_size``, as the ResNets' and VGGs' adaptive pooling allows)."""

    channels: int = 3
    size: Optional[int] = None
    count: int = 1
    min_size: int = 32


@dataclass(frozen=True)
class ArchSpec:
    """Everything about one architecture (see the module docstring)."""

    name: str
    #: the builder each framework maps it to: ``resnet``, ``vgg``, ``seq`` (small network), ``pair`` (digit adder)
    family: str
    #: the family's plain-data shape (:mod:`ms_transfer.core.layouts`)
    layout: Any
    #: the head module: what ``forward_head`` applies, the frozen-trunk fast path trains and transfer replaces
    head: str = "fc"
    task: str = "classify"
    input: InputSpec = InputSpec()
    naming: str = "resnet"
    #: the class count a builder uses when none is given
    default_classes: int = 1000
    weights: Tuple[WeightsEntry, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.naming not in NAMING_RULES:
            raise ValueError(f"{self.name}: naming must be one of {', '.join(NAMING_RULES)}, got {self.naming!r}")
        for entry in self.weights:
            if entry.arch != self.name:
                raise ValueError(f"weights entry {entry.name!r} is for {entry.arch!r}, not {self.name!r}")


_ARCHS: Dict[str, ArchSpec] = {}
#: every weights entry by name, and every accepted spelling (lower case) -> entry name
WEIGHTS: Dict[str, WeightsEntry] = {}
_ALIASES: Dict[str, str] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` (and its weights entries) to the registry; a name already taken is an error."""
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} is already registered; give the new one another name")
    keys = [key.lower() for entry in spec.weights for key in (entry.name, *entry.aliases)]
    taken = [key for key in keys if key in _ALIASES] + [key for i, key in enumerate(keys) if key in keys[:i]]
    if taken:  # checked before anything is registered: a refused spec leaves no entry behind
        raise ValueError(f"{spec.name}: weights name {taken[0]!r} is already registered")
    for entry in spec.weights:
        register_weights(entry)
    _ARCHS[spec.name] = spec
    return spec


def get_arch(name: str) -> ArchSpec:
    """The spec called ``name``; a clear error listing the registered ones otherwise."""
    try:
        return _ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown arch {name!r}; choose one of {', '.join(_ARCHS)}") from None


def find_arch(name: Optional[str]) -> Optional[ArchSpec]:
    """The spec called ``name``, ``None`` for an unregistered name (a user's own model)."""
    return _ARCHS.get(name or "")


def list_archs(family: Optional[str] = None) -> List[str]:
    """Names of every registered architecture (of ``family``), in registration order."""
    return [name for name, spec in _ARCHS.items() if family is None or spec.family == family]


def register_weights(entry: WeightsEntry, *aliases: str) -> WeightsEntry:
    """Add ``entry`` to the weights table under its name, its ``aliases`` and ``aliases``; a name already taken is an
    error and registers nothing. Entries normally come in through their architecture's spec (:func:`register_arch`);
    this is for files of your own."""
    keys = (entry.name, *aliases, *entry.aliases)
    for key in keys:
        if key.lower() in _ALIASES:
            raise ValueError(f"weights name {key!r} is already registered (for {_ALIASES[key.lower()]!r})")
    WEIGHTS[entry.name] = entry
    for key in keys:
        _ALIASES[key.lower()] = entry.name
    return entry


def find_weights(name: str) -> Optional[WeightsEntry]:
    """The entry called ``name`` (case-insensitive, any alias), ``None`` if there is none."""
    key = _ALIASES.get(str(name).lower())
    return WEIGHTS[key] if key else None


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name`` (case-insensitive; torchvision spellings such as ``ResNet50_Weights.IMAGENET1K_V2``
    work); a clear error listing the entries otherwise."""
    entry = find_weights(name)
    if entry is None:
        raise CheckpointError(f"unknown pretrained weights {name!r}: not a file and not an entry of the weights "
                              f"table; entries: {', '.join(sorted(WEIGHTS))}")
    return entry


def list_weights(arch: Optional[str] = None) -> List[WeightsEntry]:
    """Every entry (of ``arch``), sorted by name."""
    return [WEIGHTS[n] for n in sorted(WEIGHTS) if arch is None or WEIGHTS[n].arch == arch]
