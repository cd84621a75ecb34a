"""torchvision ResNets (never a re-implementation) and numpy state-dict exchange."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping

import numpy as np
import torch
import torchvision


def build_model(arch: str, num_classes: int = 1000) -> torch.nn.Module:
    """``torchvision.models.<arch>(weights=None, num_classes=num_classes)``."""
    factory = getattr(torchvision.models, arch, None)
    if factory is None or not arch.startswith("resnet"):
        raise ValueError(f"unknown arch {arch!r}; use resnet18/34/50/101/152")
    return factory(weights=None, num_classes=num_classes)


def numpy_state(model: torch.nn.Module) -> "OrderedDict[str, np.ndarray]":
    """The model's state_dict as numpy arrays (copies, torchvision names)."""
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())


def load_numpy_state(model: torch.nn.Module, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Load a numpy state dict (torchvision names), casting to each tensor's dtype."""
    current = model.state_dict()
    tensors: Dict[str, torch.Tensor] = {
        k: torch.from_numpy(np.asarray(v)).to(current[k].dtype) if k in current else torch.from_numpy(np.asarray(v))
        for k, v in state.items()}
    model.load_state_dict(tensors, strict=strict)
