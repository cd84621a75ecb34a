"""Parity suite: the MindSpore port vs torchvision on shared weights, against a measured noise floor.

Names are imported on first use (PEP 562), so ``import parity`` loads neither MindSpore nor torch until a check
actually runs (``parity.check_reference`` never loads torch). The any-model API::

    report = parity.compare_models(torch_module, ms_cell, inputs, targets, name_map=None)
    print(parity.format_table(report.results)); assert report.passed
"""
from importlib import import_module

_EXPORTS = {"BUGS": ".bugs", "CheckResult": ".compare", "format_table": ".compare", "ParityReport": ".compare",
            "CHECKS": ".api", "compare_models": ".api", "port_weights": ".api", "NameMapError": ".names",
            "ParityConfig": ".suite", "run_parity": ".suite", "REGIMES": ".training", "TRAIN_BUGS": ".training",
            "localize": ".localize", "save_reference": ".reference", "check_reference": ".reference"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
