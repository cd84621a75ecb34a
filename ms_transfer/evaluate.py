"""``python -m ms_transfer.evaluate --ckpt RUN/best.ckpt --data-dir DIR``: accuracy, per-class, confusion."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from mindspore import nn

from .core import evaluation
from .core.flags import add_device, add_mode
from .core.loop import validate
from .core.metrics import cross_entropy, format_result
from .mindspore_backend.backend import MindSporeBackend
from .mindspore_backend.checkpoint import load_state_into
from .mindspore_backend.context import release_compiled_graphs, set_context
from .mindspore_backend.data import create_dataset
from .models import build_model

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
    """Evaluate a checkpoint on ``data_dir/split`` (result of :func:`evaluate_net` + ``classes``): a run checkpoint
    of either framework (``best.pth`` from ``torch_reference.train`` is converted on the fly) or a plain weight
    file (:func:`ms_transfer.core.evaluation.prepare`, which names the errors). ``image_size`` and
    ``resize_backend`` default to the run's (else 224 / ``mindspore``)."""
    job = evaluation.prepare(ckpt, data_dir, split, image_size, "ms_transfer")
    net = build_model(job.arch, len(job.classes), job.padding)
    load_state_into(net, job.state)
    dataset, _ = create_dataset(job.root, split, job.preprocess, batch_size, train=False, shuffle=False, seed=0,
                                num_workers=num_workers,
                                resize_backend=resize_backend or job.config.get("resize_backend") or "mindspore")
    try:
        result = evaluate_net(net, dataset, len(job.classes))
    finally:
        # the network built here is done with: MindSpore would keep its graph and its weights (VGG16: 0.5 GB)
        release_compiled_graphs()
    result["classes"] = job.classes
    return result


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resize-backend", default=None, choices=["mindspore", "pil"],
                   help="val resize (default: the run's); pil = exactly torchvision's")
    add_mode(p)
    add_device(p)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.evaluate`` (no side effects: docs/cli.md renders it)."""
    return evaluation.build_parser("python -m ms_transfer.evaluate", __doc__, _flags)


def _evaluate(args: argparse.Namespace) -> Dict:
    set_context(args.mode, args.device)
    return evaluate_checkpoint(args.ckpt, args.data_dir, args.split, args.batch_size, args.image_size,
                               resize_backend=args.resize_backend)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 on success, 2 (``error: ...`` on stderr) for a bad checkpoint or dataset."""
    return evaluation.run(build_parser(), argv, _evaluate)


if __name__ == "__main__":
    sys.exit(main())
