"""``python -m parity``: the suite's command line (:mod:`parity.suite.cli`)."""
import sys

from ms_transfer.mindspore_backend.context import freeze_imported_objects
from parity.suite.cli import main
from torch_reference import TORCH_EXTRA, is_missing_torch


def run() -> int:
    """:func:`main`, with the MindSpore-only install's missing torch reported as bad input (exit 2), not a
    traceback: without torch only ``--check-reference`` runs."""
    freeze_imported_objects()   # the imports above are the process's: MindSpore's collection before each compile skips them
    try:
        return main()
    except ImportError as exc:
        if not is_missing_torch(exc):
            raise
        message = str(exc) if "ms_transfer[torch]" in str(exc) else TORCH_EXTRA.format(what="this command")
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
