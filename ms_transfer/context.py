"""Old path of :mod:`ms_transfer.mindspore_backend.context` (earlier examples import ``set_context`` from here):
the same module object, so attributes and monkeypatches of either name act on the one module."""
import sys

from .mindspore_backend import context as _moved

sys.modules[__name__] = _moved
