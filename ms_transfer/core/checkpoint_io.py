"""Reading and writing weight files: torch ``.pth``/``.pt``, MindSpore ``.ckpt`` and ``.safetensors``.

Everything is exchanged as ``{name: numpy array}`` plus a small JSON-able ``meta`` dict, so the
conversion logic never touches a framework tensor type. Writes are atomic (temp file + ``os.replace``).

The core imports no framework: each framework's format is a :class:`WeightFormat` that its backend registers
on import (:func:`register_format`; MindSpore's ``.ckpt`` in :mod:`ms_transfer.mindspore_backend.ckpt_format`, torch's
``.pth``/``.pt`` in :mod:`torch_reference.pth_format`; both backends' checkpoint modules and the CLIs that read
weight files import both). ``.safetensors`` needs no framework and is registered here. Reading or writing a
format nobody registered is a :class:`CheckpointError` naming the module to import.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
TORCH_EXTS = (".pth", ".pt")
#: every weight-file extension the project knows -> its format (readers and writers: :func:`register_format`)
FORMATS = {".pth": "torch", ".pt": "torch", ".ckpt": "mindspore", ".safetensors": "safetensors"}
#: the module whose import registers each format (named in the error when it is missing)
PROVIDERS = {"torch": "torch_reference.pth_format", "mindspore": "ms_transfer.mindspore_backend.ckpt_format",
             "safetensors": __name__}
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


@dataclass
class WeightFormat:
    """One weight-file format, as its framework reads and writes it (registered with :func:`register_format`)."""

    #: a value of :data:`FORMATS` (``torch`` / ``mindspore`` / ``safetensors``)
    name: str
    #: ``read(path) -> (state, meta)``: tensors as numpy arrays and the stored metadata; a
    #: :class:`CheckpointError` naming the file when it cannot be read
    read: Callable[[Path], Tuple[Any, Dict[str, Any]]]
    #: ``write(path, state, meta)``: the whole file at ``path`` (:func:`write_weights` makes it atomic)
    write: Callable[[Path, Dict[str, np.ndarray], Dict[str, Any]], None]


_REGISTERED: Dict[str, WeightFormat] = {}


def register_format(fmt: WeightFormat) -> WeightFormat:
    """Make ``fmt`` the reader/writer of its format's extensions (:data:`FORMATS`); registering a name again
    replaces it. Returns ``fmt``."""
    if fmt.name not in PROVIDERS:
        raise ValueError(f"unknown weight format {fmt.name!r}; known: {', '.join(PROVIDERS)} "
                         "(a new one needs its extensions in FORMATS and its module in PROVIDERS)")
    _REGISTERED[fmt.name] = fmt
    return fmt


def weight_format(path: PathLike) -> WeightFormat:
    """The registered :class:`WeightFormat` of ``path``'s extension, or a clear error (unknown extension, or
    its framework's format module not imported in this process)."""
    name = file_format(path)
    if name not in _REGISTERED:
        raise CheckpointError(f"{path}: no reader/writer for {name} files is registered in this process; "
                              f"import {PROVIDERS[name]} first (python -m ms_transfer.convert and the other "
                              "command-line tools do)")
    return _REGISTERED[name]


def read_weights(path: PathLike) -> WeightFile:
    """Read any supported weight file into numpy arrays (format chosen by extension)."""
    path = Path(path)
    fmt = weight_format(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    state, meta = fmt.read(path)
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
    fmt = weight_format(path)
    return atomic_write(path, lambda tmp: fmt.write(tmp, state, meta or {}))


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


def contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous, for the writers (copied only when it is not)."""
    # not np.ascontiguousarray: it turns 0-d arrays (torch's num_batches_tracked) into 1-d ones
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


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
    save_file({k: contiguous(v) for k, v in state.items()}, str(path),
              metadata={META_KEY: json.dumps(meta)} if meta else None)


register_format(WeightFormat("safetensors", _read_safetensors, _write_safetensors))
