"""``python -m ms_transfer.evaluate --ckpt RUN/best.ckpt --data-dir DIR``: accuracy, per-class, confusion."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from mindspore import nn

from .checkpoint import CheckpointError, load_run_checkpoint
from .context import set_context
from .data import DatasetError, create_dataset, list_classes, resolve_data_root


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy in float64 (log-sum-exp stabilised)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def evaluate_net(net: nn.Cell, dataset, num_classes: Optional[int] = None, return_batch: bool = False) -> Dict:
    """Eval-mode pass over ``dataset`` (batches of ``(image, label)``).

    Returns ``loss`` (mean cross-entropy), ``accuracy``, ``per_class_accuracy`` (``None`` for a class
    without samples), ``confusion`` (rows: true, columns: predicted), ``num_samples`` and ``seconds``;
    with ``return_batch`` also ``batch = (images, labels, preds)`` of the first batch (numpy, for plots).
    The net is left in eval mode.
    """
    start = time.perf_counter()
    net.set_train(False)
    losses, preds, labels = [], [], []
    batch = None
    for x, y in dataset.create_tuple_iterator(num_epochs=1):
        logits = net(x).asnumpy()
        y = y.asnumpy().astype(np.int64)
        if return_batch and batch is None:
            batch = (x.asnumpy(), y, logits.argmax(axis=1))
        losses.append(cross_entropy(logits, y))
        preds.append(logits.argmax(axis=1))
        labels.append(y)
        num_classes = num_classes or logits.shape[1]
    if not labels:
        raise DatasetError("the evaluation set is empty")
    preds_a, labels_a = np.concatenate(preds), np.concatenate(labels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels_a, preds_a), 1)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
    result = {"loss": float(np.concatenate(losses).mean()), "accuracy": float((preds_a == labels_a).mean()),
              "per_class_accuracy": per_class, "confusion": confusion.tolist(), "num_samples": int(len(labels_a)),
              "seconds": time.perf_counter() - start}
    if return_batch:
        result["batch"] = batch
    return result


def evaluate_checkpoint(ckpt: str, data_dir: str, split: str = "val", batch_size: int = 32,
                        image_size: Optional[int] = None, num_workers: int = 2) -> Dict:
    """Evaluate a training-run checkpoint on ``data_dir/split`` (result of :func:`evaluate_net` + ``classes``).

    ``image_size`` defaults to the checkpoint's (else 224). Raises :class:`CheckpointError` for a missing or
    non-run checkpoint and :class:`DatasetError` when the split's classes differ from the checkpoint's.
    """
    net, weights = load_run_checkpoint(ckpt)
    classes = weights.meta["classes"]
    root = resolve_data_root(data_dir)
    found = list_classes(root, split)
    if found != classes:
        raise DatasetError(f"class mismatch: {root / split} has classes {found}, but {ckpt} was trained on "
                           f"{classes}; evaluate on a dataset with exactly these class folders (same names)")
    size = image_size or weights.meta.get("image_size", 224)
    dataset, _ = create_dataset(root, split, size, batch_size, train=False, shuffle=False, seed=0,
                                num_workers=num_workers)
    result = evaluate_net(net, dataset, len(classes))
    result["classes"] = classes
    return result


def format_result(result: Dict) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as text."""
    classes: List[str] = result["classes"]
    width = max(len(c) for c in classes) + 2
    lines = [f"accuracy {result['accuracy']:.4f} on {result['num_samples']} images (mean loss {result['loss']:.4f})",
             "per-class accuracy:"]
    lines += [f"  {c:<{width}} " + ("n/a (no images)" if a is None else f"{a:.4f}")
              for c, a in zip(classes, result["per_class_accuracy"])]
    lines.append("confusion matrix (rows: true, columns: predicted):")
    lines.append(" " * (width + 2) + "".join(f"{c:>{width}}" for c in classes))
    lines += [f"  {c:<{width}}" + "".join(f"{v:>{width}}" for v in row) for c, row in zip(classes, result["confusion"])]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 on success, 2 (``error: ...`` on stderr) for a bad checkpoint or dataset."""
    p = argparse.ArgumentParser(prog="python -m ms_transfer.evaluate", description=__doc__)
    p.add_argument("--ckpt", required=True, help="training-run checkpoint (RUN/best.ckpt or RUN/last.ckpt)")
    p.add_argument("--data-dir", required=True, help="ImageFolder root with the split to evaluate")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--image-size", type=_positive, default=None, help="default: the size the run was trained at")
    p.add_argument("--mode", default="graph", choices=["graph", "pynative"])
    p.add_argument("--device", default="CPU", choices=["CPU", "GPU"])
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    set_context(args.mode, args.device)
    try:
        result = evaluate_checkpoint(args.ckpt, args.data_dir, args.split, args.batch_size, args.image_size)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
