"""``python -m ms_transfer COMMAND ...``: the ``ms-transfer`` console script (:mod:`ms_transfer.cli`)."""
import sys

from ms_transfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
