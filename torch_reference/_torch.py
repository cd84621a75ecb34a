"""``from ._torch import torch``: the first import of every torch_reference module that needs torch, so that the
MindSpore-only install gets an error naming the ``torch`` extra instead of a bare "No module named 'torch'"."""
from . import require_torch

torch = require_torch()

__all__ = ["torch"]
