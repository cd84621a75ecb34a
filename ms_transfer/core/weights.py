"""The pretrained-weights table, in the spirit of torchvision's ``Weights`` enums and timm's ``pretrained_cfg``.

Each :class:`WeightsEntry` says where a weight file comes from (URL, sha256 or torchvision's sha256 prefix),
how to read it (naming scheme, padding convention of the network it was trained in, class count) and how its
network expects images (eval resize, crop, mean/std). ``--pretrained NAME`` resolves through it:
:func:`resolve_pretrained` returns a verified local file, downloaded once into
``<cache>/weights/<entry name>/`` (keyed by entry, so two entries never share a file), or, offline, fails in
seconds with a message naming the exact file to place there. Plain paths pass through unchanged.
"""
from __future__ import annotations

import logging
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .checkpoint_io import CheckpointError
from .download import DownloadError, download_file, file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the MindSpore ResNet50 tutorial's ImageNet-pretrained checkpoint (tutorial parameter names)
TUTORIAL_CKPT_URL = ("https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/notebook/models/application/"
                     "resnet50_224_new.ckpt")


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained weight file and everything needed to use it."""

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

    @property
    def filename(self) -> str:
        """The file's name (the URL's basename)."""
        return Path(self.url.split("?")[0]).name

    def describe(self) -> str:
        """One line for logs and ``--help``."""
        return (f"{self.name}: {self.arch}, {self.num_classes} classes ({self.classes}), {self.naming} names, "
                f"{self.padding} padding, eval resize {self.resize_size} crop {self.crop_size}")


WEIGHTS: Dict[str, WeightsEntry] = {}
_ALIASES: Dict[str, str] = {}


def register_weights(entry: WeightsEntry, *aliases: str) -> WeightsEntry:
    """Add ``entry`` to the table; a name (or alias) already taken is an error."""
    for key in (entry.name, *aliases):
        if key.lower() in _ALIASES:
            raise ValueError(f"weights name {key!r} is already registered (for {_ALIASES[key.lower()]!r})")
    WEIGHTS[entry.name] = entry
    for key in (entry.name, *aliases):
        _ALIASES[key.lower()] = entry.name
    return entry


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name`` (case-insensitive; torchvision spellings such as ``ResNet50_Weights.IMAGENET1K_V2``
    work); a clear error listing the entries otherwise."""
    key = _ALIASES.get(name.lower())
    if key is None:
        raise CheckpointError(f"unknown pretrained weights {name!r}: not a file and not an entry of the weights "
                              f"table; entries: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[key]


def list_weights(arch: Optional[str] = None) -> List[WeightsEntry]:
    """Every entry (of ``arch``), sorted by name."""
    return [WEIGHTS[n] for n in sorted(WEIGHTS) if arch is None or WEIGHTS[n].arch == arch]


def entry_for_url(url: str) -> Optional[WeightsEntry]:
    """The entry whose URL is ``url`` (so a config giving the tutorial's URL gets the tutorial's entry)."""
    return next((e for e in WEIGHTS.values() if e.url == url), None)


def _register_torchvision() -> None:
    # torchvision/models/resnet.py (0.29): URL, resize (232 for the V2 recipes) and top-1 accuracy of each entry.
    table = [
        ("resnet18", "V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth", 256, 69.758),
        ("resnet34", "V1", "https://download.pytorch.org/models/resnet34-b627a593.pth", 256, 73.314),
        ("resnet50", "V1", "https://download.pytorch.org/models/resnet50-0676ba61.pth", 256, 76.130),
        ("resnet50", "V2", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", 232, 80.858),
        ("resnet101", "V1", "https://download.pytorch.org/models/resnet101-63fe2227.pth", 256, 77.374),
        ("resnet101", "V2", "https://download.pytorch.org/models/resnet101-cd907fc2.pth", 232, 81.886),
        ("resnet152", "V1", "https://download.pytorch.org/models/resnet152-394f9c45.pth", 256, 78.312),
        ("resnet152", "V2", "https://download.pytorch.org/models/resnet152-f82ba261.pth", 232, 82.284),
    ]
    # torchvision/models/vgg.py (0.29): IMAGENET1K_V1 of every depth (eval transform: resize 256, crop 224, ImageNet
    # mean/std). VGG16_Weights.IMAGENET1K_FEATURES is left out: its classifier is NaN and its inputs are 0-255.
    table += [
        ("vgg11", "V1", "https://download.pytorch.org/models/vgg11-8a719046.pth", 256, 69.020),
        ("vgg11_bn", "V1", "https://download.pytorch.org/models/vgg11_bn-6002323d.pth", 256, 70.370),
        ("vgg13", "V1", "https://download.pytorch.org/models/vgg13-19584684.pth", 256, 69.928),
        ("vgg13_bn", "V1", "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth", 256, 71.586),
        ("vgg16", "V1", "https://download.pytorch.org/models/vgg16-397923af.pth", 256, 71.592),
        ("vgg16_bn", "V1", "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth", 256, 73.360),
        ("vgg19", "V1", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", 256, 72.376),
        ("vgg19_bn", "V1", "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth", 256, 74.218),
    ]
    for arch, version, url, resize, acc in table:
        prefix = Path(url).stem.rsplit("-", 1)[1]  # torchvision's file names end in the sha256's first 8 digits
        family = "ResNet" if arch.startswith("resnet") else "VGG"
        enum = f"{family}{arch[len(family):].upper()}_Weights.IMAGENET1K_{version}"
        register_weights(WeightsEntry(
            name=f"{arch}_imagenet1k_{version.lower()}", arch=arch, url=url, sha256=prefix, naming="torchvision",
            padding="torch", num_classes=1000, classes="imagenet1k", resize_size=resize,
            meta={"acc@1": acc, "source": f"torchvision {enum}"}), enum)


register_weights(WeightsEntry(
    name="resnet50_tutorial", arch="resnet50", url=TUTORIAL_CKPT_URL, sha256=None, naming="ms_transfer",
    padding="same", num_classes=1000, classes="imagenet1k",
    meta={"source": "MindSpore ResNet50 tutorial (resnet50_224_new.ckpt); its network pads 'same'"}),
    "resnet50_224_new", "tutorial")
_register_torchvision()


def entry_eval_transform(pretrained: Optional[str]) -> Tuple[str, int]:
    """``(normalize preset, eval resize for a 224 px crop)`` of the weights entry named by ``pretrained`` (the
    config's ``auto`` transform); ImageNet's and 256 for a file, a URL or no pretrained weights."""
    from .data import DEFAULT_EVAL_RESIZE, NORMALIZATIONS

    key = _ALIASES.get(str(pretrained).lower()) if pretrained else None
    if key is None:
        return "imagenet", DEFAULT_EVAL_RESIZE
    entry = WEIGHTS[key]
    preset = next((name for name, (mean, std) in NORMALIZATIONS.items()
                   if tuple(mean) == tuple(entry.mean) and tuple(std) == tuple(entry.std)), None)
    if preset is None:
        raise CheckpointError(f"weights entry {entry.name!r} normalises with mean {entry.mean}, std {entry.std}, "
                              f"which no normalize preset has ({', '.join(NORMALIZATIONS)}); add one")
    return preset, round(entry.resize_size * 224 / entry.crop_size)


def url_cache_path(url: str, cache_dir: Path) -> Path:
    """Where a plain ``--pretrained-url`` download is kept: keyed by the whole URL, not only its basename."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_dir) / "urls" / digest / Path(url.split("?")[0]).name


def resolve_pretrained(spec: str, cache_dir: Path, download: bool = True) -> Tuple[str, Optional[WeightsEntry]]:
    """``(local path, entry or None)`` for ``--pretrained SPEC``: an existing file, or a weights-table entry.

    An entry's file is fetched once into ``cache_dir/weights/<name>/<file>`` and verified (sha256 or its
    torchvision prefix); a file already there is verified again before use, so a damaged one is fetched anew.
    Offline, :class:`DownloadError` names the URL and the exact path to place the file at.
    """
    if Path(spec).expanduser().is_file():
        return str(Path(spec).expanduser()), None
    looks_like_path = any(sep in spec for sep in "/\\") or Path(spec).suffix.lower() in (
        ".ckpt", ".pth", ".pt", ".safetensors")
    if looks_like_path and spec.lower() not in _ALIASES:
        raise CheckpointError(f"{spec}: no such file (pretrained weights); give an existing weight file or an "
                              f"entry of the weights table: {', '.join(sorted(WEIGHTS))}")
    entry = get_weights(spec)
    target = Path(cache_dir) / "weights" / entry.name / entry.filename
    if target.is_file():
        if entry.sha256 is None or file_sha256(target).startswith(entry.sha256.lower()):
            return str(target), entry
        logging.getLogger(__name__).info(f"{target}: sha256 does not match the weights entry {entry.name!r}; "
                                         "downloading it again")
        target.unlink()
    if not download:
        raise DownloadError(f"pretrained weights {entry.name!r} are not in the cache; place {entry.url} at {target}")
    download_file(entry.url, target, sha256=entry.sha256)
    return str(target), entry


def resolve_padding(padding: str, entry: Optional[WeightsEntry]) -> Tuple[str, str]:
    """``(padding, why)`` for the config's ``padding`` (``auto``: the weights entry's convention, else torch)."""
    if padding != "auto":
        return padding, f"padding {padding} (configured)"
    if entry is not None:
        return entry.padding, f"padding {entry.padding} (the convention of weights entry {entry.name!r})"
    return "torch", "padding torch (default)"
