"""MindSpore models: the ResNet and VGG families, the seed networks,
the registry, and the factory that builds them with weights.

Importing this package applies the oneDNN decision (:mod:`ms_transfer.context`) before any of its cells can run,
so every module below it, and ``from ms_transfer.models import create_model``, gets it without importing it.
"""
from .. import context  # noqa: F401  (its import applies the oneDNN cap)
from .factory import build_model, create_model, load_run_checkpoint
from .registry import list_models, model_builder, register_model
from .resnet import (BLOCKS, PADDINGS, ResidualBlock, ResidualBlockBase, ResNet, make_layer, resnet18, resnet34,
                     resnet50, resnet101, resnet152)
from .seq import PairNet, SeqNet, digit_adder, digit_adder4, digit_cnn, fashion_cnn
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = ["build_model", "create_model", "load_run_checkpoint", "list_models", "model_builder", "register_model",
           "BLOCKS", "PADDINGS", "ResidualBlock", "ResidualBlockBase", "ResNet", "make_layer", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "SeqNet", "PairNet", "fashion_cnn", "digit_cnn", "digit_adder",
           "digit_adder4", "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
