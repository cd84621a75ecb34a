"""A plain image folder, ``DATA_DIR/<class>/<images>`` without ``train/`` and ``val/``: the validation images a
training run holds out of it, and their record in the run directory.

The split is stratified and seeded (``val_fraction`` of every class, at least one image on each side, drawn with
the run's ``seed`` by :func:`~.arrays.holdout_mask`), framework-neutral, and written to the run directory as
:data:`SPLIT_FILES`: one path per line, relative to the folder (``<class>/<file>``), in scan order. A resumed run
reads those lists instead of drawing again, so it trains and validates on the same images even if the seed rule
or the folder changed. A changed folder on resume: recorded images that are gone (or no longer readable) are an
error (the run's split cannot be rebuilt: restore them or start a new run); images added since are a warning and
stay unused (the resumed run keeps its split).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .arrays import holdout_mask
from .checkpoint_io import atomic_write
from .data import SplitScan, scan_classes, scan_dataset
from .layout import SPLITS, DatasetError, has_splits, visible_dirs

log = logging.getLogger(__name__)

#: the run directory's record of a plain folder's split
SPLIT_FILES = {"train": "split_train.txt", "val": "split_val.txt"}
#: how many examples an error or warning about a changed folder names
_EXAMPLES = 5

Samples = List[Tuple[str, int]]


def scan_training_data(root: Path, out: Path, val_fraction: float, seed: int, resume: bool
                       ) -> Tuple[List[str], Dict[str, SplitScan], bool]:
    """``(classes, {"train", "val": SplitScan}, plain)`` of a run's dataset ``root``: its ``train/`` and ``val/``,
    else (``plain``) the split of a plain folder: drawn (:func:`holdout_split`) or, on ``resume``, read from the
    run directory ``out`` (:func:`read_split`). Only the scan: :func:`write_split` records a new split."""
    if has_splits(root):
        classes, scans = scan_dataset(root)
        return classes, scans, False
    if resume:
        classes, scans = read_split(out, root)
    else:
        classes = [p.name for p in visible_dirs(root)]
        samples, skipped = scan_classes(root, classes)
        scans = holdout_split(root, classes, samples, skipped, val_fraction, seed)
    log.info(f"{root}: a plain folder of {len(classes)} class folders; training on {len(scans['train'])} images, "
             f"validating on {len(scans['val'])}" + (" (the run's recorded split)" if resume else
                                                     f" (val_fraction {val_fraction:g}, seed {seed})"))
    return classes, scans, True


def check_class_sizes(root: Path, classes: Sequence[str], samples: Samples) -> None:
    """Every class needs two readable images (one to train on, one to validate); a clear error otherwise."""
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    tiny = [(classes[c], int(n)) for c, n in enumerate(counts) if n < 2]
    if tiny:
        listed = ", ".join(f"{name!r} ({n} readable image{'s' if n != 1 else ''})" for name, n in tiny)
        raise DatasetError(f"{root}: class folder(s) {listed} hold fewer than 2 images; a plain folder's classes "
                           "each need at least 2 (one to train on, one to validate). Add images to "
                           f"{root / tiny[0][0]}, or move that folder out of {root}.")


def holdout_split(root: Path, classes: List[str], samples: Samples, skipped: List[Tuple[str, str]],
                  val_fraction: float, seed: int) -> Dict[str, SplitScan]:
    """The seeded, stratified split of a plain folder's scanned ``samples`` (scan order kept on both sides):
    ``round(val_fraction * n_c)`` images of every class ``c`` validate, at least one and at most ``n_c - 1``."""
    if len(classes) < 2:
        raise DatasetError(f"{root} has {len(classes)} class folder(s) ({classes}); a classifier needs at least two")
    check_class_sizes(root, classes, samples)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    is_val = holdout_mask(labels, len(classes), val_fraction, seed, keep_one=True)
    return {split: SplitScan(root, split, classes, [s for s, v in zip(samples, is_val) if v == (split == "val")],
                             skipped)
            for split in SPLITS}


def _relative(root: Path, path: str) -> str:
    return Path(path).relative_to(root).as_posix()


def write_split(out: Path, scans: Dict[str, SplitScan]) -> None:
    """Write the split to ``out`` (:data:`SPLIT_FILES`: ``<class>/<file>`` per line, relative to the folder; each
    file atomically, as the checkpoints)."""
    for split, name in SPLIT_FILES.items():
        scan = scans[split]
        lines = [_relative(scan.root, path) + "\n" for path, _ in scan.samples]
        atomic_write(Path(out) / name, lambda tmp, text="".join(lines): Path(tmp).write_text(text, encoding="utf-8"))


def _examples(paths: Sequence[str]) -> str:
    shown = ", ".join(sorted(paths)[:_EXAMPLES])
    return shown + (f" and {len(paths) - _EXAMPLES} more" if len(paths) > _EXAMPLES else "")


def read_split(out: Path, root: Path) -> Tuple[List[str], Dict[str, SplitScan]]:
    """The split recorded in the run directory ``out``, over the folder ``root`` as it is now (scanned again).

    Raises :class:`DatasetError` when the lists are missing or name images that are gone or unreadable; images
    added since the run started are reported in a warning and left out (the run keeps its split).
    """
    recorded: Dict[str, List[str]] = {}
    for split, name in SPLIT_FILES.items():
        path = Path(out) / name
        if not path.is_file():
            raise DatasetError(f"--resume: {path} not found, so the run in {out} was not trained on a plain folder "
                               f"(or its split record was removed); resume it with the data it was trained on "
                               f"(--data-dir), or start a new run")
        recorded[split] = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    classes = sorted({rel.split("/", 1)[0] for rel in recorded["train"] + recorded["val"]})
    present = [name for name in classes if (root / name).is_dir()]
    samples, skipped = scan_classes(root, present) if present else ([], [])
    found = {_relative(root, path): classes.index(present[label]) for path, label in samples}
    wanted = set(recorded["train"]) | set(recorded["val"])
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetError(f"--resume: {len(missing)} image(s) of the run's recorded split ({out}/"
                           f"{SPLIT_FILES['train']}, {SPLIT_FILES['val']}) are missing from {root} or no longer "
                           f"readable: {_examples(missing)}. Restore them, or start a new run (without --resume) "
                           "to split the folder as it is now.")
    others = [p.name for p in visible_dirs(root) if p.name not in classes]
    added = sorted(set(found) - wanted) + [f"{name}/ (a new class folder)" for name in others]
    if added:
        log.warning(f"--resume: {len(added)} image(s) in {root} are not in the run's recorded split (added after the "
                    f"run started): {_examples(added)}. The resumed run keeps its split and does not use them; "
                    "start a new run to train on them.")
    scans = {}
    for split in SPLITS:
        members = set(recorded[split])
        scans[split] = SplitScan(root, split, classes, [(path, found[_relative(root, path)]) for path, _ in samples
                                                        if _relative(root, path) in members], skipped)
    return classes, scans
