"""torch's weight files (``.pth`` / ``.pt``) for the core's checkpoint I/O: registered on import.

Importing this module does not load torch (each function does, when a file is read or written): the MindSpore
side imports it to read torchvision's ``.pth`` weights without paying for torch in every process. Files are
loaded with ``weights_only=True``: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict

from ms_transfer.core.checkpoint_io import META_KEY, CheckpointError, WeightFormat, contiguous, register_format

from . import require_torch

__all__ = ["PTH"]


def _torch(what: str):
    """torch, or a :class:`CheckpointError` (what the CLIs report) naming the file and the ``torch`` extra."""
    try:
        return require_torch(what)
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"{exc}. Or convert the file to .safetensors where torch is installed "
                              "(python -m ms_transfer.convert FILE.pth FILE.safetensors)") from None


def read_pth(path: Path):
    """``(state, meta)`` of a torch state dict (plain, or under ``state_dict`` / ``model`` with the run's meta)."""
    torch = _torch(f"reading {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refusing to unpickle Python objects (weights_only=True). This file holds a pickled "
                "model or other code, not a state_dict. Re-save only the weights: "
                "torch.save(model.state_dict(), 'weights.pth')") from None
        raise CheckpointError(f"{path}: not a readable torch file ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({exc}); is it truncated?") from None
    if isinstance(obj, torch.nn.Module):  # only reachable for exotic allow-listed modules
        raise CheckpointError(f"{path}: holds a whole model; save model.state_dict() instead")
    meta: Dict[str, Any] = {}
    if isinstance(obj, dict):
        if isinstance(obj.get(META_KEY), str):  # torch_reference.train's run checkpoints
            meta = json.loads(obj[META_KEY])
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state_dict (dict of tensors), got {type(obj).__name__}")
    state = OrderedDict()
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                                  "expected a plain state_dict (or one under 'state_dict' / 'model')")
        state[name] = value.detach().cpu().numpy()  # wrapper prefixes ("module.", ...): convert_weights strips them
    return state, meta


def write_pth(path: Path, state, meta) -> None:
    """A plain state dict, or ``{"model": state_dict, META_KEY: json}`` for a training run's weights."""
    torch = _torch("writing a torch weight file (.pth)")   # `path` is the atomic write's temporary name
    tensors = OrderedDict((k, torch.from_numpy(contiguous(v))) for k, v in state.items())
    if "classes" in meta:  # a training run's weights: keep arch/classes/config like torch_reference's checkpoints
        torch.save({"model": tensors, META_KEY: json.dumps(meta)}, path)
    else:
        torch.save(tensors, path)


#: the registered format (tests patch its ``read`` / ``write``)
PTH = register_format(WeightFormat("torch", read_pth, write_pth))
