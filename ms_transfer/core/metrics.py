"""Classification metrics shared by both frameworks' evaluation (plain numpy)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy in float64 (log-sum-exp stabilised)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def classification_metrics(logits: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int) -> Dict:
    """``loss`` (mean cross-entropy), ``accuracy``, ``per_class_accuracy`` (``None`` for a class without
    samples), ``confusion`` (rows: true, columns: predicted), ``num_samples`` and ``predictions`` (the predicted
    class of every sample, in order: what :class:`~.callbacks.TestEvaluation` records) from per-batch arrays."""
    if not labels:
        raise ValueError("the evaluation set is empty")
    logits_a = np.concatenate([np.asarray(z) for z in logits])
    labels_a = np.concatenate([np.asarray(y) for y in labels]).astype(np.int64)
    preds_a = logits_a.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels_a, preds_a), 1)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
    return {"loss": float(cross_entropy(logits_a, labels_a).mean()), "accuracy": float((preds_a == labels_a).mean()),
            "per_class_accuracy": per_class, "confusion": confusion.tolist(), "num_samples": int(len(labels_a)),
            "predictions": preds_a.tolist()}


def format_result(result: Dict) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as text (``result`` needs ``classes``)."""
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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
