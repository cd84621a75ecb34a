"""MindSpore models: the ResNet family, registry and factories."""
from .registry import create_model, list_models, register_model
from .resnet import (ARCH_SPECS, ResidualBlock, ResidualBlockBase, ResNet, make_layer, resnet18, resnet34,
                     resnet50, resnet101, resnet152)

__all__ = ["create_model", "list_models", "register_model", "ARCH_SPECS", "ResidualBlock", "ResidualBlockBase",
           "ResNet", "make_layer", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
