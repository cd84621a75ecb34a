"""The image-folder dataset layout contract: which folder holds ``train/`` and ``val/`` (see
:mod:`ms_transfer.core.data` for the whole layout and the scan).

Its own module because both the scan (:mod:`ms_transfer.core.data`) and the dataset download
(:mod:`ms_transfer.core.download`, which must find the dataset inside an unpacked archive) need it, while the scan's
preprocessing needs the weights table, which needs the download: with the contract inside ``data`` the three
imported each other.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Union

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

SPLITS = ("train", "val")
LAYOUT_HELP = (
    "Expected layout: DATA_DIR/train/<class>/<images> and DATA_DIR/val/<class>/<images> "
    "(the same class folder names in both splits), or a parent folder containing exactly one "
    "such dataset folder (e.g. DATA_DIR/Canidae/train, DATA_DIR/Canidae/val)."
)


class DatasetError(ValueError):
    """The dataset folder is missing, malformed or inconsistent; the message says how to fix it."""


def visible_dirs(folder: Path) -> List[Path]:
    """The subfolders of ``folder`` that are not hidden (``.git``, ``__MACOSX`` ...), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _has_splits(folder: Path) -> bool:
    return all((folder / s).is_dir() for s in SPLITS)


def resolve_data_root(data_dir: PathLike, max_depth: int = 3) -> Path:
    """Return the folder holding ``train/`` and ``val/``: ``data_dir`` itself or the dataset folder
    reached through a chain of single visible subfolders (at most ``max_depth`` levels down).

    Raises :class:`DatasetError` naming the path and the expected layout when none is found.
    """
    start = Path(data_dir).expanduser()
    if not start.is_dir():
        raise DatasetError(f"Data directory {start} does not exist. {LAYOUT_HELP}")
    folder = start
    for _ in range(max_depth + 1):
        if _has_splits(folder):
            if folder != start:
                log.info("Using dataset root %s (found inside %s)", folder, start)
            return folder
        subdirs = visible_dirs(folder)
        if len(subdirs) != 1 or any((folder / s).is_dir() for s in SPLITS):
            break
        folder = subdirs[0]
    found = [s for s in SPLITS if (folder / s).is_dir()]
    detail = f"{folder} has {found} but needs both {list(SPLITS)}" if found else (
        f"no train/ and val/ folders found in {start}"
        + (f" (looked down to {folder})" if folder != start else ""))
    raise DatasetError(f"Invalid data directory: {detail}. {LAYOUT_HELP}")
