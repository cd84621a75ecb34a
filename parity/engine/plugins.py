"""What the engine leaves to the code that knows architectures, and how that code plugs in.

The engine knows no architecture: a name rule for a model family's own naming (``register_name_rule`` in
:mod:`parity.engine.weight_map`) or a builder that rebuilds a port from a bundle's model spec
(``register_model_builder`` in :mod:`parity.engine.bundle`) is registered by its owner. An owner that should not
be imported before it is needed (this project's suite loads its architecture tables) is *deferred*: ``defer``
names its module, and the engine imports it -- which registers its rules -- the first time a registry is asked
for something the engine cannot do alone (names the generic rule leaves unmatched, a bundle without a cell).
"""
from __future__ import annotations

from importlib import import_module
from typing import List

_DEFERRED: List[str] = []


def defer(module: str) -> None:
    """Import ``module`` (which registers its rules when imported) the first time a registry needs it."""
    if module not in _DEFERRED:
        _DEFERRED.append(module)


def load_deferred() -> None:
    """Import every deferred module (each once: Python caches modules)."""
    for module in list(_DEFERRED):
        import_module(module)
