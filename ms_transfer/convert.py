"""``python -m ms_transfer.convert SRC DST``: checkpoint porting; the logic lives in :mod:`ms_transfer.core.convert`
(framework-neutral), this module is only the command's entry point."""
import sys

from .core.convert import main

if __name__ == "__main__":
    sys.exit(main())
