"""Old path of :mod:`ms_transfer.mindspore_backend.optim` (the README names ``ms_transfer.optim.TorchAdam``): the
same module object, so attributes and monkeypatches of either name act on the one module."""
import sys

from .mindspore_backend import optim as _moved

sys.modules[__name__] = _moved
