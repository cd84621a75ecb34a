"""Model registry in the style of mindcv / timm: ``@register_model`` records a model builder by name."""
from __future__ import annotations

from typing import Callable, Dict, List

_MODELS: Dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Register a model builder under its function name; a second builder with the same name is an error."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__}); "
                         "give the new builder another name")
    _MODELS[name] = fn
    return fn


def list_models() -> List[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_builder(name: str) -> Callable:
    """The registered builder of ``name``; a clear error listing the available names otherwise."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]
