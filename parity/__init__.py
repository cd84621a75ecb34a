"""Parity suite: the MindSpore port vs torchvision on shared weights, against a measured noise floor.

Names are imported on first use (PEP 562), so ``import parity`` (e.g. for ``parity.compare``, which is plain
numpy) loads neither MindSpore nor torch until a check actually runs.
"""
from importlib import import_module

_EXPORTS = {"BUGS": ".bugs", "CheckResult": ".compare", "format_table": ".compare", "CHECKS": ".suite",
            "ParityConfig": ".suite", "ParityReport": ".suite", "run_parity": ".suite", "REGIMES": ".training",
            "TRAIN_BUGS": ".training"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
