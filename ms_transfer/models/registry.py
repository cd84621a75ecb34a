"""Which MindSpore builder makes which model: one builder per architecture *family*, plus your own models.

Every architecture of :mod:`ms_transfer.core.archs` is built by its family's builder (``@register_family("resnet")``
in :mod:`.resnet`, ``vgg`` in :mod:`.vgg`, ``seq``/``pair`` in :mod:`.seq`), so a new member of an existing family
needs no code here. ``@register_model`` records a model of your own under its function name, as mindcv / timm do.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from ..core.archs import ArchSpec, find_arch, list_archs

_MODELS: Dict[str, Callable] = {}
_FAMILIES: Dict[str, Callable] = {}
_ARCH_BUILDERS: Dict[str, Callable] = {}


def register_family(family: str) -> Callable[[Callable], Callable]:
    """Decorator: ``builder(spec, num_classes, padding, **kwargs)`` builds every architecture of ``family``."""
    def register(builder: Callable) -> Callable:
        if family in _FAMILIES and _FAMILIES[family] is not builder:
            raise ValueError(f"family {family!r} already has a builder ({_FAMILIES[family].__module__})")
        _FAMILIES[family] = builder
        return builder
    return register


def register_model(fn: Callable) -> Callable:
    """Register a model builder under its function name; a name already taken (by another of your models or by a
    registered architecture) is an error."""
    name = fn.__name__
    taken = _MODELS.get(name) or (arch_builder(name) if find_arch(name) is not None else None)
    if taken is fn:
        return fn
    if taken is not None:
        raise ValueError(f"model {name!r} is already registered (by {taken.__module__}); "
                         "give the new builder another name")
    _MODELS[name] = fn
    return fn


def arch_builder(name: str) -> Callable:
    """``name(num_classes=<the arch's default>, padding="torch", **kwargs)``: a registered architecture's builder
    (one function object per name, so ``ms_transfer.models.resnet50 is model_builder("resnet50")``)."""
    if name not in _ARCH_BUILDERS:
        spec = find_arch(name)
        if spec is None or spec.family not in _FAMILIES:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
        _ARCH_BUILDERS[name] = _bind(spec, _FAMILIES[spec.family])
    return _ARCH_BUILDERS[name]


def _bind(spec: ArchSpec, family_builder: Callable) -> Callable:
    def build(num_classes: int = spec.default_classes, padding: str = "torch", **kwargs):
        return family_builder(spec, num_classes, padding, **kwargs)
    build.__name__ = build.__qualname__ = spec.name
    build.__module__ = family_builder.__module__
    build.__doc__ = f"{spec.doc}. ``num_classes`` (default {spec.default_classes}), ``padding`` (torch / same)."
    return build


def list_models() -> List[str]:
    """Names of every model that can be built: the registered architectures and your own, sorted."""
    return sorted(set(_MODELS) | {a for a in list_archs() if find_arch(a).family in _FAMILIES})


def model_builder(name: str) -> Callable:
    """The builder of ``name``; a clear error listing the available names otherwise."""
    if name in _MODELS:
        return _MODELS[name]
    return arch_builder(name)
