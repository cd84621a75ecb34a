"""MindSpore models: one builder per architecture family (ResNet / ResNeXt / Wide ResNet, VGG, the small
networks), the registry, and the factory that builds them with weights.

Every registered architecture (:mod:`ms_transfer.core.archs`) is importable by name::

    from ms_transfer.models import resnext50_32x4d, create_model
    net = resnext50_32x4d(num_classes=10)          # == create_model("resnext50_32x4d", num_classes=10)

Importing this package applies the oneDNN decision (:mod:`ms_transfer.mindspore_backend.context`) before any of its
cells can run, so every module below it, and ``from ms_transfer.models import create_model``, gets it without importing
it.
"""
from ..mindspore_backend import context  # noqa: F401  (its import applies the oneDNN cap)
from ..core.archs import list_archs
from .factory import build_model, create_model, load_run_checkpoint
from .registry import arch_builder, list_models, model_builder, register_family, register_model
from .resnet import (BLOCKS, PADDINGS, ResidualBlock, ResidualBlockBase, ResNet, build_resnet, make_layer)
from .seq import PairNet, SeqNet, build_pair, build_seq
from .vgg import VGG, build_vgg

__all__ = ["build_model", "create_model", "load_run_checkpoint", "list_models", "model_builder", "register_model",
           "register_family", "BLOCKS", "PADDINGS", "ResidualBlock", "ResidualBlockBase", "ResNet", "make_layer",
           "build_resnet", "build_vgg", "build_seq", "build_pair", "SeqNet", "PairNet", "VGG", *list_archs()]


def __getattr__(name: str):
    """``ms_transfer.models.<arch>``: the builder of every registered architecture (PEP 562)."""
    if name in list_archs():
        return arch_builder(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
