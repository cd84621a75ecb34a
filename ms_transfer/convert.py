"""``python -m ms_transfer.convert SRC DST``: checkpoint porting; the logic lives in :mod:`ms_transfer.core.convert`
(framework-neutral), this module is only the command's entry point: it registers both frameworks' weight-file
formats with the core (neither module loads its framework until a file of its format is read or written)."""
import sys

from torch_reference import pth_format  # noqa: F401

from .mindspore_backend import ckpt_format  # noqa: F401
from .core.convert import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
