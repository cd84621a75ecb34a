"""``python -m torch_reference.evaluate --ckpt RUN/best.pth --data-dir DIR``: the torchvision side of
``ms_transfer.evaluate`` (same metrics, same output), for run checkpoints of either framework."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from ._torch import torch

from ms_transfer.core.checkpoint_io import CheckpointError, read_weights
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.config import ConfigError
from ms_transfer.core.data import DatasetError, Preprocess, check_classes_match, list_classes, resolve_data_root
from ms_transfer.core.flags import add_device, add_json, plain, write_json
from ms_transfer.core.log import parse_args
from ms_transfer.core.loop import validate
from ms_transfer.core.metrics import format_result, positive_int
from ms_transfer.core.tasks import check_classifier

from .backend import TorchBackend, torch_device
from .data import create_loader
from .models import build_model, load_numpy_state


def evaluate_model(model: torch.nn.Module, loader, num_classes: int) -> Dict:
    """Eval-mode pass over ``loader``: the loop's own :func:`~ms_transfer.core.loop.validate` (the same result
    dict as ``ms_transfer.evaluate.evaluate_net``)."""
    backend = TorchBackend()
    backend.device = next(model.parameters()).device
    return validate(backend.adopt(model), loader, num_classes)


def evaluate_checkpoint(ckpt: str, data_dir: str, split: str = "val", batch_size: int = 32,
                        image_size: Optional[int] = None, num_workers: int = 0, device: str = "CPU") -> Dict:
    """Evaluate a checkpoint on ``data_dir/split``: a run checkpoint of either framework (``best.pth``,
    ``best.ckpt``), or a plain weight file of any naming whose head matches the split's class folders."""
    weights = read_weights(ckpt)
    state, meta, report = convert_weights(weights, "torchvision")
    check_classifier(report.arch, ckpt)
    root = resolve_data_root(data_dir)
    if "classes" in weights.meta:  # a run checkpoint of either framework
        classes = weights.meta["classes"]
        check_classes_match(root, split, classes, ckpt)
    else:  # a plain weight file (e.g. converted without run metadata): classes come from the data
        classes = list_classes(root, split)
        if meta.get("num_classes") != len(classes):
            raise DatasetError(f"{ckpt} has a {meta.get('num_classes')}-class head but {root / split} has "
                               f"{len(classes)} class folders {classes}")
    model = build_model(report.arch, len(classes), weights.meta.get("padding", "torch"))
    load_numpy_state(model, state)
    pre = Preprocess.from_config({**weights.meta.get("config", {}), "arch": report.arch},
                                 image_size or meta.get("image_size", 224))
    loader, _ = create_loader(root, split, pre, batch_size, train=False,
                              shuffle=False, seed=0, num_workers=num_workers)
    result = evaluate_model(model.to(torch_device(device)), loader, len(classes))
    result["classes"] = classes
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m torch_reference.evaluate`` (no side effects: docs/cli.md renders it)."""
    p = argparse.ArgumentParser(prog="python -m torch_reference.evaluate", description=plain(__doc__))
    p.add_argument("--ckpt", required=True, help="run checkpoint of either framework (RUN/best.pth, RUN/best.ckpt)")
    p.add_argument("--data-dir", required=True, help="ImageFolder root with the split to evaluate")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="the split folder of --data-dir to evaluate (default: val)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward; the result does not depend on it (default: 32)")
    p.add_argument("--image-size", type=positive_int, default=None, help="default: the size the run was trained at")
    add_device(p, torch_side=True)
    add_json(p, "the result")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 on success, 2 (``error: ...`` on stderr) for a bad checkpoint or dataset."""
    p = build_parser()
    args = parse_args(p, argv)
    try:
        result = evaluate_checkpoint(args.ckpt, args.data_dir, args.split, args.batch_size, args.image_size,
                                     device=args.device)
    except (CheckpointError, DatasetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
