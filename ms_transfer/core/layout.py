"""The image-folder dataset layout contract: which folder holds ``train/`` and ``val/``, or is a plain folder of
class sub-folders that training splits itself (:mod:`ms_transfer.core.holdout`); see :mod:`ms_transfer.core.data`
for the whole layout and the scan.

Its own module because both the scan (:mod:`ms_transfer.core.data`) and the dataset download
(:mod:`ms_transfer.core.download`, which must find the dataset inside an unpacked archive) need it, while the scan's
preprocessing needs the weights table, which needs the download: with the contract inside ``data`` the three
imported each other.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple, Union

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

SPLITS = ("train", "val")
LAYOUT_HELP = (
    "Expected layout: DATA_DIR/train/<class>/<images> and DATA_DIR/val/<class>/<images> "
    "(the same class folder names in both splits), or a parent folder containing exactly one "
    "such dataset folder (e.g. DATA_DIR/Canidae/train, DATA_DIR/Canidae/val). Training also takes a plain "
    "folder of class folders, DATA_DIR/<class>/<images>, and holds out --val-fraction of it for validation."
)


class DatasetError(ValueError):
    """The dataset folder is missing, malformed or inconsistent; the message says how to fix it."""


def visible_dirs(folder: Path) -> List[Path]:
    """The subfolders of ``folder`` that are not hidden (``.git``, ``__MACOSX`` ...), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def has_splits(folder: Path) -> bool:
    """Whether ``folder`` has both ``train/`` and ``val/``."""
    return all((folder / s).is_dir() for s in SPLITS)


def find_dataset(data_dir: PathLike, max_depth: int = 3) -> Tuple[Path, bool]:
    """``(folder, has_splits)``: the folder holding ``train/`` and ``val/`` (``has_splits`` True), else a plain
    folder of at least two class folders and neither ``train/`` nor ``val/`` (False); ``data_dir`` itself or the
    folder reached through a chain of single visible subfolders (at most ``max_depth`` levels down).

    Raises :class:`DatasetError` naming the path and the expected layout when neither is found.
    """
    start = Path(data_dir).expanduser()
    if not start.is_dir():
        raise DatasetError(f"Data directory {start} does not exist. {LAYOUT_HELP}")
    folder = start
    for _ in range(max_depth + 1):
        if has_splits(folder):
            if folder != start:
                log.info("Using dataset root %s (found inside %s)", folder, start)
            return folder, True
        subdirs = visible_dirs(folder)
        if any((folder / s).is_dir() for s in SPLITS):
            break
        if len(subdirs) > 1:
            datasets = [d.name for d in subdirs if any((d / s).is_dir() for s in SPLITS)]
            if datasets:   # several datasets side by side (data/Canidae, data/hymenoptera), not class folders
                raise DatasetError(f"{folder} holds dataset folders with train/ or val/ ({', '.join(datasets)}), so "
                                   f"its subfolders are not classes; pass the one to train on, e.g. --data-dir "
                                   f"{folder / datasets[0]}")
            if folder != start:
                log.info("Using the class folders of %s (found inside %s)", folder, start)
            return folder, False
        if not subdirs:
            break
        folder = subdirs[0]
    found = [s for s in SPLITS if (folder / s).is_dir()]
    detail = f"{folder} has {found} but needs both {list(SPLITS)}" if found else (
        f"no train/ and val/ folders and no class folders (at least two) found in {start}"
        + (f" (looked down to {folder})" if folder != start else ""))
    raise DatasetError(f"Invalid data directory: {detail}. {LAYOUT_HELP}")


def resolve_data_root(data_dir: PathLike, max_depth: int = 3) -> Path:
    """Return the folder holding ``train/`` and ``val/`` (:func:`find_dataset`); a plain folder of class folders
    is a :class:`DatasetError` here: only training splits one (and records the split in its run directory)."""
    folder, has_splits = find_dataset(data_dir, max_depth)
    if not has_splits:
        raise DatasetError(f"{folder} holds class folders but no train/ and val/ folders: training splits such a "
                           "folder itself (--val-fraction) and lists the split in the run directory "
                           "(split_train.txt, split_val.txt); here give a folder with train/ and val/. "
                           f"{LAYOUT_HELP}")
    return folder
