"""Resolving pretrained weights: ``--pretrained NAME`` to a verified local file.

The table's entries hang off the architectures they belong to (``ArchSpec.weights`` in
:mod:`ms_transfer.core.archs`, as torchvision's ``Weights`` enums and timm's ``pretrained_cfg`` do). Each
:class:`WeightsEntry` says where a weight file comes from (URL, sha256 or torchvision's sha256 prefix),
how to read it (naming scheme, padding convention of the network it was trained in, class count) and how its
network expects images (eval resize, crop, mean/std). ``--pretrained NAME`` resolves through it:
:func:`resolve_pretrained` returns a verified local file, downloaded once into
``<cache>/weights/<entry name>/`` (keyed by entry, so two entries never share a file), or, offline, fails in
seconds with a message naming the exact file to place there. Plain paths pass through unchanged.
"""
from __future__ import annotations

import logging
import hashlib
from pathlib import Path
from typing import Optional, Tuple

from . import spec as _spec
from .archs import TUTORIAL_CKPT_URL
from .checkpoint_io import CheckpointError
from .download import DownloadError, download_file, file_sha256
from .presets import DEFAULT_EVAL_RESIZE, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS
from .spec import WeightsEntry, find_weights, get_weights, list_weights, register_weights

__all__ = ["WeightsEntry", "WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "TUTORIAL_CKPT_URL", "register_weights",
           "get_weights", "list_weights", "entry_for_url", "entry_eval_transform", "url_cache_path",
           "resolve_pretrained", "resolve_padding"]

#: the table itself lives on the architectures (``ArchSpec.weights``, declared in :mod:`ms_transfer.core.archs`)
WEIGHTS = _spec.WEIGHTS
_ALIASES = _spec._ALIASES


def entry_eval_transform(pretrained: Optional[str]) -> Tuple[str, int]:
    """``(normalize preset, eval resize for a 224 px crop)`` of the weights entry named by ``pretrained`` (the
    config's ``auto`` transform); ImageNet's and 256 for a file, a URL or no pretrained weights."""
    entry = find_weights(pretrained) if pretrained else None
    if entry is None:
        return "imagenet", DEFAULT_EVAL_RESIZE
    preset = next((name for name, (mean, std) in NORMALIZATIONS.items()
                   if tuple(mean) == tuple(entry.mean) and tuple(std) == tuple(entry.std)), None)
    if preset is None:
        raise CheckpointError(f"weights entry {entry.name!r} normalises with mean {entry.mean}, std {entry.std}, "
                              f"which no normalize preset has ({', '.join(NORMALIZATIONS)}); add one")
    return preset, round(entry.resize_size * 224 / entry.crop_size)


def entry_for_url(url: str) -> Optional[WeightsEntry]:
    """The entry whose URL is ``url`` (so a config giving the tutorial's URL gets the tutorial's entry)."""
    return next((e for e in WEIGHTS.values() if e.url == url), None)


def url_cache_path(url: str, cache_dir: Path) -> Path:
    """Where a plain ``--pretrained-url`` download is kept: keyed by the whole URL, not only its basename."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_dir) / "urls" / digest / Path(url.split("?")[0]).name


def resolve_pretrained(spec: str, cache_dir: Path, download: bool = True) -> Tuple[str, Optional[WeightsEntry]]:
    """``(local path, entry or None)`` for ``--pretrained SPEC``: an existing file, or a weights-table entry.

    An entry's file is fetched once into ``cache_dir/weights/<name>/<file>`` and verified (sha256 or its
    torchvision prefix); a file already there is verified again before use, so a damaged one is fetched anew.
    Offline, :class:`DownloadError` names the URL and the exact path to place the file at.
    """
    if Path(spec).expanduser().is_file():
        return str(Path(spec).expanduser()), None
    looks_like_path = any(sep in spec for sep in "/\\") or Path(spec).suffix.lower() in (
        ".ckpt", ".pth", ".pt", ".safetensors")
    if looks_like_path and find_weights(spec) is None:
        raise CheckpointError(f"{spec}: no such file (pretrained weights); give an existing weight file or an "
                              f"entry of the weights table: {', '.join(sorted(WEIGHTS))}")
    entry = get_weights(spec)
    target = Path(cache_dir) / "weights" / entry.name / entry.filename
    if target.is_file():
        if entry.sha256 is None or file_sha256(target).startswith(entry.sha256.lower()):
            return str(target), entry
        logging.getLogger(__name__).info(f"{target}: sha256 does not match the weights entry {entry.name!r}; "
                                         "downloading it again")
        target.unlink()
    if not download:
        raise DownloadError(f"pretrained weights {entry.name!r} are not in the cache; place {entry.url} at {target}")
    download_file(entry.url, target, sha256=entry.sha256)
    return str(target), entry


def resolve_padding(padding: str, entry: Optional[WeightsEntry]) -> Tuple[str, str]:
    """``(padding, why)`` for the config's ``padding`` (``auto``: the weights entry's convention, else torch)."""
    if padding != "auto":
        return padding, f"padding {padding} (configured)"
    if entry is not None:
        return entry.padding, f"padding {entry.padding} (the convention of weights entry {entry.name!r})"
    return "torch", "padding torch (default)"
