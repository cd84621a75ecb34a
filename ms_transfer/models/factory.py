"""Building MindSpore models by name, with pretrained weights: the layer above the models (timm's
``build_model_with_cfg``, mindcv's ``create_model``). Models know nothing about checkpoints; this module
resolves weights (a file or an entry of :mod:`ms_transfer.core.weights`), picks the padding convention the
weights were trained with, builds the model and loads it."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional, Tuple

from mindspore import nn

from ..mindspore_backend.checkpoint import LoadReport, load_pretrained, load_state_into
from ..core.checkpoint_io import OPTIMIZER_PREFIX, CheckpointError, PathLike, WeightFile, read_weights
from ..core.convert import convert_weights
from ..core import recipe
from ..core.tasks import num_outputs
from ..core.weights import resolve_padding, resolve_pretrained
from .registry import model_builder


def build_model(name: str, num_classes: int = 1000, padding: str = "torch", **kwargs) -> nn.Cell:
    """A freshly initialised registered model (``padding``: ``torch`` or ``same``, see ``models.resnet``; ``kwargs``
    go to the builder, e.g. a VGG's ``dropout``)."""
    return model_builder(name)(num_classes=num_classes, padding=padding, **kwargs)


def create_model(name: str, num_classes: int = 1000, pretrained: Optional[str] = None, padding: str = "auto",
                 verbose: bool = True) -> nn.Cell:
    """Build ``name`` for ``num_classes`` and load ``pretrained`` (a weight file of any supported format and
    naming, or a weights-table entry such as ``resnet50_tutorial``, downloaded once and verified).

    ``padding="auto"`` uses the weights entry's convention (``same`` for the tutorial's checkpoint), else
    torchvision's. A head of another class count is left at its initialisation and reported (transfer learning).
    The load report is kept as ``net.load_report``.
    """
    path, entry = resolve_pretrained(pretrained, recipe.CACHE_DIR) if pretrained else (None, None)
    padding, why = resolve_padding(padding, entry)
    net = build_model(name, num_classes, padding)
    if path:
        report = load_pretrained(net, path, verbose=False)
        report.notes.append(why)
        net.load_report = report
        if verbose:
            print(f"Loaded {path}\n{report}")
    return net


def load_run_checkpoint(path: PathLike, into: Optional[nn.Cell] = None) -> Tuple[nn.Cell, WeightFile]:
    """Rebuild the model of a training-run checkpoint of either framework; returns ``(net, weights)``.

    ``weights.meta`` holds the run metadata (arch, classes, padding, config, epoch, metrics); optimizer entries
    stay in ``weights.state`` under ``OPTIMIZER_PREFIX`` for ``--resume``. ``into``: a net to load the weights into
    instead, returned as ``net``, if it is the checkpoint's model (its arch, padding and every shape); its compiled
    graphs stay valid (a run's test pass on its best checkpoint compiles nothing new). Otherwise a new net is built.
    """
    weights = read_weights(path)
    if "arch" not in weights.meta or "classes" not in weights.meta:
        raise CheckpointError(f"{path}: not a training-run checkpoint (no arch/classes metadata); "
                              "use ms_transfer.models.create_model(..., pretrained=PATH) for plain weight files")
    arch, padding = weights.meta["arch"], weights.meta.get("padding", "torch")
    state = OrderedDict((k, v) for k, v in weights.state.items() if not k.startswith(OPTIMIZER_PREFIX))
    if weights.meta.get("naming", "ms_transfer") != "ms_transfer":  # e.g. torch_reference.train's best.pth
        state, _, _ = convert_weights(WeightFile(state, weights.meta, Path(path)), "ms_transfer")
    if into is not None and getattr(into, "arch", None) == arch and getattr(into, "padding", "torch") == padding:
        try:
            load_state_into(into, state)   # strict: a name or shape that differs changes nothing and raises
            return into, weights
        except CheckpointError:
            pass   # not this checkpoint's model (e.g. other classes): a new net
    net = build_model(arch, num_outputs(arch, len(weights.meta["classes"])), padding)
    load_state_into(net, state)
    return net, weights


__all__ = ["build_model", "create_model", "load_run_checkpoint", "LoadReport"]
