"""Old path of :mod:`ms_transfer.mindspore_backend.onednn`, kept for the README's ``python -m ms_transfer.onednn``
(probe once, print the decision); imported, it is the same module object as the new path."""
import sys

from .mindspore_backend import onednn as _moved

if __name__ == "__main__":
    _moved.main()
else:
    sys.modules[__name__] = _moved
