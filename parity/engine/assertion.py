"""A pytest helper for users' own test suites: ``parity.assert_port_matches(torch_module, ms_cell, inputs)``.

It runs :func:`parity.engine.comparison.compare_models` and turns a failed verdict into an ``AssertionError`` whose
message carries what a reader of the CI log needs without re-running anything: which rows failed, the whole
table, and where the port first diverges (localisation runs on a failing forward check unless the caller says
otherwise). A passing comparison returns its :class:`~parity.engine.report.ParityReport`::

    def test_my_port():
        report = parity.assert_port_matches(TorchNet(), MindSporeNet(), images, labels, name_map=MAP)
        assert report.names["matched"] == 7
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .comparison import Inputs, compare_models
from .localization import format_localization
from .report import ParityReport, format_table


def failure_message(report: ParityReport) -> str:
    """The text of a failed comparison: the failing rows by name, the table, the first diverging layer."""
    failing = [r.check for r in report.results if not r.passed]
    head = (f"the MindSpore port does not match its torch original: {len(failing)} of {len(report.results)} "
            f"checks failed ({', '.join(failing)})" if failing else "the comparison produced no results")
    parts = [head, format_table(report.results)]
    if report.localization:
        parts.append(format_localization(report.localization))
    return "\n".join(parts)


def assert_port_matches(torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray] = None,
                        **compare_options) -> ParityReport:
    """Compare the port with its torch original and raise ``AssertionError`` unless every check passes.

    Args:
        torch_module, ms_cell, inputs, targets: as :func:`parity.compare_models` (the cell receives the torch
            weights).
        compare_options: any :class:`~parity.engine.comparison.CompareOptions` field (``name_map=``, ``checks=``,
            ``seed=``, ...). ``localize`` defaults to ``"on_failure"`` here, so a failure names the first
            diverging layer; pass ``localize=False`` to skip that forward.
    Returns:
        the passing :class:`~parity.engine.report.ParityReport`.
    Raises:
        AssertionError: a check failed; the message holds the failing rows, the table and the localisation.
    """
    compare_options.setdefault("localize", "on_failure")
    report = compare_models(torch_module, ms_cell, inputs, targets, **compare_options)
    if not report.passed:
        raise AssertionError(failure_message(report))
    return report
