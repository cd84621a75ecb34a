"""The torchvision side of the data pipeline, on exactly the files and labels ``ms_transfer.mindspore_backend.data``
uses.

Scanning is *not* re-implemented: :class:`ScannedImageFolder` takes its classes from
:func:`ms_transfer.core.data.list_classes` and its samples from :func:`ms_transfer.core.data.scan_split`, so
hidden entries, non-image files and unreadable images are skipped by the same policy, in the same
sorted order, with the same class indices as the MindSpore dataset. Images are decoded with Pillow to
RGB (torchvision's ``pil_loader``, the same conversion as :func:`ms_transfer.core.data.load_rgb`).

The transforms are torchvision's own (the tutorial's recipe): ``RandomResizedCrop`` +
``RandomHorizontalFlip`` for training (``augment="shift"``: zero-pad + ``RandomCrop``, :func:`shift_transforms`); ``Resize(int(S*256/224))`` + ``CenterCrop(S)`` for eval, which
on PIL images is Pillow's antialiased bilinear resize; then ``ToTensor`` + ``Normalize`` with the
ImageNet constants of ``ms_transfer.core.data``.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import select
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ._torch import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import pil_loader

from ms_transfer.core.data import (EVAL_SPLITS, DatasetError, DatasetInfo, ImageSource, PathLike, PilResize, Preprocess,
                                   check_augment, check_same_classes, resolve_data_root,
                                   scan_split, shuffle_order)

log = logging.getLogger(__name__)


Size = Union[int, Preprocess]

#: How DataLoader workers start: from a forkserver (a single-threaded process that imports this module once, the
#: workers forked from it), never by forking the training process. Forking a process while another of its threads
#: is entering Python (a C++ thread taking the GIL, as torch's gloo threads do in a DDP rank) can copy the
#: interpreter's thread-list lock while it is held, and the worker then waits on it forever, before it runs a line:
#: CPython gh-112275 (fixed in 3.12). Seen here on Python 3.11.7: a torchrun rank's new worker stuck in
#: ``PyOS_AfterFork_Child`` -> ``_PyThreadState_DeleteExcept``, the run hung with no message; reproduced with
#: 1-worker loaders beside 3 threads entering Python through ctypes (the 164th fork hung; none from the
#: forkserver). Cost: the forkserver imports torch once per process (~2.4 s before the first batch), then a
#: loader's workers start in ~0.05 s.
#:
#: The forkserver also imports what the program's main module imported (``python -m torch_reference.train``, or a
#: script), once: every new worker re-runs that module as ``__mp_main__`` (multiprocessing's spawn preparation), and
#: the workers are new for every loader, three an epoch (train, val, PreciseBN). Without it each worker imported the
#: module's whole import chain again: the digits 0-4 from 15 images (``configs/digits_0to4.yaml``, 16 epochs, 2
#: workers) took 51.5 s, 1.7 s an epoch; 15.9 s with it and matplotlib imported only to plot (8.0 s without workers).
WORKER_START = "forkserver"


def worker_context() -> Optional[multiprocessing.context.BaseContext]:
    """The multiprocessing context of DataLoader workers (:data:`WORKER_START`; ``None``, the default start, where
    the platform has no forkserver)."""
    if WORKER_START not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context(WORKER_START)
    context.set_forkserver_preload([__name__, *_main_imports()])   # read when the server starts
    return context


def _main_imports() -> List[str]:
    """What the forkserver imports so that a worker's re-run of the main module (see :data:`WORKER_START`) finds
    its imports done: the modules the main module imported (a module run with ``-m``, or a script), read from its
    namespace. Not the main module itself: a worker re-runs it with ``runpy``, which warns ("found in sys.modules
    ... prior to execution") for a module already imported; and a package's ``__main__`` is never re-run."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if main is None or name.endswith(".__main__"):
        return []
    found = set()
    for value in vars(main).values():
        if isinstance(value, types.ModuleType):
            found.add(value.__name__)
        elif isinstance(value, (type, types.FunctionType)):
            found.add(value.__module__)
    return sorted(m for m in found if m not in ("__main__", name) and m in sys.modules)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_with(trainer_pid: int, worker_id: int) -> None:
    """A worker's init (``worker_init_fn``): end this worker when the training process ``trainer_pid`` ends.

    A worker started by the forkserver is the forkserver's child, so torch's own check (has my parent changed?)
    watches the wrong process: after a SIGKILLed trainer, its workers would wait for work forever and, holding the
    forkserver's liveness pipe, keep it alive too, all holding the run's stdout (a launcher reading it never
    ends). A thread waits for the trainer's exit (a pidfd, Linux >= 5.3; else a 1 s poll) and ends the worker."""
    def wait() -> None:
        try:
            fd = os.pidfd_open(trainer_pid)
        except (AttributeError, OSError):   # no pidfd here, or the trainer is already gone
            while _alive(trainer_pid):
                time.sleep(1.0)
        else:
            select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=wait, name="exit-with-trainer", daemon=True).start()


def _pre(size: Size) -> Preprocess:
    """An image size means the default preprocessing (RGB, ImageNet normalisation, crop) at that size."""
    return size if isinstance(size, Preprocess) else Preprocess(int(size))


def _normalize(pre: Preprocess) -> List[Callable]:
    return [T.ToTensor(), T.Normalize(pre.mean, pre.std)]


def pil_gray_loader(path: PathLike) -> Image.Image:
    """Open an image file as 8-bit grayscale (mode ``L``; the 1-channel counterpart of ``pil_loader``)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("L")


class _ExactResize:
    """``resize: exact``: the shared :class:`~ms_transfer.core.data.PilResize` on a PIL image (HWC uint8 out)."""

    def __init__(self, size: int) -> None:
        self.resize = PilResize(size)

    def __call__(self, image: Image.Image) -> np.ndarray:
        array = np.array(image, dtype=np.uint8)  # a writable copy (ToTensor warns on Pillow's read-only view)
        return self.resize(array[:, :, None] if array.ndim == 2 else array)


def train_transforms(size: Size) -> T.Compose:
    """Random training augmentation on a PIL image -> normalised float32 CxSxS tensor.

    Draws from torch's RNG (see :func:`create_loader` for how it is seeded)."""
    pre = _pre(size)
    return T.Compose([T.RandomResizedCrop(pre.image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
                      T.RandomHorizontalFlip()] + _normalize(pre))


def _resize(pre: Preprocess) -> List[Callable]:
    """The val transform's resize and crop to SxS (PIL image in; PIL image or HWC uint8 array out)."""
    if pre.resize == "exact":
        return [_ExactResize(pre.image_size)]
    if pre.resize == "center":
        return [T.CenterCrop(pre.image_size)]
    return [T.Resize(pre.eval_resize_size), T.CenterCrop(pre.image_size)]


def val_transforms(size: Size) -> T.Compose:
    """Deterministic eval transform: shorter side to ``int(S*256/224)`` (Pillow, antialiased bilinear),
    center crop ``S``, normalise -> float32 CxSxS tensor (``resize: exact``: Pillow resize to SxS; ``center``:
    ``CenterCrop(S)`` of the unresized image, the cats-vs-dogs transform)."""
    pre = _pre(size)
    return T.Compose(_resize(pre) + _normalize(pre))


def shift_transforms(size: Size, shift: int) -> T.Compose:
    """``augment="shift"``: the val transform with its SxS image translated by a uniform random whole-pixel
    ``(dx, dy)`` in ``[-shift, shift]^2`` before normalising: zero-pad ``shift`` pixels on every side, then a
    uniformly placed SxS crop (vacated pixels are 0, black, before normalisation), as
    ``ms_transfer.mindspore_backend.data.shift_transforms``. Draws from torch's RNG (see :func:`build_loader`)."""
    pre = _pre(size)
    # the crop runs on the [0, 1] tensor (ToTensor first: the exact resize yields an array RandomCrop cannot take);
    # its zero fill is pixel value 0 either way
    return T.Compose(_resize(pre) + [T.ToTensor(), T.RandomCrop(pre.image_size, padding=int(shift), fill=0),
                                     T.Normalize(pre.mean, pre.std)])


def _train_transform(size: Size, augment: str, shift: int) -> T.Compose:
    """The training transform ``augment`` selects (:data:`ms_transfer.core.data.AUGMENTS`)."""
    if augment == "random":
        return train_transforms(size)
    if augment == "shift":
        return shift_transforms(size, shift)
    return val_transforms(size)


def _loader_of(pre: Preprocess) -> Callable:
    return pil_loader if pre.channels == 3 else pil_gray_loader


class ScannedImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` over ``root/split`` whose classes and samples come from
    :mod:`ms_transfer.core.data`'s scan (same skips, order and labels as the MindSpore dataset).

    ``skipped`` lists the ``(path, reason)`` files the scan rejected. A sample that fails to decode
    while iterating is replaced by the next readable one (by index, wrapping around) after a logged
    warning and recorded in ``load_failures``, like :class:`ms_transfer.core.data.ImageSource`. With
    DataLoader workers each worker holds its own copy of the dataset, so ``load_failures`` in the main
    process only records failures when ``num_workers == 0`` (workers still log them).
    """

    def __init__(self, data_dir: PathLike, split: str, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None):
        if split not in EVAL_SPLITS:
            raise DatasetError(f"Unknown split {split!r}; expected one of {list(EVAL_SPLITS)}.")
        self.data_root = resolve_data_root(data_dir)
        self.split = split
        # Scan before ImageFolder.__init__, which calls the find_classes/make_dataset overrides below.
        self._scanned, self._scanned_classes, self.skipped = scan_split(self.data_root, split)
        self.source = ImageSource(self._scanned, decode=pil_loader)
        self.load_failures: List[Tuple[str, str]] = self.source.load_failures
        super().__init__(str(self.data_root / split), transform=transform, target_transform=target_transform,
                         loader=pil_loader)

    def find_classes(self, directory: PathLike) -> Tuple[List[str], Dict[str, int]]:
        """The scan's classes (sorted visible folder names; hidden folders ignored)."""
        classes = list(self._scanned_classes)  # scan_split takes them from list_classes
        return classes, {name: index for index, name in enumerate(classes)}

    def make_dataset(self, directory: PathLike, class_to_idx: Dict[str, int], extensions: Any = None,
                     is_valid_file: Any = None, allow_empty: bool = False) -> List[Tuple[str, int]]:
        """The scan's ``(path, label)`` samples instead of torchvision's extension-only walk (which
        would keep corrupt files and hidden folders)."""
        return list(self._scanned)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        image, label = self.source[index]  # decode, or substitute the next readable image (logged, recorded)
        # Transforms run after decoding: a bug there must raise, not silently swap images.
        if self.transform is not None:
            image = self.transform(image)
        label = int(label)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label


class SampleDataset(Dataset):
    """``(transformed image, int label)`` over already scanned ``(path, label)`` samples (no scan of its own)."""

    def __init__(self, samples: Sequence[Tuple[str, int]], transform: Callable, decode: Callable = pil_loader
                 ) -> None:
        self.source = ImageSource(samples, decode=decode)
        self.transform = transform
        self.load_failures = self.source.load_failures

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        *images, label = self.source[index]
        if len(images) == 2:  # a digit pair ((path_a, path_b), sum): the batch's x is (images_a, images_b)
            return (self.transform(images[0]), self.transform(images[1])), int(label)
        return self.transform(images[0]), int(label)


def build_loader(samples: Sequence[Tuple[str, int]], image_size: Size, batch_size: int, *, train: bool,
                 shuffle: bool, seed: int, num_workers: int = 0, augment: str = "random",
                 augment_shift: int = 2) -> Tuple[DataLoader, List[Tuple[str, str]]]:
    """A ``DataLoader`` over scanned samples, yielding ``(images float32 Bx3xSxS, labels int64 B)``; returns
    ``(loader, load_failures)``. The torch counterpart of ``ms_transfer.mindspore_backend.data.build_dataset``;
    ``train`` selects the training transform ``augment`` asks for (``shift``: by up to ``augment_shift`` pixels).

    Order: with ``shuffle``, :func:`shuffle_order` ``(n, seed)`` (the MindSpore pipeline's order), else index
    order. Random augmentation draws from torch's global RNG (``num_workers == 0``), which is seeded here with
    ``seed`` for a train loader, so an epoch's augmentation is reproducible; workers are seeded from the loader's
    own generator (also ``seed``). ``load_failures`` records substitutions only with ``num_workers == 0``.
    """
    check_augment(augment, augment_shift)
    transform = _train_transform(image_size, augment, augment_shift) if train else val_transforms(image_size)
    dataset = SampleDataset(samples, transform, _loader_of(_pre(image_size)))
    if train:
        torch.manual_seed(int(seed))
    order = shuffle_order(len(dataset), seed).tolist() if shuffle else list(range(len(dataset)))
    workers = max(0, int(num_workers))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                        multiprocessing_context=worker_context() if workers else None,
                        worker_init_fn=functools.partial(exit_with, os.getpid()) if workers else None,
                        generator=torch.Generator().manual_seed(int(seed)))
    return loader, dataset.load_failures


def create_loader(data_dir: PathLike, split: str, image_size: Size, batch_size: int, *, train: bool,
                  shuffle: bool, seed: int, num_workers: int = 0, augment: str = "random",
                  augment_shift: int = 2) -> Tuple[DataLoader, DatasetInfo]:
    """Scan ``data_dir/split`` and build its loader (see :func:`build_loader`); returns ``(loader, DatasetInfo)``.
    The torch counterpart of :func:`ms_transfer.mindspore_backend.data.create_dataset`. Checks that train and val have
    the same classes. Training runs scan once and call :func:`build_loader` per epoch instead."""
    if split not in EVAL_SPLITS:
        raise DatasetError(f"Unknown split {split!r}; expected one of {list(EVAL_SPLITS)}.")
    root = resolve_data_root(data_dir)
    check_same_classes(root)
    samples, classes, skipped = scan_split(root, split)
    loader, failures = build_loader(samples, image_size, batch_size, train=train, shuffle=shuffle, seed=seed,
                                    num_workers=num_workers, augment=augment, augment_shift=augment_shift)
    info = DatasetInfo(classes=classes, num_samples=len(samples), skipped=skipped, root=root,
                       load_failures=failures, samples=list(samples))
    return loader, info


def load_image_for_eval(path: PathLike, image_size: Size) -> np.ndarray:
    """Load one image with torchvision's val transform; returns a ``(1, C, S, S)`` float32 array."""
    image = val_transforms(image_size)(_loader_of(_pre(image_size))(Path(path)))
    return np.ascontiguousarray(image.numpy(), dtype=np.float32)[None]
