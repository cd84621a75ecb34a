"""The MindSpore input pipeline over scanned ImageFolder samples (:mod:`ms_transfer.core.data` scans).

Eval resize (``resize_backend``): ``"mindspore"`` (default, fast) uses MindSpore's C++ ``vision.Resize`` /
``CenterCrop`` (OpenCV-style bilinear without antialiasing, crop offset ``floor((d-S)/2)``); ``"pil"`` uses
:class:`~ms_transfer.core.data.PilResizeCenterCrop`, torchvision's exact result (see ``python -m parity.pipeline``).
Training augmentation (``augment="random"``) uses MindSpore's random ops; ``augment="none"`` trains on the
deterministic val transform.

Shuffling is an explicit permutation, :func:`~ms_transfer.core.data.shuffle_order` ``(num_samples, seed)``, fed
to the dataset as a ``SubsetSampler``: the trunk-feature cache replays an epoch's batches with
:func:`~ms_transfer.core.data.batch_indices` without decoding an image, and the torch loader uses the same order.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from . import context  # noqa: F401  (oneDNN cap before MindSpore's first kernel)

import mindspore.dataset as ds  # noqa: E402
import mindspore.dataset.transforms as T
import mindspore.dataset.vision as vision
import numpy as np

from .core.data import (IMAGENET_MEAN, IMAGENET_STD, SPLITS, DatasetError, DatasetInfo, ImageSource, PathLike,
                        PilResizeCenterCrop, check_augment, check_resize_backend, eval_resize_size, load_rgb,
                        resolve_data_root, scan_split, shuffle_order, check_same_classes)

__all__ = ["train_transforms", "val_transforms", "build_dataset", "create_dataset", "load_image_for_eval"]


def _normalize_ops() -> list:
    return [vision.Normalize(mean=[m * 255 for m in IMAGENET_MEAN], std=[s * 255 for s in IMAGENET_STD]),
            vision.HWC2CHW()]


def train_transforms(image_size: int) -> list:
    """Training augmentation on decoded HWC uint8 RGB arrays (the tutorial's recipe)."""
    return [vision.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
            vision.RandomHorizontalFlip(prob=0.5)] + _normalize_ops()


def val_transforms(image_size: int, resize_backend: str = "mindspore") -> list:
    """Deterministic eval transform: resize shorter side to ``size*256/224``, center crop, normalise."""
    if check_resize_backend(resize_backend) == "pil":
        return [PilResizeCenterCrop(eval_resize_size(image_size), image_size)] + _normalize_ops()
    return [vision.Resize(eval_resize_size(image_size)), vision.CenterCrop(image_size)] + _normalize_ops()


def build_dataset(samples: Sequence[Tuple[str, int]], image_size: int, batch_size: int, *, train: bool,
                  shuffle: bool, seed: int, num_workers: int = 2, drop_remainder: bool = False,
                  resize_backend: str = "mindspore", augment: str = "random"):
    """A batched MindSpore dataset over already scanned ``(path, label)`` samples; returns ``(dataset, source)``.

    With ``shuffle`` the samples come in the :func:`shuffle_order` permutation of ``seed``, else in index
    order. ``train`` with
    ``augment="random"`` selects the random augmentation, otherwise the val transform. ``source.load_failures``
    is a live list of the substitutions made while iterating (decoding runs in threads).

    Determinism: ``mindspore.dataset.config.set_seed(seed)`` is *process-global* (it also reseeds Python's
    ``random`` and ``numpy.random``), so build each dataset right before use with its own seed.
    """
    check_resize_backend(resize_backend)
    check_augment(augment)
    source = ImageSource(samples)
    ds.config.set_seed(int(seed))
    workers = max(1, int(num_workers))
    # An explicit permutation rather than ``shuffle=True``: MindSpore's own shuffle cannot be reproduced
    # outside the pipeline, and the feature cache must replay the exact batches (see batch_indices).
    sampler = ds.SubsetSampler(shuffle_order(len(source), seed).tolist()) if shuffle else None
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"], sampler=sampler,
                                  shuffle=None if shuffle else False, num_parallel_workers=workers,
                                  python_multiprocessing=False)
    ops = train_transforms(image_size) if train and augment == "random" else val_transforms(image_size, resize_backend)
    dataset = dataset.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    return dataset.batch(batch_size, drop_remainder=drop_remainder), source


def create_dataset(data_dir: PathLike, split: str, image_size: int, batch_size: int, *, train: bool, shuffle: bool,
                   seed: int, num_workers: int = 2, drop_remainder: bool = False, resize_backend: str = "mindspore",
                   augment: str = "random"):
    """Scan ``data_dir/split`` and build its dataset (images float32 Bx3xSxS, labels int32); returns
    ``(dataset, DatasetInfo)``. Training runs scan once and call :func:`build_dataset` per epoch instead."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; expected one of {list(SPLITS)}.")
    check_resize_backend(resize_backend)
    check_augment(augment)
    root = resolve_data_root(data_dir)
    check_same_classes(root)
    samples, classes, skipped = scan_split(root, split)
    dataset, source = build_dataset(samples, image_size, batch_size, train=train, shuffle=shuffle, seed=seed,
                                    num_workers=num_workers, drop_remainder=drop_remainder,
                                    resize_backend=resize_backend, augment=augment)
    info = DatasetInfo(classes=classes, num_samples=len(samples), skipped=skipped, root=root,
                       load_failures=source.load_failures, samples=list(samples))
    return dataset, info


def load_image_for_eval(path: PathLike, image_size: int, *, resize_backend: str = "mindspore") -> np.ndarray:
    """Load one image with the val transform; returns a ``(1, 3, S, S)`` float32 array."""
    image = T.Compose(val_transforms(image_size, resize_backend))(load_rgb(path))
    return np.ascontiguousarray(image, dtype=np.float32)[None]
