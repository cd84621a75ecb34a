"""``python -m ms_transfer.evaluate --ckpt RUN/best.ckpt --data-dir DIR``: accuracy, per-class, confusion."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from mindspore import nn

from .mindspore_backend.backend import MindSporeBackend
from .mindspore_backend.context import set_context
from .core.checkpoint_io import CheckpointError
from .core.config import ConfigError
from .core.data import DatasetError, check_classes_match, resolve_data_root
from .core.flags import add_device, add_json, add_mode, plain, write_json
from .core.log import parse_args
from .core.loop import validate
from .core.metrics import cross_entropy, format_result, positive_int
from .core.data import Preprocess
from .core.tasks import check_classifier
from .mindspore_backend.data import create_dataset
from .models import load_run_checkpoint

__all__ = ["evaluate_net", "evaluate_checkpoint", "cross_entropy", "format_result", "main"]


def evaluate_net(net: nn.Cell, dataset, num_classes: Optional[int] = None) -> Dict:
    """Eval-mode pass over ``dataset`` (batches of ``(image, label)``), the loop's own
    :func:`~ms_transfer.core.loop.validate`: ``loss`` (mean cross-entropy), ``accuracy``, ``per_class_accuracy``
    (``None`` for a class without samples), ``confusion`` (rows: true, columns: predicted), ``num_samples``,
    ``predictions`` (per image, in the dataset's order) and ``seconds``. The net is left in eval mode."""
    return validate(MindSporeBackend().adopt(net), dataset.create_tuple_iterator(num_epochs=1),
                    num_classes or int(net.num_classes))


def evaluate_checkpoint(ckpt: str, data_dir: str, split: str = "val", batch_size: int = 32,
                        image_size: Optional[int] = None, num_workers: int = 2,
                        resize_backend: Optional[str] = None) -> Dict:
    """Evaluate a training-run checkpoint on ``data_dir/split`` (result of :func:`evaluate_net` + ``classes``).

    Either framework's run checkpoint works (``best.pth`` from ``torch_reference.train`` is converted on the
    fly). ``image_size`` and ``resize_backend`` default to the run's (else 224 / ``mindspore``). Raises :class:`CheckpointError` for a missing or
    non-run checkpoint and :class:`DatasetError` when the split's classes differ from the checkpoint's.
    """
    net, weights = load_run_checkpoint(ckpt)
    check_classifier(weights.meta["arch"], ckpt)
    classes = weights.meta["classes"]
    root = resolve_data_root(data_dir)
    check_classes_match(root, split, classes, ckpt)
    size = Preprocess.from_config({**weights.meta.get("config", {}), "arch": weights.meta["arch"]},
                                  image_size or weights.meta.get("image_size", 224))
    backend = resize_backend or weights.meta.get("config", {}).get("resize_backend") or "mindspore"
    dataset, _ = create_dataset(root, split, size, batch_size, train=False, shuffle=False, seed=0,
                                num_workers=num_workers, resize_backend=backend)
    result = evaluate_net(net, dataset, len(classes))
    result["classes"] = classes
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.evaluate`` (no side effects: docs/cli.md renders it)."""
    p = argparse.ArgumentParser(prog="python -m ms_transfer.evaluate", description=plain(__doc__))
    p.add_argument("--ckpt", required=True, help="training-run checkpoint of either framework (RUN/best.ckpt, RUN/best.pth, ...)")
    p.add_argument("--data-dir", required=True, help="ImageFolder root with the split to evaluate")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="the split folder of --data-dir to evaluate (default: val)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward; the result does not depend on it (default: 32)")
    p.add_argument("--image-size", type=positive_int, default=None, help="default: the size the run was trained at")
    p.add_argument("--resize-backend", default=None, choices=["mindspore", "pil"],
                   help="val resize (default: the run's); pil = exactly torchvision's")
    add_mode(p)
    add_device(p)
    add_json(p, "the result")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 on success, 2 (``error: ...`` on stderr) for a bad checkpoint or dataset."""
    p = build_parser()
    args = parse_args(p, argv)
    try:
        set_context(args.mode, args.device)
        result = evaluate_checkpoint(args.ckpt, args.data_dir, args.split, args.batch_size, args.image_size,
                                     resize_backend=args.resize_backend)
    except (CheckpointError, DatasetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
