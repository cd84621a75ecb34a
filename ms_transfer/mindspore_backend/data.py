"""The MindSpore input pipeline over scanned ImageFolder samples (:mod:`ms_transfer.core.data` scans).

Eval resize (``resize_backend``): ``"mindspore"`` (default, fast) uses MindSpore's C++ ``vision.Resize`` /
``CenterCrop`` (OpenCV-style bilinear without antialiasing, crop offset ``floor((d-S)/2)``); ``"pil"`` uses
:class:`~ms_transfer.core.data.PilResizeCenterCrop`, torchvision's exact result (see ``python -m parity.pipeline``).
Training augmentation (``augment="random"``: RandomResizedCrop + flip; ``"shift"``: a random translation by up to
``augment_shift`` pixels with zero fill, :func:`shift_transforms`) uses MindSpore's random ops; ``augment="none"``
trains on the deterministic val transform.

Shuffling is an explicit permutation, :func:`~ms_transfer.core.data.shuffle_order` ``(num_samples, seed)``, fed
to the dataset as a ``SubsetSampler``: the trunk-feature cache replays an epoch's batches with
:func:`~ms_transfer.core.data.batch_indices` without decoding an image, and the torch loader uses the same order.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import mindspore.dataset as ds
import mindspore.dataset.transforms as T
import mindspore.dataset.vision as vision
import numpy as np

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)
from ..core.data import (EVAL_SPLITS, DatasetError, DatasetInfo, CenterCrop, ImageSource, PathLike, PilResize,
                        PilResizeCenterCrop,
                        Preprocess, check_augment, check_resize_backend, resolve_data_root,
                        scan_split, shuffle_order, check_same_classes)
from ..core.tasks import is_pair_samples

__all__ = ["train_transforms", "shift_transforms", "val_transforms", "build_dataset", "create_dataset", "load_image_for_eval"]


Size = Union[int, Preprocess]


def _pre(size: Size) -> Preprocess:
    """An image size means the default preprocessing (RGB, ImageNet normalisation, crop) at that size."""
    return size if isinstance(size, Preprocess) else Preprocess(int(size))


def _normalize_ops(pre: Preprocess) -> list:
    return [vision.Normalize(mean=[m * 255 for m in pre.mean], std=[s * 255 for s in pre.std]), vision.HWC2CHW()]


def train_transforms(size: Size) -> list:
    """Training augmentation on decoded HWC uint8 arrays (the tutorial's recipe); ``size``: an image size or a
    :class:`~ms_transfer.core.data.Preprocess`."""
    pre = _pre(size)
    return [vision.RandomResizedCrop(pre.image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
            vision.RandomHorizontalFlip(prob=0.5)] + _normalize_ops(pre)


def _resize_ops(pre: Preprocess, resize_backend: str) -> list:
    """The val transform's resize and crop to SxS (HWC uint8 in and out)."""
    if pre.resize == "exact":
        return [PilResize(pre.image_size)]
    if pre.resize == "center":
        return [CenterCrop(pre.image_size)]
    if check_resize_backend(resize_backend) == "pil":
        return [PilResizeCenterCrop(pre.eval_resize_size, pre.image_size)]
    return [vision.Resize(pre.eval_resize_size), vision.CenterCrop(pre.image_size)]


def val_transforms(size: Size, resize_backend: str = "mindspore") -> list:
    """Deterministic eval transform: resize shorter side to ``size*256/224``, center crop, normalise (``resize:
    exact``: Pillow resize to SxS, the same code as the torch side; ``center``: torchvision's ``CenterCrop`` of
    the unresized image)."""
    pre = _pre(size)
    return _resize_ops(pre, resize_backend) + _normalize_ops(pre)


def shift_transforms(size: Size, shift: int, resize_backend: str = "mindspore") -> list:
    """``augment="shift"``: the val transform with its SxS image translated by a uniform random whole-pixel
    ``(dx, dy)`` in ``[-shift, shift]^2`` before normalising: zero-pad ``shift`` pixels on every side, then a
    uniformly placed SxS crop (vacated pixels are 0, black, before normalisation). Draws from MindSpore's
    dataset seed (see :func:`build_dataset`)."""
    pre = _pre(size)
    crop = vision.RandomCrop(pre.image_size, padding=int(shift), fill_value=0, padding_mode=vision.Border.CONSTANT)
    return _resize_ops(pre, resize_backend) + [crop] + _normalize_ops(pre)


def _train_ops(size: Size, augment: str, shift: int, resize_backend: str) -> list:
    """The training transform ``augment`` selects (:data:`~ms_transfer.core.data.AUGMENTS`)."""
    if augment == "random":
        return train_transforms(size)
    if augment == "shift":
        return shift_transforms(size, shift, resize_backend)
    return val_transforms(size, resize_backend)


def build_dataset(samples: Sequence[Tuple[str, int]], image_size: Size, batch_size: int, *, train: bool,
                  shuffle: bool, seed: int, num_workers: int = 2, drop_remainder: bool = False,
                  resize_backend: str = "mindspore", augment: str = "random", augment_shift: int = 2):
    """A batched MindSpore dataset over already scanned ``(path, label)`` samples; returns ``(dataset, source)``.

    With ``shuffle`` the samples come in the :func:`shuffle_order` permutation of ``seed``, else in index
    order. ``train`` selects the training transform ``augment`` asks for (``random``, ``shift`` by up to
    ``augment_shift`` pixels, or ``none``: the val transform), otherwise the val transform. ``source.load_failures``
    is a live list of the substitutions made while iterating (decoding runs in threads).

    Determinism: ``mindspore.dataset.config.set_seed(seed)`` is *process-global* (it also reseeds Python's
    ``random`` and ``numpy.random``), so build each dataset right before use with its own seed.
    """
    check_resize_backend(resize_backend)
    check_augment(augment, augment_shift)
    source = ImageSource(samples, decode=_pre(image_size).decode)
    ds.config.set_seed(int(seed))
    workers = max(1, int(num_workers))
    # An explicit permutation rather than ``shuffle=True``: MindSpore's own shuffle cannot be reproduced
    # outside the pipeline, and the feature cache must replay the exact batches (see batch_indices).
    sampler = ds.SubsetSampler(shuffle_order(len(source), seed).tolist()) if shuffle else None
    # a pair sample ((path_a, path_b), sum) of the digit adder yields two image columns, each transformed alike
    images = ["image_a", "image_b"] if is_pair_samples(samples) else ["image"]
    # One generator thread: decoding is in Python, and with python_multiprocessing=False more threads only contend
    # for the GIL (measured on 2 cores: 3,600 28x28 PNGs 9.1 s with 2 threads vs 0.6 s with 1; 256 256x256 JPEGs
    # 0.87 s vs 0.30 s). The C++ transforms below still use ``num_workers`` threads.
    dataset = ds.GeneratorDataset(source, column_names=images + ["label"], sampler=sampler,
                                  shuffle=None if shuffle else False, num_parallel_workers=1,
                                  python_multiprocessing=False)
    for column in images:
        ops = (_train_ops(image_size, augment, augment_shift, resize_backend) if train
               else val_transforms(image_size, resize_backend))
        dataset = dataset.map(operations=ops, input_columns=column, num_parallel_workers=workers)
    return dataset.batch(batch_size, drop_remainder=drop_remainder), source


def create_dataset(data_dir: PathLike, split: str, image_size: Size, batch_size: int, *, train: bool, shuffle: bool,
                   seed: int, num_workers: int = 2, drop_remainder: bool = False, resize_backend: str = "mindspore",
                   augment: str = "random", augment_shift: int = 2):
    """Scan ``data_dir/split`` and build its dataset (images float32 BxCxSxS, labels int32); returns
    ``(dataset, DatasetInfo)``. Training runs scan once and call :func:`build_dataset` per epoch instead."""
    if split not in EVAL_SPLITS:
        raise DatasetError(f"Unknown split {split!r}; expected one of {list(EVAL_SPLITS)}.")
    check_resize_backend(resize_backend)
    check_augment(augment, augment_shift)
    root = resolve_data_root(data_dir)
    check_same_classes(root)
    samples, classes, skipped = scan_split(root, split)
    dataset, source = build_dataset(samples, image_size, batch_size, train=train, shuffle=shuffle, seed=seed,
                                    num_workers=num_workers, drop_remainder=drop_remainder,
                                    resize_backend=resize_backend, augment=augment,
                                    augment_shift=augment_shift)
    info = DatasetInfo(classes=classes, num_samples=len(samples), skipped=skipped, root=root,
                       load_failures=source.load_failures, samples=list(samples))
    return dataset, info


def load_image_for_eval(path: PathLike, image_size: Size, *, resize_backend: str = "mindspore") -> np.ndarray:
    """Load one image with the val transform; returns a ``(1, C, S, S)`` float32 array."""
    image = T.Compose(val_transforms(image_size, resize_backend))(_pre(image_size).decode(path))
    return np.ascontiguousarray(image, dtype=np.float32)[None]
