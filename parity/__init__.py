"""Parity: a MindSpore port against its torch original on shared weights, against a measured noise floor.

Two parts:

``parity.engine``  compares *any* ``torch.nn.Module`` / ``mindspore.nn.Cell`` pair and knows no architecture:
                   the checks and :class:`CompareOptions` (``comparison``), the tolerance rule (``tolerance``) and
                   the report (``report``), the weight mapping and its rule registry (``weight_map``), the loss
                   (``loss``), first-divergence localisation (``localization``), reference bundles (``bundle``),
                   the port's checkpoint and MindIR written and proven (``port``), the pytest helper
                   (``assertion``), detection power
                   (``sensitivity``), the dropout row (``dropout``), the two frameworks' sides (``torch_side``,
                   ``mindspore_side``).
``parity.suite``   this project's models on the engine: the problems (``problems``), porting bugs (``bugs``),
                   training-step and data-parallel parity, the val-pipeline check and ``python -m parity`` (``cli``;
                   your own model pair: ``own_model``).

The suite registers its architecture knowledge with the engine (the naming table as a name rule, its models as
the bundles' builder, :mod:`parity.suite.plugins`); this package defers that registration, so the engine loads it
only when the generic name rule leaves tensors unmatched or a bundle comes without its cell:
``parity.compare_models`` on any other pair loads no architecture module.

Names are imported on first use (PEP 562), so ``import parity`` loads neither MindSpore nor torch until a check
actually runs (``parity.check_reference`` never loads torch). The any-model API::

    report = parity.compare_models(torch_module, ms_cell, inputs, targets, name_map=None)
    print(parity.format_table(report.results)); assert report.passed
    parity.assert_port_matches(torch_module, ms_cell, inputs, targets)   # in a pytest suite: raises with the table
"""
from importlib import import_module

from .engine import plugins

plugins.defer("parity.suite.plugins")

_EXPORTS = {"BUGS": ".suite.bugs", "CheckResult": ".engine.report", "format_table": ".engine.report",
            "ParityReport": ".engine.report", "CHECKS": ".engine.comparison", "compare_models": ".engine.comparison",
            "compare_in_modes": ".engine.comparison", "CompareOptions": ".engine.comparison",
            "port_weights": ".engine.comparison", "NameMapError": ".engine.weight_map",
            "register_name_rule": ".engine.weight_map", "ParityConfig": ".suite.run", "run_parity": ".suite.run",
            "run_parity_in_modes": ".suite.run", "REGIMES": ".suite.training", "TRAIN_BUGS": ".suite.training",
            "localize": ".engine.localization", "save_reference": ".engine.bundle",
            "check_reference": ".engine.bundle", "register_model_builder": ".engine.bundle",
            "port_checkpoint": ".engine.port", "assert_port_matches": ".engine.assertion"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
