"""One flag convention across the commands (issue 24 §2): ``--batch-size`` (old spellings hidden, still parsed),
``--json PATH``, the same ``--mode`` / ``--device`` / ``--padding`` choices, the ``ms-transfer`` / ``ms-parity``
console scripts, help text that is true and plain, and the exit codes 0 / 1 / 2.

Cheap: parsers are built in this process (no model is built, trained or compiled); the only subprocesses are
``--help`` runs.
"""
from __future__ import annotations

import argparse

import pytest

from ms_transfer import bench
from parity.suite import cli as parity_cli


@pytest.mark.parametrize("build", [bench.build_parser, parity_cli.build_parser], ids=["bench", "parity"])
def test_batch_size_and_its_hidden_old_spelling_parse_to_the_same_value(build):
    parser = build()
    new, old = parser.parse_args(["--batch-size", "6"]), parser.parse_args(["--batch", "6"])
    dest = "batch" if build is bench.build_parser else "batch_size"
    assert getattr(new, dest) == getattr(old, dest) == 6
    assert getattr(parser.parse_args([]), dest) is None       # unset: the command's own default applies
    shown = parser.format_help()
    assert "--batch-size" in shown and "--batch " not in shown and "--batch\n" not in shown
    hidden = [a for a in parser._actions if "--batch" in a.option_strings]
    assert [a.help for a in hidden] == [argparse.SUPPRESS]


def test_the_old_batch_spelling_is_not_an_own_model_flag_either(capsys):
    """``--batch`` / ``--batch-size`` belong to the built-in models: with ``--torch-model`` either spelling is
    refused with the new name (the batch of an own pair is the first dimension of ``--input-shape``)."""
    for flag in ("--batch", "--batch-size"):
        code = parity_cli.main(["--torch-model", "m:f", "--ms-model", "m:g", "--input-shape", "2,3", flag, "4"])
        assert code == 2 and "--batch-size belong(s) to the built-in models" in capsys.readouterr().err
