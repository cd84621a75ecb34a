"""torch run checkpoints and pretrained-weight loading, through the same converter as the MindSpore side.

A run checkpoint (``best.pth`` / ``last.pth``) is ``{"model": state_dict, "optimizer": state_dict, "step": int,
META_KEY: json}``: only tensors, numbers and strings, so it loads with ``torch.load(..., weights_only=True)``.
``ms_transfer.core.checkpoint_io.read_weights`` reads it (weights + metadata), so ``python -m ms_transfer.convert``
and ``python -m ms_transfer.evaluate`` accept it as they accept a ``.ckpt``.
"""
from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ._torch import torch

from ms_transfer.core.checkpoint_io import META_KEY, CheckpointError, PathLike, atomic_write, read_weights
from ms_transfer.core import naming
from ms_transfer.core.archs import head_module
from ms_transfer.core.tasks import num_outputs
from ms_transfer.core.convert import convert_weights, excluded_names, into_arch
# both frameworks' weight files, for pretrained weights of either (neither module loads its framework)
from ms_transfer.mindspore_backend import ckpt_format  # noqa: F401

from . import pth_format  # noqa: F401

from .models import build_model, load_numpy_state


def save_run_checkpoint(path: PathLike, model: torch.nn.Module, meta: Dict[str, Any],
                        optimizer: Optional[torch.optim.Optimizer] = None, step: int = 0) -> None:
    """Atomically write the model (+ optimizer state and its step index) and ``meta`` (needs arch, classes)."""
    missing = [k for k in ("arch", "classes") if k not in meta]
    if missing:
        raise ValueError(f"run checkpoint metadata needs {missing}")
    meta = {"naming": "torchvision", "num_classes": len(meta["classes"]), **meta}
    obj: Dict[str, Any] = {"model": OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items()),
                           META_KEY: json.dumps(meta)}
    if optimizer is not None:
        obj["optimizer"], obj["step"] = optimizer.state_dict(), int(step)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_run_checkpoint(path: PathLike) -> Tuple[torch.nn.Module, Dict[str, Any], Dict[str, Any]]:
    """Rebuild a run's model from a run checkpoint of either framework; returns ``(model, meta, raw)``.

    ``raw`` is the torch checkpoint dict (``optimizer``, ``step``) for ``--resume``, empty for other formats.
    """
    path = Path(path)
    weights = read_weights(path)
    if "arch" not in weights.meta or "classes" not in weights.meta:
        raise CheckpointError(f"{path}: not a training-run checkpoint (no arch/classes metadata); use "
                              "load_pretrained for plain weight files")
    state, _, _ = convert_weights(weights, "torchvision")
    model = build_model(weights.meta["arch"], num_classes=num_outputs(weights.meta["arch"], len(weights.meta["classes"])),
                        padding=weights.meta.get("padding", "torch"))
    load_numpy_state(model, state)
    raw: Dict[str, Any] = {}
    if path.suffix.lower() in (".pth", ".pt"):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:  # read_weights already vetted it; keep the safe loader anyway
            raise CheckpointError(f"{path}: {exc}") from None
    return model, weights.meta, raw


def load_pretrained(model: torch.nn.Module, path: PathLike, arch: str, verbose: bool = True,
                    exclude: Sequence[str] = ()) -> str:
    """Load any supported weight file (.pth/.ckpt/.safetensors, any naming) into ``model``.

    The head is replaced (left at its init) when the checkpoint's class count differs. Raises
    :class:`CheckpointError` for another architecture or any missing trunk tensor. ``exclude``: glob patterns of
    this project's parameter names left at their init (as ``ms_transfer.mindspore_backend.checkpoint.load_pretrained``).
    Returns the report line.
    """
    num_classes = (getattr(model, "num_classes", None)
                   or model.state_dict()[naming.head_names("torchvision", arch)[0]].shape[0])
    state, _, report = convert_weights(read_weights(path), "torchvision", num_classes=num_classes)
    adapted = ""
    if report.arch != arch:  # e.g. the recogniser's trunk into both branches of the adder (in this project's names)
        to_ms = naming.name_map(report.arch, "torchvision", "ms_transfer")
        moved, adapted = into_arch({to_ms[k]: v for k, v in state.items() if k in to_ms}, report.arch, arch, path)
        to_torch = naming.name_map(arch, "ms_transfer", "torchvision")
        state = {to_torch[k]: v for k, v in moved.items()}
    project = naming.name_map(arch, "torchvision", "ms_transfer")
    excluded_project = set(excluded_names([project.get(k, k) for k in state], exclude, path))
    excluded = [k for k in state if project.get(k, k) in excluded_project]
    head = set(naming.head_names("torchvision", arch))
    if adapted:  # another architecture's trunk: the whole head of this one starts at its init
        head |= {k for k in model.state_dict() if k.startswith(head_module(arch) + ".")}
    expected = set(model.state_dict())
    missing = sorted(k for k in expected - set(state) if not (k in head or k.endswith("num_batches_tracked")))
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} trunk tensors missing, e.g. {missing[:3]}")
    load_numpy_state(model, {k: v for k, v in state.items() if k in expected and k not in excluded}, strict=False)
    line = f"Loaded {path}: {report}" + (f"\n  {adapted}" if adapted else "")
    if excluded:
        line += (f"\n  not loaded (pretrained_exclude; left at init): "
                 f"{', '.join(project.get(k, k) for k in excluded[:8])}{' ...' if len(excluded) > 8 else ''}")
    if verbose:
        print(line)
    return line
