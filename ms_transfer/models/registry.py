"""Model registry in the style of mindcv / timm: ``@register_model`` + ``create_model``."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

_MODELS: Dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Register a model factory under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 1000, pretrained: Optional[str] = None, **kwargs):
    """Build a registered model by name, optionally loading weights from ``pretrained`` (a file path).

    ``pretrained`` may be a MindSpore ``.ckpt``, a torch ``.pth``/``.pt`` or a ``.safetensors`` file in any
    supported naming scheme; a head of a different size is left out and reported (transfer learning).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name](num_classes=num_classes, pretrained=pretrained, **kwargs)
