"""Reading and writing weight files: torch ``.pth``/``.pt``, MindSpore ``.ckpt`` and ``.safetensors``.

Everything is exchanged as ``{name: numpy array}`` plus a small JSON-able ``meta`` dict, so the
conversion logic never touches a framework tensor type. Writes are atomic (temp file + ``os.replace``)
and torch files are loaded with ``weights_only=True``: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
TORCH_EXTS = (".pth", ".pt")
FORMATS = {".pth": "torch", ".pt": "torch", ".ckpt": "mindspore", ".safetensors": "safetensors"}
#: key under which ``meta`` is stored in a ``.ckpt`` (append_dict) or ``.safetensors`` header.
META_KEY = "ms_transfer_meta"
#: prefix of optimizer-state entries (momentum buffers, step counter) in ms_transfer.train's ``last.ckpt``;
#: framework-specific, so conversion leaves them out
OPTIMIZER_PREFIX = "optimizer."


class CheckpointError(ValueError):
    """A weight file cannot be read, written or used; the message names the file and the fix."""


@dataclass
class WeightFile:
    """Tensors of a weight file as numpy arrays, plus metadata (naming scheme, arch, classes, ...)."""

    state: "OrderedDict[str, np.ndarray]"
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None


def file_format(path: PathLike) -> str:
    """``torch`` / ``mindspore`` / ``safetensors`` from the file extension, or a clear error."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise CheckpointError(f"{path}: unsupported extension {ext or '(none)'!r}; use one of "
                              f"{', '.join(FORMATS)} (torch state_dict, MindSpore checkpoint, safetensors)")
    return FORMATS[ext]


def read_weights(path: PathLike) -> WeightFile:
    """Read any supported weight file into numpy arrays (format chosen by extension)."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    reader = {"torch": _read_torch, "mindspore": _read_mindspore, "safetensors": _read_safetensors}[fmt]
    state, meta = reader(path)
    if not state:
        raise CheckpointError(f"{path}: contains no tensors")
    return WeightFile(state, meta, path)


def write_weights(path: PathLike, state: Dict[str, np.ndarray], meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``state`` atomically: a crash mid-write never leaves a partial or missing file at ``path``.

    ``meta`` is kept in ``.ckpt`` and ``.safetensors`` files. ``.pth`` files are plain state dicts (what
    ``torchvision``'s ``load_state_dict`` expects) unless ``meta`` describes a training run (has ``classes``):
    then they are ``{"model": state_dict, META_KEY: json}`` like ``torch_reference.train``'s checkpoints, so a
    run converted between frameworks stays a run (``model.load_state_dict(torch.load(p)["model"])``).
    """
    path = Path(path)
    writer = {"torch": _write_torch, "mindspore": _write_mindspore, "safetensors": _write_safetensors}[
        file_format(path)]
    return atomic_write(path, lambda tmp: writer(tmp, state, meta or {}))


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path`` (atomic on POSIX).

    A crash or exception inside ``write`` leaves ``path`` as it was; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name keeps the extension: MindSpore's save_checkpoint appends ".ckpt" otherwise.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _contiguous(array: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns 0-d arrays (torch's num_batches_tracked) into 1-d ones
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


# --- torch ---------------------------------------------------------------------------------------

def _read_torch(path: Path):
    import pickle

    import torch
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


def _write_torch(path: Path, state, meta) -> None:
    import torch
    tensors = OrderedDict((k, torch.from_numpy(_contiguous(v))) for k, v in state.items())
    if "classes" in meta:  # a training run's weights: keep arch/classes/config like torch_reference's checkpoints
        torch.save({"model": tensors, META_KEY: json.dumps(meta)}, path)
    else:
        torch.save(tensors, path)


# --- MindSpore -----------------------------------------------------------------------------------

def _mem_available() -> Optional[int]:
    """Bytes the kernel can hand out now (``MemAvailable``: free memory plus reclaimable page cache), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_mindspore(path: Path):
    import mindspore as ms
    # MindSpore 2.10's load_checkpoint refuses a file larger than *free* memory (sysconf SC_AVPHYS_PAGES), which
    # leaves out the page cache the kernel reclaims on demand: after a few GB of file I/O, free memory here was
    # 225 MB with 22 GB available, and a 241 MB ResNet152 .ckpt (a 531 MB VGG's, too) was refused. Ask it with
    # MemAvailable instead, for this call (its private hook; left alone where a version does not have it).
    from mindspore.train import serialization
    original = getattr(serialization, "_get_available_memory", None)
    available = _mem_available()
    if original is not None and available is not None:
        serialization._get_available_memory = lambda: available
    try:
        raw = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
    finally:
        if original is not None:
            serialization._get_available_memory = original
    state, meta = OrderedDict(), {}
    for name, value in raw.items():
        if name == META_KEY:
            meta = json.loads(value)
        elif isinstance(value, str):
            meta[name] = value
        else:
            state[name] = value.asnumpy()
    return state, meta


def _write_mindspore(path: Path, state, meta) -> None:
    import mindspore as ms
    entries = [{"name": k, "data": ms.Tensor(_contiguous(v))} for k, v in state.items()]
    ms.save_checkpoint(entries, str(path), append_dict={META_KEY: json.dumps(meta)} if meta else None)


# --- safetensors ---------------------------------------------------------------------------------

def _read_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            state = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    meta = json.loads(header[META_KEY]) if META_KEY in header else {}
    return state, meta


def _write_safetensors(path: Path, state, meta) -> None:
    from safetensors.numpy import save_file
    save_file({k: _contiguous(v) for k, v in state.items()}, str(path),
              metadata={META_KEY: json.dumps(meta)} if meta else None)
