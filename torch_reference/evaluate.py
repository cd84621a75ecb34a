"""``python -m torch_reference.evaluate --ckpt RUN/best.pth --data-dir DIR``: the torchvision side of
``ms_transfer.evaluate`` (same metrics, same output), for run checkpoints of either framework and plain weight
files."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from ._torch import torch

from ms_transfer.core import evaluation
from ms_transfer.core.flags import add_device
from ms_transfer.core.loop import validate

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
    ``best.ckpt``) or a plain weight file (:func:`ms_transfer.core.evaluation.prepare`, which names the errors)."""
    job = evaluation.prepare(ckpt, data_dir, split, image_size, "torchvision")
    model = build_model(job.arch, len(job.classes), job.padding)
    load_numpy_state(model, job.state)
    loader, _ = create_loader(job.root, split, job.preprocess, batch_size, train=False, shuffle=False, seed=0,
                              num_workers=num_workers)
    result = evaluate_model(model.to(torch_device(device)), loader, len(job.classes))
    result["classes"] = job.classes
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m torch_reference.evaluate`` (no side effects: docs/cli.md renders it)."""
    return evaluation.build_parser("python -m torch_reference.evaluate", __doc__,
                                   lambda p: add_device(p, torch_side=True))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 on success, 2 (``error: ...`` on stderr) for a bad checkpoint or dataset."""
    return evaluation.run(build_parser(), argv, lambda args: evaluate_checkpoint(
        args.ckpt, args.data_dir, args.split, args.batch_size, args.image_size, device=args.device))


if __name__ == "__main__":
    sys.exit(main())
