"""What ``python -m ms_transfer.evaluate`` and ``python -m torch_reference.evaluate`` share: reading the checkpoint,
the classes and the preprocessing it needs (:func:`prepare`), and the command line (:func:`build_parser`,
:func:`run`). Each framework's module only builds its model, its data pipeline and runs the loop's
:func:`~ms_transfer.core.loop.validate`; nothing here imports a framework."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .checkpoint_io import CheckpointError, read_weights
from .config import ConfigError
from .convert import convert_weights
from .data import DatasetError, Preprocess, check_classes_match, list_classes, resolve_data_root
from .flags import add_json, plain, write_json
from .log import parse_args
from .metrics import format_result, positive_int
from .tasks import check_classifier

#: the ``--ckpt`` help of both commands
CKPT_HELP = ("a run checkpoint of either framework (RUN/best.ckpt, RUN/best.pth), or a plain weight file of any "
             "naming whose head has one output per class folder of the split (evaluated with torchvision's "
             "padding: a plain file does not record it)")


@dataclass
class Evaluation:
    """A checkpoint ready to evaluate: its weights in the naming asked, what to build, where the split's folder is
    and how to read its images."""

    arch: str
    padding: str
    classes: List[str]
    state: Mapping[str, np.ndarray]
    preprocess: Preprocess
    root: Path
    config: Dict   # the run's config ({} for a plain weight file)


def prepare(ckpt: str, data_dir: str, split: str, image_size: Optional[int], naming: str) -> Evaluation:
    """Read ``ckpt`` (weights renamed into ``naming``: ``"ms_transfer"`` or ``"torchvision"``) for evaluation on
    ``data_dir/split``. A run checkpoint's classes must be the split's class folders; a plain weight file's head
    must have as many outputs as there are folders, whose sorted names are then its classes. ``image_size``
    defaults to the run's (else 224). Raises :class:`CheckpointError` (unreadable, not a classifier, unknown
    names) or :class:`DatasetError` (classes that differ, naming both)."""
    weights = read_weights(ckpt)
    state, meta, report = convert_weights(weights, naming)
    check_classifier(report.arch, ckpt)
    root = resolve_data_root(data_dir)
    if "classes" in weights.meta:   # a run checkpoint of either framework
        classes = list(weights.meta["classes"])
        check_classes_match(root, split, classes, ckpt)
    else:   # a plain weight file (e.g. converted without run metadata): the classes come from the data
        classes = list_classes(root, split)
        if meta.get("num_classes") != len(classes):
            raise DatasetError(f"{ckpt} has a {meta.get('num_classes')}-class head but {root / split} has "
                               f"{len(classes)} class folders {classes}")
    config = dict(weights.meta.get("config", {}))
    preprocess = Preprocess.from_config({**config, "arch": report.arch},
                                        image_size or meta.get("image_size", 224))   # (meta: the file's, renamed)
    return Evaluation(report.arch, weights.meta.get("padding", "torch"), classes, state, preprocess, root, config)


def build_parser(prog: str, description: str, add_framework_flags: Callable[[argparse.ArgumentParser], None]
                 ) -> argparse.ArgumentParser:
    """The evaluate command line, the same in both frameworks but for ``add_framework_flags`` (mode, device, ...)."""
    p = argparse.ArgumentParser(prog=prog, description=plain(description))
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument("--data-dir", required=True, help="ImageFolder root with the split to evaluate")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="the split folder of --data-dir to evaluate (default: val)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward; the result does not depend on it (default: 32)")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="default: the size the run was trained at (224 for a plain weight file)")
    add_framework_flags(p)
    add_json(p, "the result")
    return p


def run(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
        evaluate: Callable[[argparse.Namespace], Dict]) -> int:
    """Parse ``argv``, ``evaluate(args)``, print the result (and write ``--json``): 0, or 2 with ``error: ...`` on
    stderr for a bad checkpoint, dataset or config."""
    args = parse_args(parser, argv)
    try:
        result = evaluate(args)
    except (CheckpointError, DatasetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    write_json(args.json, result)
    return 0
