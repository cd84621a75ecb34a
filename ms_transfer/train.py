"""``python -m ms_transfer.train``: transfer learning (wolf vs dog by default) in MindSpore static graph.

The loop is :func:`ms_transfer.core.loop.fit` (shared with ``python -m torch_reference.train``), driving the
MindSpore backend (:class:`ms_transfer.mindspore_backend.backend.MindSporeBackend`): per epoch a compiled train step
over the training set (tqdm bar), validation, ``metrics.jsonl``, atomic ``last.ckpt`` (+ optimizer state) and
``best.ckpt`` (by val accuracy). ``--resume`` continues from ``last.ckpt`` (``--epochs N`` larger than the
finished run extends it). A frozen trunk runs as inference, and its features are cached (``feature_cache``).
"""
from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Dict, Optional, Sequence

# absolute imports: MindSpore's compile cache parses this entry script's imports with no package (2.10:
# "no package specified for '.core.config.TrainConfig'" for relative ones)
from ms_transfer.core.config import TrainConfig
from ms_transfer.core.recipe import TrainingError, cli_main

if TYPE_CHECKING:
    from ms_transfer.core.callbacks import Callback

__all__ = ["TrainingError", "train", "main"]


def train(cfg: TrainConfig, callbacks: Optional[Sequence["Callback"]] = None) -> Dict:
    """Run (or resume) training in MindSpore; returns the run summary. ``callbacks``: what the run writes and
    shows, ``None`` for the defaults (see :func:`ms_transfer.core.loop.fit`)."""
    # here, not at the top: --help and bad flags answer fast
    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from ms_transfer.mindspore_backend.context import release_compiled_graphs
    from ms_transfer.core.loop import fit
    try:
        return fit(cfg, MindSporeBackend(), callbacks)
    finally:
        release_compiled_graphs()   # the run's graphs: a process that trains again would keep each run's
        # every MindSpore Parameter is in a reference cycle (its ParamInfo points back to it): the run's network and
        # optimizer state wait for a full collection (VGG16, cats vs dogs: 0.5 GiB past the end of the run)
        gc.collect()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; bad input exits 2 with the reason, a failed run exits 1."""
    return cli_main(train, argv, "python -m ms_transfer.train", __doc__)


if __name__ == "__main__":
    from ms_transfer.mindspore_backend import compile_cache
    compile_cache.allow_for_this_process()   # one process, one run: MindSpore's compile cache is safe here
    sys.exit(main())
