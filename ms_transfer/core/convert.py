"""Checkpoint porting between torchvision, this project (MindSpore tutorial names) and mindcv.

Library: :func:`convert_weights` renames a :class:`~ms_transfer.core.checkpoint_io.WeightFile` into any naming
scheme through the single table in :mod:`ms_transfer.core.naming`. CLI::

    python -m ms_transfer.core.convert SRC DST [--arch auto] [--src-naming auto] [--naming NAME]
                                          [--num-classes N | --drop-head] [--force]

The file format follows the extension (``.pth``/``.pt`` torch, ``.ckpt`` MindSpore, ``.safetensors``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import naming
from .log import parse_args
from .checkpoint_io import OPTIMIZER_PREFIX, CheckpointError, WeightFile, file_format, read_weights, write_weights

#: naming scheme written by default for each file format (safetensors keeps the source's naming).
DEFAULT_NAMING = {"torch": "torchvision", "mindspore": "ms_transfer", "safetensors": None}
_META_OWN_KEYS = ("naming", "arch", "num_classes", "num_batches_tracked")


@dataclass
class ConversionReport:
    """What a conversion did: detected arch and naming, what happened to the head."""

    arch: str
    src_naming: str
    dst_naming: str
    num_tensors: int
    checkpoint_classes: Optional[int]
    head: str  # "kept", "dropped (...)" or "absent in source"
    stripped_prefix: str = ""  # wrapper prefix removed from every key ("module.", "_orig_mod." ...)

    def __str__(self) -> str:
        classes = f", {self.checkpoint_classes} classes" if self.checkpoint_classes else ""
        stripped = f", wrapper prefix {self.stripped_prefix!r} stripped" if self.stripped_prefix else ""
        return (f"{self.arch}{classes}: {self.src_naming} -> {self.dst_naming} names, "
                f"{self.num_tensors} tensors, head {self.head}{stripped}")


def _preview(names: Sequence[str], n: int = 5) -> str:
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def convert_weights(weights: WeightFile, dst_naming: Optional[str], *, arch: str = "auto",
                    src_naming: str = "auto", num_classes: Optional[int] = None, drop_head: bool = False):
    """Rename ``weights`` into ``dst_naming`` (``None``: keep the source's); returns ``(state, meta, report)``.

    * ``arch`` / ``src_naming`` ``"auto"`` are detected from the keys and shapes (and file metadata).
    * The head is left out with ``drop_head`` or when ``num_classes`` differs from the checkpoint's.
    * Optimizer state (``optimizer.*`` entries of a run's ``last.ckpt``) is framework-specific and left out.
    * torch's ``num_batches_tracked`` is dropped going to MindSpore (recorded in ``meta`` so that a
      round trip back to torch restores it bit-exactly) and restored (0 if unknown) going to torchvision.
    """
    where = weights.path or "checkpoint"
    raw, prefix = strip_wrapper_prefix(weights.state, arch)
    tensors = OrderedDict((k, v) for k, v in raw.items()
                          if not k.endswith("." + naming.NUM_BATCHES_TRACKED) and not k.startswith(OPTIMIZER_PREFIX))
    tracked = {k[: -len(naming.NUM_BATCHES_TRACKED) - 1]: v for k, v in raw.items()
               if k.endswith("." + naming.NUM_BATCHES_TRACKED)}
    try:
        if arch == "auto":
            arch = weights.meta.get("arch") or naming.detect_arch({k: v.shape for k, v in tensors.items()})
        if src_naming == "auto":
            src_naming = weights.meta.get("naming") or naming.detect_scheme(tensors, arch)
        src_naming = naming.resolve_scheme(src_naming)
        dst_naming = naming.resolve_scheme(dst_naming or src_naming)
        table = naming.name_table(arch, src_naming)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None

    unknown = [k for k in tensors if k not in table]
    head_w, head_b = naming.head_names(src_naming, arch)
    missing = [k for k in table if k not in tensors and k not in (head_w, head_b)]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unexpected keys ({_preview(unknown)})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({_preview(missing)})")
        raise CheckpointError(
            f"{where}: does not match {arch} with {src_naming} names: {'; '.join(parts)}. Likely cause: a "
            "different depth (pass the right --arch, or 'auto') or another naming scheme (--src-naming).")

    has_head = head_w in tensors
    ckpt_classes = int(tensors[head_w].shape[0]) if has_head else None
    head = "kept" if has_head else "absent in source"
    if has_head and drop_head:
        head = "dropped (--drop-head)"
    elif has_head and num_classes is not None and num_classes != ckpt_classes:
        head = f"dropped (checkpoint has {ckpt_classes} classes, {num_classes} requested)"
    if head.startswith("dropped"):
        del tensors[head_w], tensors[head_b]

    renamed, _ = naming.rename(tensors, arch, src_naming, dst_naming)
    state: "OrderedDict[str, np.ndarray]" = OrderedDict()
    restored = _tracked_values(tracked, weights.meta.get("num_batches_tracked"))
    for key in naming.structural_keys(arch):
        name = naming.render(key, dst_naming)
        if name in renamed:
            state[name] = renamed[name]
        if key[1] == "bn_var" and dst_naming == "torchvision":
            module = naming.render(key, "torchvision").rsplit(".", 1)[0]
            state[f"{module}.{naming.NUM_BATCHES_TRACKED}"] = restored(module)

    meta: Dict[str, Any] = {k: v for k, v in weights.meta.items() if k not in _META_OWN_KEYS}
    meta.update(naming=dst_naming, arch=arch)
    if head == "kept":
        meta["num_classes"] = ckpt_classes
    else:
        meta.pop("classes", None)  # class names belong to the head that is gone
    if dst_naming != "torchvision":
        if tracked:
            values = {k: int(v) for k, v in tracked.items()}
            meta["num_batches_tracked"] = values.popitem()[1] if len(set(values.values())) == 1 else values
        elif "num_batches_tracked" in weights.meta:  # MindSpore naming -> MindSpore naming: carry it on
            meta["num_batches_tracked"] = weights.meta["num_batches_tracked"]
    report = ConversionReport(arch, src_naming, dst_naming, len(state), ckpt_classes, head, prefix)
    return state, meta, report


def into_arch(state: Mapping[str, np.ndarray], src_arch: str, dst_arch: str, where: object = "checkpoint"
              ) -> Tuple["OrderedDict[str, np.ndarray]", str]:
    """``state`` (this project's names, of ``src_arch``) made to fit ``dst_arch``; returns ``(state, note)``.

    The same architecture passes through. The digit adder takes its recogniser's trunk into each branch
    (:func:`~ms_transfer.core.naming.branch_copies`) as *independent copies* (the digit-adder article warns that assigning one
    module to both branches shares one set of parameters); the recogniser's head is not used. Anything else is a
    :class:`CheckpointError` naming both architectures.
    """
    if src_arch == dst_arch:
        return OrderedDict(state), ""
    copies = naming.branch_copies(src_arch, dst_arch)
    if not copies:
        raise CheckpointError(f"{where}: checkpoint is {src_arch} but the model is {dst_arch}; build {src_arch} "
                              f"(e.g. --arch {src_arch}) or use a {dst_arch} checkpoint")
    missing = [k for k in copies if k not in state]
    if missing:
        raise CheckpointError(f"{where}: the {src_arch} trunk lacks {', '.join(missing[:3])}")
    out = OrderedDict((dst, np.array(state[src], copy=True)) for src, dsts in copies.items() for dst in dsts)
    branches = sorted({d.split(".", 1)[0] for dsts in copies.values() for d in dsts})
    return out, (f"{src_arch} trunk ({len(copies)} tensors) copied into {' and '.join(branches)} as independent "
                 f"copies; its classifier is not used")


def excluded_names(names: Sequence[str], exclude: Sequence[str], where: object = "checkpoint") -> List[str]:
    """The ``names`` (this project's) that match a ``pretrained_exclude`` glob; a pattern matching none of them is a
    :class:`CheckpointError` (a typo would otherwise load the head it meant to leave out)."""
    from fnmatch import fnmatchcase

    unused = [p for p in exclude if not any(fnmatchcase(n, p) for n in names)]
    if unused:
        raise CheckpointError(f"pretrained_exclude {unused} match(es) no tensor of {where} (names as in this "
                              f"project, e.g. {', '.join(list(names)[:3])}); fix the pattern")
    return [n for n in names if any(fnmatchcase(n, p) for p in exclude)]


#: how many dotted levels of wrapper prefix are stripped at most (e.g. ``_orig_mod.module.``)
MAX_WRAPPER_DEPTH = 3


def _matches_a_model(names: Sequence[str], arch: str) -> bool:
    try:
        found = naming.detect_arch({n: () for n in names}) if arch == "auto" else arch
        naming.detect_scheme(names, found)
        return True
    except ValueError:
        return False


def strip_wrapper_prefix(state: Mapping[str, Any], arch: str = "auto") -> Tuple["OrderedDict[str, Any]", str]:
    """Remove a key prefix that a wrapper added to every name; returns ``(state, prefix)`` (``""``: none).

    DDP / DataParallel (``module.``), ``torch.compile`` (``_orig_mod.``), EMA helpers and training frameworks
    (``model.``, ``ema.``, ``net.`` ...) all wrap the real model. Rather than a list of known wrappers, a prefix
    is stripped when *every* key shares it and the keys only then match a known architecture (any naming
    scheme), one dotted level at a time: a model's own keys never all share one top-level module.
    """
    names, prefix = list(state), ""
    for _ in range(MAX_WRAPPER_DEPTH):
        if not names or _matches_a_model(names, arch):
            break
        heads = {n.split(".", 1)[0] for n in names}
        if len(heads) != 1 or not all("." in n for n in names):
            break
        head = heads.pop() + "."
        prefix, names = prefix + head, [n[len(head):] for n in names]
    if not prefix or not _matches_a_model(names, arch):  # nothing to strip, or stripping does not help
        return OrderedDict(state), ""
    return OrderedDict((k[len(prefix):], v) for k, v in state.items()), prefix


def _tracked_values(tracked: Dict[str, np.ndarray], recorded: Any):
    """Function giving each BN module's ``num_batches_tracked`` (int64 scalar) going to torchvision."""
    def value(module: str) -> np.ndarray:
        if module in tracked:
            return tracked[module]
        if isinstance(recorded, dict):
            return np.array(recorded.get(module, 0), dtype=np.int64)
        return np.array(recorded or 0, dtype=np.int64)
    return value


def convert_file(src: str, dst: str, *, dst_naming: Optional[str] = None, arch: str = "auto",
                 src_naming: str = "auto", num_classes: Optional[int] = None, drop_head: bool = False,
                 force: bool = False) -> ConversionReport:
    """Convert the weight file ``src`` into ``dst`` (format by extension); see :func:`convert_weights`."""
    src_path, dst_path = Path(src), Path(dst)
    dst_format = file_format(dst_path)
    if src_path.resolve() == dst_path.resolve():
        raise CheckpointError(f"{dst}: destination is the source file; choose another output path")
    if dst_path.exists() and not force:
        raise CheckpointError(f"{dst}: already exists; pass --force to overwrite it")
    weights = read_weights(src_path)
    state, meta, report = convert_weights(weights, dst_naming or DEFAULT_NAMING[dst_format], arch=arch, src_naming=src_naming,
                                          num_classes=num_classes, drop_head=drop_head)
    write_weights(dst_path, state, meta)
    return report


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m ms_transfer.convert``."""
    p = argparse.ArgumentParser(
        prog="python -m ms_transfer.convert",
        description="Convert ResNet, VGG and seed-network checkpoints between torch (.pth/.pt), MindSpore (.ckpt) "
                    "and .safetensors, and between torchvision, ms_transfer (MindSpore tutorial) and mindcv parameter names.")
    p.add_argument("src", help="input weight file (.pth, .pt, .ckpt or .safetensors)")
    p.add_argument("dst", help="output weight file; its extension picks the format")
    p.add_argument("--arch", default="auto", choices=["auto", *naming.ALL_ARCHS],
                   help="architecture (default: detected from keys and shapes)")
    p.add_argument("--src-naming", default="auto", help="naming of SRC: auto (default), " + ", ".join(naming.SCHEMES))
    p.add_argument("--naming", default=None,
                   help="naming of DST: torchvision (default for .pth), ms_transfer (default for .ckpt), mindcv; "
                        ".safetensors keeps SRC's naming unless given")
    head = p.add_mutually_exclusive_group()
    head.add_argument("--num-classes", type=int, default=None,
                      help="target class count: the head is left out when the checkpoint's differs")
    head.add_argument("--drop-head", action="store_true", help="leave the class layer (fc; VGG: classifier.6) out")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the process exit code (2 on a bad input, with the reason on stderr)."""
    args = parse_args(build_parser(), argv)
    start = time.perf_counter()
    try:
        report = convert_file(args.src, args.dst, dst_naming=args.naming, arch=args.arch,
                              src_naming=args.src_naming, num_classes=args.num_classes,
                              drop_head=args.drop_head, force=args.force)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.src} -> {args.dst}: {report} ({time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
