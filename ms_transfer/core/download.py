"""Safe dataset download: streamed, verified, atomically renamed, zip-slip-proof extraction.

Nothing half-done is ever left where the data is expected: downloads go to ``<dest>.part`` and are
renamed only after verification, archives are extracted into a hidden temporary folder inside
``data_dir`` and the dataset folder is renamed into place only when it is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from .layout import DatasetError, PathLike, resolve_data_root

log = logging.getLogger(__name__)

CANIDAE_URL = ("https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/"
               "notebook/datasets/intermediate/Canidae_data.zip")
#: image-folder datasets ``--download`` fetches (config ``dataset``): URL, folder name, the split that serves as
#: ``val`` when the archive has none (d2l's hotdog ships ``train/`` and ``test/``), sha256 if published
FOLDER_DATASETS = {
    "canidae": (CANIDAE_URL, "Canidae", None, None),                        # the MindSpore tutorial (wolf vs dog)
    "hymenoptera": ("https://download.pytorch.org/tutorial/hymenoptera_data.zip", "hymenoptera_data", None,
                    None),                                                  # ants vs bees (the digit adder's article)
    "hotdog": ("https://apache-mxnet.s3-accelerate.amazonaws.com/gluon/dataset/hotdog.zip", "hotdog", "test",
               None),                                                       # d2l's fine-tuning: hotdog vs not
}
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, verification or extraction failed; the message names the URL and a manual fix."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, sha256: Optional[str]) -> None:
    """Raise ValueError if ``path`` fails the sha256 check or (for .zip files) the CRC check.

    ``sha256`` may be a prefix of the digest (torchvision names its files with the first 8 hex digits and
    checks only those); a full 64-digit digest must match exactly.
    """
    if sha256:
        digest = file_sha256(path)
        if not digest.startswith(sha256.lower()):
            raise ValueError(f"sha256 mismatch (expected {sha256}{'...' if len(sha256) < 64 else ''}, got {digest})")
    if path.name.endswith((".zip", ".zip.part")):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"not a valid zip file ({exc})") from exc
        if bad is not None:
            raise ValueError(f"corrupt zip member {bad!r}")


def download_file(url: str, dest: PathLike, *, sha256: Optional[str] = None, timeout: float = 10,
                  progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` and return ``dest``.

    Writes ``dest.part`` first, checks the size against Content-Length, the optional ``sha256`` and,
    for ``.zip`` files, every member's CRC, then renames atomically. ``timeout`` (seconds) bounds
    connecting and each read, so an offline machine fails fast. On any failure the partial file is
    removed and :class:`DownloadError` is raised naming the URL and where to put the file by hand.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    manual = f"If this machine cannot reach it, download {url} elsewhere and save it as {dest}."
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "ms_transfer"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name,
                       disable=not progress or not sys.stderr.isatty())
            received = 0
            with bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            raise ValueError(f"incomplete download: got {received} of {expected} bytes")
        _verify(part, sha256)
        os.replace(part, dest)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"Downloading {url} failed: HTTP {exc.code} {exc.reason}. {manual}") from exc
    except urllib.error.URLError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"Cannot reach {url}: {exc.reason} (offline?). {manual}") from exc
    except BaseException as exc:  # includes timeouts, truncated streams, failed checks, Ctrl-C
        part.unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise
        raise DownloadError(f"Downloading {url} failed: {exc}. {manual}") from exc
    return dest


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target``, refusing members that would land outside it."""
    target = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = member.filename
            out = (target / name).resolve()
            if os.path.isabs(name) or (out != target and target not in out.parents):
                raise DownloadError(f"Refusing to extract {archive}: member {name!r} would be written "
                                    f"outside {target} (zip-slip). The archive is unsafe; do not use it.")
            if name.startswith("__MACOSX/"):
                continue
            zf.extract(member, target)


def _present(data_dir: Path, expected_subdir: Optional[str]) -> Optional[Path]:
    for candidate in ([data_dir / expected_subdir] if expected_subdir else []) + [data_dir]:
        try:
            return resolve_data_root(candidate)
        except DatasetError:
            pass
    return None


def _val_from(folder: Path, split: str) -> None:
    """Rename ``<d>/<split>`` to ``<d>/val`` in the folder below ``folder`` that has ``train/`` and ``<split>/``."""
    for train in sorted(folder.rglob("train")):
        d = train.parent
        if (d / split).is_dir() and not (d / "val").exists():
            os.rename(d / split, d / "val")
            log.info("Using %s/%s as the val split", d.name, split)
            return


def download_and_extract(url: str, data_dir: PathLike, *, expected_subdir: Optional[str] = None,
                         sha256: Optional[str] = None, val_from: Optional[str] = None) -> Path:
    """Make sure the zip dataset at ``url`` is unpacked in ``data_dir``; return the folder that holds
    ``train/`` and ``val/``.

    A no-op (logged) when such a folder is already found in ``data_dir`` (see
    :func:`~ms_transfer.core.layout.resolve_data_root`). Otherwise the zip is downloaded to
    ``data_dir/<zip name>`` (reused if already there and valid, so it can be placed by hand),
    extracted into a temporary folder inside ``data_dir`` and the dataset folder is renamed to
    ``data_dir/<expected_subdir or its own name>``. Raises :class:`DownloadError` on any failure,
    leaving no partial dataset behind. ``val_from``: the archive's split that becomes ``val/`` (renamed before the
    dataset folder is moved into place).
    """
    data_dir = Path(data_dir).expanduser()
    found = _present(data_dir, expected_subdir)
    if found is not None:
        log.info("Dataset already present at %s; skipping download.", found)
        return found
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / (Path(urllib.parse.urlparse(url).path).name or "dataset.zip")
    if archive.exists():
        try:
            _verify(archive, sha256)
            log.info("Using existing archive %s.", archive)
        except ValueError as exc:
            log.warning("Existing archive %s is unusable (%s); downloading it again.", archive, exc)
            archive.unlink()
    if not archive.exists():
        log.info("Downloading %s to %s", url, archive)
        download_file(url, archive, sha256=sha256)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        try:
            _safe_extract(archive, tmp)
        except DownloadError:
            archive.unlink(missing_ok=True)  # unsafe archive: never reuse it
            raise
        if val_from:
            _val_from(tmp, val_from)
        try:
            root = resolve_data_root(tmp)
        except DatasetError as exc:
            raise DownloadError(f"The archive from {url} ({archive}) does not contain a train/val "
                                f"dataset: {exc}") from exc
        final = data_dir / (expected_subdir or (root.name if root != tmp else archive.stem))
        if final.exists():
            raise DownloadError(f"{final} exists but is not a complete dataset (no train/ and val/); "
                                f"remove it and run again, or unpack {archive} there by hand.")
        os.rename(root, final)
    except DownloadError:
        raise
    except Exception as exc:
        raise DownloadError(f"Extracting {archive} (from {url}) into {data_dir} failed: {exc}. "
                            f"Unpack it by hand so that {data_dir}/<name>/train and .../val exist.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Dataset extracted to %s", final)
    return final


def download_canidae(data_dir: PathLike) -> Path:
    """Download and unpack the tutorial's Canidae (dogs vs. wolves) set; returns ``data_dir/Canidae``."""
    return download_dataset("canidae", data_dir)


def download_dataset(name: str, data_dir: PathLike) -> Path:
    """Download and unpack the image-folder dataset ``name`` of :data:`FOLDER_DATASETS` into ``data_dir`` (a no-op
    when it is there); returns the folder holding ``train/`` and ``val/``."""
    if name not in FOLDER_DATASETS:
        raise DownloadError(f"no download for dataset {name!r}; downloadable: {', '.join(FOLDER_DATASETS)}")
    url, subdir, val_from, sha256 = FOLDER_DATASETS[name]
    return download_and_extract(url, data_dir, expected_subdir=subdir, sha256=sha256, val_from=val_from)
