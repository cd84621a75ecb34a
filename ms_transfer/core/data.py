"""ImageFolder-style datasets, framework-neutral: layout, scanning, validation, sample order, eval geometry.

The MindSpore pipeline (:mod:`ms_transfer.mindspore_backend.data`) and the torch loader (:mod:`torch_reference.data`)
are both built from what this module scans, once per run, so both frameworks see the same files, labels and batches.

Expected layout (class indices come from the sorted class folder names)::

    DATA_DIR/train/<class>/*.jpg|jpeg|png|bmp|webp   (extension case-insensitive)
    DATA_DIR/val/<class>/*

``DATA_DIR`` may also be a parent folder that holds the dataset through a chain of single
subfolders, e.g. the tutorial's zip unpacks to ``datasets-Canidae/data/Canidae/{train,val}``;
:func:`resolve_data_root` finds the folder that really has ``train/`` and ``val/`` and logs it.

Robustness policy:

* Hidden entries (``.DS_Store``, ``.ipynb_checkpoints``, ``__MACOSX`` ...) are ignored silently.
* Any other file without an image extension, and any image Pillow cannot open/verify, is
  *skipped*: returned in ``skipped`` with a reason and reported in one ``warnings.warn`` per split
  that names the files.
* Images are decoded with Pillow and converted to RGB exactly like torchvision's ``pil_loader``
  (so grayscale, CMYK, palette and RGBA files all work; alpha is dropped, not composited).
* A file that passed the scan but cannot be decoded later (deleted, truncated) does not stop the
  epoch: a warning is logged and the next readable sample (by index, wrapping around) is used
  instead; such events are counted in ``DatasetInfo.load_failures``.

Eval resize (``resize_backend``): the deterministic val transform resizes the shorter side to
``int(S*256/224)`` and center-crops ``S``. ``"mindspore"`` (default, fast) uses MindSpore's C++
``vision.Resize``/``CenterCrop``: OpenCV-style bilinear *without* antialiasing, and a crop offset of
``floor((d-S)/2)``. torchvision resizes PIL images with Pillow's antialiased bilinear filter (its
support widens with the downscale factor) and offsets the crop by ``round((d-S)/2)``, so after a
downscale the two differ by a few grey levels on average and by tens at sharp edges and fine texture,
and by a whole pixel of shift when ``d-S = 3 (mod 4)`` (measure with ``python -m parity.pipeline``). ``"pil"`` does the
resize and crop with Pillow and torchvision's exact size/offset arithmetic, so the tensors agree with
torchvision's to float32 rounding. Training augmentation (``augment="random"``) is random and uses
MindSpore's ops either way; ``augment="shift"`` randomly translates the val transform's image by up to
``augment_shift`` pixels (zero fill; for small array datasets such as digits, where crops and flips are wrong);
``augment="none"`` trains on the deterministic val transform instead.

Shuffling is an explicit permutation, :func:`shuffle_order` ``(num_samples, seed)``, fed to the dataset as a
``SubsetSampler``: code that must reproduce an epoch's batch order and composition without decoding a single
image (the trunk-feature cache of :mod:`ms_transfer.core.feature_cache`) calls the same function.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .archs import input_spec
from .layout import LAYOUT_HELP, SPLITS, DatasetError, PathLike, resolve_data_root, visible_dirs
from .presets import DEFAULT_EVAL_RESIZE, NORMALIZATIONS
from .presets import IMAGENET_MEAN as IMAGENET_MEAN, IMAGENET_STD as IMAGENET_STD  # re-exported: the old path
from .weights import entry_eval_transform

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: splits evaluation may read: the array datasets (and any image folder) may also have ``test/``
EVAL_SPLITS = SPLITS + ("test",)
#: how the val/eval transform resizes and crops (see the module docstring)
RESIZE_BACKENDS = ("mindspore", "pil")
#: training transforms: ``random`` (RandomResizedCrop + horizontal flip), ``shift`` (the val transform's SxS
#: image translated by a uniform random (dx, dy) in [-N, N]^2 whole pixels, vacated pixels 0 before
#: normalisation: zero-pad N then a random SxS crop; N = ``augment_shift``) or ``none`` (the val transform)
AUGMENTS = ("random", "shift", "none")
#: eval transform: ``crop`` (shorter side to S*256/224, center crop S), ``exact`` (resize to SxS) or ``center``
#: (center crop S of the unresized image, zero-padded when smaller: the cats-vs-dogs article's ``CenterCrop(224)``)
RESIZES = ("crop", "exact", "center")
#: the config's ``normalize`` / ``resize`` default: the pretrained weights entry's eval transform (its mean/std;
#: ``crop`` with its resize, e.g. 232 for torchvision's ResNet V2 recipes), else ImageNet's and ``crop`` at 256
AUTO = "auto"


@dataclass
class DatasetInfo:
    """What :func:`create_dataset` found: classes, sample count, skipped files and the root used."""

    classes: List[str]
    num_samples: int
    skipped: List[Tuple[str, str]]
    root: Path
    #: Live list of ``(path, reason)`` for files that failed to decode *during iteration*.
    load_failures: List[Tuple[str, str]] = field(default_factory=list)
    #: ``(path, label)`` of every sample, in dataset index order (the scan's sorted order)
    samples: List[Tuple[str, int]] = field(default_factory=list)


def list_classes(root: PathLike, split: str) -> List[str]:
    """Sorted class folder names of ``root/split`` (``root`` may be any folder accepted by
    :func:`resolve_data_root`)."""
    split_dir = resolve_data_root(root) / split
    if not split_dir.is_dir():
        raise DatasetError(f"Split folder {split_dir} does not exist. {LAYOUT_HELP}")
    classes = [p.name for p in visible_dirs(split_dir)]
    if not classes:
        raise DatasetError(f"{split_dir} contains no class folders. {LAYOUT_HELP}")
    return classes


def check_classes_match(root: PathLike, split: str, classes: Sequence[str], source: object) -> None:
    """Raise :class:`DatasetError` unless ``root/split`` has exactly ``classes`` (those ``source`` was trained on)."""
    root = resolve_data_root(root)
    found = list_classes(root, split)
    if found != list(classes):
        raise DatasetError(f"class mismatch: {root / split} has classes {found}, but {source} was trained on "
                           f"{list(classes)}; evaluate on a dataset with exactly these class folders (same names)")


def check_same_classes(root: PathLike) -> List[str]:
    """Return the class list after checking that ``train`` and ``val`` have the same class folders;
    raises :class:`DatasetError` listing the classes missing from each split otherwise."""
    root = resolve_data_root(root)
    train, val = list_classes(root, "train"), list_classes(root, "val")
    if train != val:
        only_train = sorted(set(train) - set(val))
        only_val = sorted(set(val) - set(train))
        parts = []
        if only_train:
            parts.append(f"only in train: {only_train} (missing from {root / 'val'})")
        if only_val:
            parts.append(f"only in val: {only_val} (missing from {root / 'train'})")
        raise DatasetError(
            f"train and val class folders differ in {root}: {'; '.join(parts)}. Class indices come "
            "from the sorted folder names, so both splits must have exactly the same class folders: "
            "add the missing folders (with images) or remove the extra ones.")
    return train


def _verify_image(path: Path) -> Optional[str]:
    """Cheap validity check (header + structure, no full decode); returns a reason or None."""
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # Pillow raises many types (UnidentifiedImageError, SyntaxError, ...)
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


def _warn_skipped(split_dir: Path, skipped: Sequence[Tuple[str, str]], limit: int = 20) -> None:
    lines = [f"  {p}: {r}" for p, r in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    warnings.warn(f"Skipped {len(skipped)} file(s) in {split_dir}:\n" + "\n".join(lines),
                  stacklevel=3)


def scan_split(root: PathLike, split: str
               ) -> Tuple[List[Tuple[str, int]], List[str], List[Tuple[str, str]]]:
    """Scan ``root/split/<class>/*`` and return ``(samples, classes, skipped)``.

    ``samples`` is a sorted list of ``(path, label)`` for files that Pillow can open and verify;
    ``skipped`` lists ``(path, reason)`` for non-image extensions and unreadable images (also
    reported in one warning). Hidden files are ignored. Raises :class:`DatasetError` when the split
    folder is missing or contains no usable image.
    """
    root = resolve_data_root(root)
    classes = list_classes(root, split)
    samples, skipped = scan_classes(root / split, classes)
    return samples, classes, skipped


def scan_classes(folder: Path, classes: Sequence[str]
                 ) -> Tuple[List[Tuple[str, int]], List[Tuple[str, str]]]:
    """Scan ``folder/<class>/*`` for every class of ``classes`` (label: its index): ``(samples, skipped)`` as
    :func:`scan_split` returns them (the scan of a split folder and of a plain folder of class folders)."""
    samples: List[Tuple[str, int]] = []
    skipped: List[Tuple[str, str]] = []
    for label, cls in enumerate(classes):
        class_dir = folder / cls
        # hidden anywhere below the class folder (.ipynb_checkpoints/x.jpg, __MACOSX/...) is ignored
        files = sorted(p for p in class_dir.rglob("*") if p.is_file()
                       and not any(part.startswith((".", "__")) for part in p.relative_to(class_dir).parts))
        for path in files:
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"unsupported extension {path.suffix!r} (expected {', '.join(IMAGE_EXTENSIONS)})"
            else:
                reason = _verify_image(path)
            if reason:
                skipped.append((str(path), reason))
            else:
                samples.append((str(path), label))
    if skipped:
        _warn_skipped(folder, skipped)
    if not samples:
        raise DatasetError(f"No readable images found under {folder}. {LAYOUT_HELP}")
    return samples, skipped


def load_rgb(path: PathLike) -> np.ndarray:
    """Decode an image file with Pillow into an HWC uint8 RGB array (like torchvision's loader)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_gray(path: PathLike) -> np.ndarray:
    """Decode an image file with Pillow into an HW1 uint8 grayscale array (Pillow's ``convert("L")``)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)[:, :, None]


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a network input in both pipelines: ``channels`` (3: RGB, 1: grayscale, from the
    architecture), ``image_size``, the eval ``resize`` rule (:data:`RESIZES`) and ``normalize``
    (:data:`NORMALIZATIONS`)."""

    image_size: int
    channels: int = 3
    normalize: str = "imagenet"
    resize: str = "crop"
    eval_resize: int = DEFAULT_EVAL_RESIZE   # ``crop``: the shorter side for a 224 px crop (scaled with the size)

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise DatasetError(f"unknown normalize {self.normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
        if self.resize not in RESIZES:
            raise DatasetError(f"unknown resize {self.resize!r}; expected one of {', '.join(RESIZES)}")
        if self.channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {self.channels}")

    @property
    def mean(self) -> Tuple[float, ...]:
        return tuple(NORMALIZATIONS[self.normalize][0][: self.channels])

    @property
    def std(self) -> Tuple[float, ...]:
        return tuple(NORMALIZATIONS[self.normalize][1][: self.channels])

    def decode(self, path: PathLike) -> np.ndarray:
        """HWC uint8 array in this preprocessing's colour mode."""
        return load_rgb(path) if self.channels == 3 else load_gray(path)

    @property
    def eval_resize_size(self) -> int:
        """The shorter side before the ``crop`` policy's center crop: ``int(S * eval_resize / 224)``."""
        return eval_resize_size(self.image_size, self.eval_resize)

    @classmethod
    def from_config(cls, config: Dict, image_size: Optional[int] = None) -> "Preprocess":
        """From a run's config (a ``TrainConfig`` or its dict, as saved in checkpoints); ``auto`` (the default, and
        what keys absent from older runs mean) takes the pretrained weights entry's eval transform."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        normalize, resize = get("normalize", AUTO) or AUTO, get("resize", AUTO) or AUTO
        eval_resize = DEFAULT_EVAL_RESIZE
        if AUTO in (normalize, resize):
            entry_normalize, entry_resize = entry_eval_transform(get("pretrained", None))
            if normalize == AUTO:
                normalize = entry_normalize
            if resize == AUTO:
                resize, eval_resize = "crop", entry_resize
        return cls(int(image_size or get("image_size", 224)), input_spec(get("arch", ""))[0], normalize, resize,
                   eval_resize)


class PilResize:
    """HWC uint8 array -> resized to ``size`` x ``size`` by Pillow's bilinear filter (the ``exact`` eval resize;
    both pipelines run this same code). An image already of that size is returned untouched."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.uint8)
        if image.shape[0] == image.shape[1] == self.size:
            return image
        im = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        out = np.asarray(im.resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)
        return out[:, :, None] if out.ndim == 2 else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class CenterCrop:
    """HWC uint8 array -> its central ``size`` x ``size`` window, exactly as ``torchvision.transforms.CenterCrop``
    (the ``center`` eval transform): a side shorter than ``size`` is first zero-padded by ``(size - n) // 2``
    before and the rest after; the offset is ``round((n - size) / 2)`` (Python's round-half-to-even)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        if pad_h or pad_w:
            image = np.pad(image, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
            height, width = image.shape[:2]
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        return np.ascontiguousarray(image[top:top + self.size, left:left + self.size])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class ImageSource:
    """Random-access ``(decoded image, int32 label)`` source over scanned samples: MindSpore's
    ``GeneratorDataset`` and torch's ``Dataset`` both read through it (``decode``: :func:`load_rgb` gives HWC
    uint8 RGB arrays, torchvision's ``pil_loader`` PIL images).

    A sample that fails to decode is replaced by the next readable one (wrapping around) after a
    logged warning; the failure is appended to :attr:`load_failures`.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], decode=None):
        self.samples = list(samples)
        self.decode = decode or load_rgb
        self.load_failures: List[Tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple:
        """``(image, label)``, or ``(image_a, image_b, label)`` for a pair sample (``((path_a, path_b), sum)``)."""
        n = len(self.samples)
        for offset in range(n):
            path, label = self.samples[(int(index) + offset) % n]
            try:
                images = tuple(self.decode(p) for p in path) if isinstance(path, tuple) else (self.decode(path),)
            except Exception as exc:
                self.load_failures.append((str(path), f"{type(exc).__name__}: {exc}"))
                log.warning("Could not decode %s (%s); using the next readable image instead.", path, exc)
                continue
            return images + (np.array(label, dtype=np.int32),)
        raise DatasetError(f"None of the {n} images in this split could be decoded any more; "
                           "check that the data directory is still intact.")


def eval_resize_size(image_size: int, eval_resize: int = DEFAULT_EVAL_RESIZE) -> int:
    """Shorter-side length before the center crop: ``int(image_size * eval_resize / 224)`` (256 for 224 with
    torchvision's ImageNet recipe; 232 for its ResNet V2 weights)."""
    return int(image_size * eval_resize / 224)


def check_resize_backend(resize_backend: str) -> str:
    """Return ``resize_backend`` if it is one of :data:`RESIZE_BACKENDS`, else raise :class:`DatasetError`."""
    if resize_backend not in RESIZE_BACKENDS:
        raise DatasetError(f"Unknown resize_backend {resize_backend!r}; expected one of "
                           f"{', '.join(map(repr, RESIZE_BACKENDS))}.")
    return resize_backend


class PilResizeCenterCrop:
    """HWC uint8 RGB array -> HWC uint8 array, resized and center-cropped by Pillow exactly like
    ``torchvision.transforms.Resize(resize)`` + ``CenterCrop(crop)`` do on a PIL image.

    Written out rather than using ``vision.ToPIL()`` + ``vision.Resize``/``CenterCrop``: MindSpore's
    PIL path computes the long side as ``int(size / (w / h))``, which is one pixel short of
    torchvision's ``int(size * long / short)`` when the exact result is an integer that the division
    rounds just below (e.g. a 398x146 image at size 73); its C++ ``CenterCrop`` floors the offset.
    """

    def __init__(self, resize: int, crop: int):
        if not 0 < crop <= resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={crop}, resize={resize}")
        self.resize, self.crop = int(resize), int(crop)

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """``(width, height)`` after the resize (torchvision's ``_compute_resized_output_size``)."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.asarray(image, dtype=np.uint8))  # HxWx3 uint8 -> RGB
        size = self.output_size(*im.size)
        if size != im.size:  # torchvision returns the image untouched when it already has the size
            im = im.resize(size, Image.BILINEAR)  # antialiased in Pillow, as torchvision's PIL path
        width, height = im.size
        # torchvision pads only when the crop is larger than the image; here the short side is
        # ``resize`` >= ``crop``. Python's round() is round-half-to-even, as torchvision's.
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        return np.asarray(im.crop((left, top, left + self.crop, top + self.crop)), dtype=np.uint8)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize={self.resize}, crop={self.crop})"


def check_augment(augment: str, shift: int = 2) -> str:
    """Return ``augment`` if it is one of :data:`AUGMENTS` (and, for ``shift``, ``shift`` a whole number of
    pixels >= 1), else raise :class:`DatasetError`."""
    if augment not in AUGMENTS:
        raise DatasetError(f"Unknown augment {augment!r}; expected one of {', '.join(map(repr, AUGMENTS))}.")
    if augment == "shift" and (isinstance(shift, bool) or not isinstance(shift, int) or shift < 1):
        raise DatasetError(f"augment_shift must be a whole number of pixels >= 1 for augment='shift', got {shift!r}; "
                           "set e.g. augment_shift: 2")
    return augment


def shuffle_order(num_samples: int, seed: int) -> np.ndarray:
    """Sample indices in the order a shuffled :func:`create_dataset` with this ``seed`` yields them.

    A private ``RandomState``: independent of (and not disturbing) the global RNGs.
    """
    return np.random.RandomState(int(seed)).permutation(int(num_samples))


def batch_indices(num_samples: int, batch_size: int, seed: Optional[int], drop_remainder: bool = False
                  ) -> List[np.ndarray]:
    """Sample indices of every batch of one epoch of :func:`create_dataset` (``seed=None``: not shuffled)."""
    order = np.arange(num_samples) if seed is None else shuffle_order(num_samples, seed)
    stop = num_samples - num_samples % batch_size if drop_remainder else num_samples
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]




@dataclass
class SplitScan:
    """One split as scanned: the samples every framework's pipeline reads, and the files skipped."""

    root: Path
    split: str
    classes: List[str]
    samples: List[Tuple[str, int]]
    skipped: List[Tuple[str, str]]

    @property
    def labels(self) -> np.ndarray:
        """Labels in sample (dataset index) order, int32."""
        return np.array([label for _, label in self.samples], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.samples)


def _draw_per_class(scan: SplitScan, take: Callable[[int, int], int], rng: np.random.RandomState) -> SplitScan:
    """``take(c, n_c)`` samples of every class ``c`` (of ``n_c``), drawn with ``rng``, kept in scan order."""
    labels = scan.labels
    keep = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keep[rng.permutation(members)[: take(int(c), members.size)]] = True
    return SplitScan(scan.root, scan.split, scan.classes, [s for s, k in zip(scan.samples, keep) if k], scan.skipped)


def subset_split(scan: SplitScan, fraction: float, seed: int) -> SplitScan:
    """``round(fraction * n_c)`` samples (at least one) of every class ``c``, drawn with ``seed``, in scan order:
    the data-fraction axis of the transfer-vs-scratch study. ``fraction`` 1 returns ``scan`` itself."""
    if fraction >= 1.0:
        return scan
    return _draw_per_class(scan, lambda c, n: max(1, int(round(fraction * n))), np.random.RandomState(int(seed)))


def cap_split(scan: SplitScan, like: SplitScan, seed: int) -> SplitScan:
    """At most as many samples of every class as ``like`` holds of it, drawn with ``seed``, in scan order (a
    validation split no larger, per class, than the training set it selects for). Returns ``scan`` itself when
    nothing is dropped."""
    limit = np.bincount(like.labels, minlength=len(scan.classes))
    if np.all(np.bincount(scan.labels, minlength=len(scan.classes)) <= limit):
        return scan
    # seed + 1: not subset_split's stream, so the validation and training draws are independent
    return _draw_per_class(scan, lambda c, n: int(limit[c]), np.random.RandomState(int(seed) + 1))


def scan_dataset(data_dir: PathLike, splits: Sequence[str] = SPLITS) -> Tuple[List[str], Dict[str, SplitScan]]:
    """Check the layout and scan (and verify) every image of ``splits`` once: ``(classes, {split: SplitScan})``.

    A training run calls this once and builds each epoch's pipeline from the result, instead of re-scanning
    and re-verifying every file every epoch.
    """
    root = resolve_data_root(data_dir)
    classes = check_same_classes(root)
    scans = {}
    for split in splits:
        samples, _, skipped = scan_split(root, split)
        scans[split] = SplitScan(root, split, classes, samples, skipped)
    return classes, scans
