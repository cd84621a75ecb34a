"""The one flag convention of every command (``ms-transfer ...``, ``python -m ms_transfer.*``, ``python -m parity``):
the choices of ``--mode`` / ``--device`` / ``--padding``, ``--batch-size`` (and its hidden old spelling), ``--json
PATH``, the exit codes, and help text without docstring markup. Plain Python: no MindSpore, no torch.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from .metrics import positive_int


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and where it came from (exit code 2). Defined
    here, beside the exit codes, so the MindSpore context can raise it without loading the config schema (and with
    it the architecture registry: ``parity.compare_models`` must load no architecture module)."""


__all__ = ["MODES", "DEVICES", "PADDINGS", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "add_mode", "add_device",
           "add_batch_size", "add_json", "json_path", "write_json", "plain"]

#: MindSpore's execution modes (``python -m parity`` adds ``both``: it checks one after the other)
MODES = ("graph", "pynative")
#: MindSpore's ``device_target`` values; the torch side maps CPU and GPU (CUDA) and refuses Ascend with the fix
DEVICES = ("CPU", "GPU", "Ascend")
#: network padding: ``auto`` is the pretrained weights entry's convention, else torch
#: (:func:`ms_transfer.core.weights.resolve_padding`)
PADDINGS = ("auto", "torch", "same")
#: every command: 0 done, 1 a run or check failed, 2 bad input (a bad flag, config, dataset, checkpoint or image)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: the largest existing file ``--json`` reads to see whether it holds JSON (a result of this project is kilobytes)
MAX_JSON_BYTES = 64 * 2**20

MODE_HELP = "MindSpore execution mode: graph (static graph, compiled once) or pynative (eager)"
DEVICE_HELP = ("MindSpore's device_target: CPU, GPU or Ascend (this project runs on CPU; GPU and Ascend are "
               "reached through reference bundles, docs/parity-in-ci.md)")


def add_mode(parser: argparse.ArgumentParser, default: str = "graph", why: str = "", extra: Sequence[str] = ()) -> None:
    """``--mode``: :data:`MODES` (plus ``extra``, e.g. parity's ``both``); a default other than graph says ``why``."""
    parser.add_argument("--mode", default=default, choices=[*MODES, *extra],
                        help=f"{MODE_HELP} (default: {default}{': ' + why if why else ''})")


def add_device(parser: argparse.ArgumentParser, torch_side: bool = False) -> None:
    """``--device``: :data:`DEVICES`, default CPU; ``torch_side``: a torch command (CUDA for GPU, Ascend refused)."""
    note = "; torch maps GPU to CUDA and has no Ascend backend here" if torch_side else ""
    parser.add_argument("--device", default="CPU", choices=list(DEVICES), help=f"{DEVICE_HELP}{note} (default: CPU)")


def add_batch_size(parser: argparse.ArgumentParser, help: str, dest: str = "batch_size",
                   default: Any = None) -> None:
    """``--batch-size N`` and its old spelling ``--batch`` (hidden: it still parses, into the same ``dest``, but
    ``--help`` and the docs show only ``--batch-size``)."""
    parser.add_argument("--batch-size", dest=dest, type=positive_int, default=default, metavar="N", help=help)
    # the same default: argparse's get_default(dest) returns the first non-None one of the actions sharing dest
    parser.add_argument("--batch", dest=dest, type=positive_int, default=default, help=argparse.SUPPRESS)


def _holds_json(path: Path) -> bool:
    """An existing file that a ``--json`` may replace: a ``.json`` file, or one whose content is JSON (the result
    of an earlier run written to a path without the suffix)."""
    if path.suffix.lower() == ".json":
        return True
    if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:   # a folder, a device, a checkpoint...
        return False
    try:
        json.loads(path.read_bytes())
    except ValueError:   # not UTF-8 or not JSON: an image, a log...
        return False
    return True


def json_path(text: str) -> Path:
    """``--json PATH``'s type: an output path. A path with an image suffix, or an existing file that is not
    JSON, is refused (exit 2): ``predict --json a.jpg b.jpg`` from before ``--json`` took a path would
    otherwise overwrite ``a.jpg``."""
    from .data import IMAGE_EXTENSIONS   # here: core.data loads the architecture registry (parity.compare_models must not)

    path = Path(text)
    if path.suffix.lower() in IMAGE_EXTENSIONS or (path.exists() and not _holds_json(path)):
        what = "an image" if path.suffix.lower() in IMAGE_EXTENSIONS else "an existing file that is not JSON"
        raise argparse.ArgumentTypeError(
            f"{text} is {what}; --json takes the output path of the JSON result (e.g. --json result.json) and "
            "never overwrites such a file (python -m ms_transfer.predict: to print JSON use --format json)")
    return path


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json PATH``, the same on every command: write ``what`` as JSON to PATH (folders created)."""
    parser.add_argument("--json", type=json_path, default=None, metavar="PATH",
                        help=f"also write {what} as JSON to PATH (an image or an existing file that is not JSON is refused)")


def write_json(path: Optional[Path], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` (its folder created); nothing for ``None``."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: Optional[str]) -> str:
    """A docstring as ``--help`` text: Sphinx roles (``:func:`x```) and reStructuredText / markdown backticks
    removed, the words kept."""
    return _ROLE.sub(r"\1", text or "").replace("``", "").replace("`", "")
