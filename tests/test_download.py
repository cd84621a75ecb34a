"""ms_transfer.core.download against a loopback HTTP server (no internet needed)."""

import io
import socket
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from ms_transfer.core.data import scan_split
from ms_transfer.core.download import DownloadError, download_and_extract, download_file


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


GOOD_ZIP = _zip({f"data/Canidae/{split}/{cls}/{i}.jpg": _jpeg_bytes(i + 10 * j)
                 for j, (split, cls) in enumerate([(s, c) for s in ("train", "val")
                                                   for c in ("dogs", "wolves")])
                 for i in range(2)})
SLIP_ZIP = _zip({"Canidae/train/dogs/0.jpg": _jpeg_bytes(0), "../evil.txt": b"pwned"})


def _truncated(handler) -> None:
    """Announce the whole zip, send half of it, hang up."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(GOOD_ZIP)))
    handler.end_headers()
    handler.wfile.write(GOOD_ZIP[: len(GOOD_ZIP) // 2])
    handler.close_connection = True


@pytest.fixture(scope="module")
def server(serve_files):
    """Serves ``/good.zip``, ``/slip.zip``, ``/short.zip`` (truncated body) and
    ``/garbage.zip`` (wrong bytes, right length); counts requests per path."""
    return serve_files({"/good.zip": GOOD_ZIP, "/slip.zip": SLIP_ZIP, "/garbage.zip": b"x" * len(GOOD_ZIP),
                        "/short.zip": _truncated})


def test_download_extract_scan_then_noop(server, tmp_path):
    base, hits = server
    root = download_and_extract(f"{base}/good.zip", tmp_path, expected_subdir="Canidae")
    assert root == tmp_path / "Canidae"
    samples, classes, skipped = scan_split(root, "train")
    assert classes == ["dogs", "wolves"] and len(samples) == 4 and skipped == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Canidae", "good.zip"]  # no temp dirs
    n = len(hits)
    assert download_and_extract(f"{base}/good.zip", tmp_path, expected_subdir="Canidae") == root
    assert len(hits) == n  # no HTTP request the second time


def test_existing_archive_is_reused(server, tmp_path):
    base, hits = server
    (tmp_path / "good.zip").write_bytes(GOOD_ZIP)  # placed by hand
    n = len(hits)
    assert download_and_extract(f"{base}/good.zip", tmp_path) == tmp_path / "Canidae"
    assert len(hits) == n


@pytest.mark.parametrize("name", ["short.zip", "garbage.zip"])
def test_corrupt_download_leaves_nothing(server, tmp_path, name):
    base, _ = server
    with pytest.raises(DownloadError, match=name):
        download_and_extract(f"{base}/{name}", tmp_path, expected_subdir="Canidae")
    assert list(tmp_path.iterdir()) == []  # no .part, no archive, no partial dataset


def test_404_names_url(server, tmp_path):
    base, _ = server
    url = f"{base}/missing.zip"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download_file(url, tmp_path / "missing.zip")
    assert url in str(err.value) and "save it as" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_fails_fast(tmp_path):
    with socket.socket() as s:  # grab a free port, then close it so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.zip"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=url.replace(".", r"\.")):
        download_and_extract(url, tmp_path / "data")
    assert time.monotonic() - start < 5
    assert not (tmp_path / "data" / "data.zip.part").exists()


def test_zip_slip_rejected(server, tmp_path):
    base, _ = server
    target = tmp_path / "inner"
    with pytest.raises(DownloadError, match="zip-slip"):
        download_and_extract(f"{base}/slip.zip", target)
    assert not (tmp_path / "evil.txt").exists()
    assert list(target.iterdir()) == []  # unsafe archive and extracted leftovers removed
