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


HOTDOG_ZIP = _zip({f"hotdog/{split}/{cls}/{i}.jpg": _jpeg_bytes(i + 7 * j)
                   for j, (split, cls) in enumerate([(s, c) for s in ("train", "test") for c in ("hotdog", "not-hotdog")])
                   for i in range(2)})
HYMENOPTERA_ZIP = _zip({f"hymenoptera_data/{split}/{cls}/{i}.jpg": _jpeg_bytes(i + 5 * j)
                        for j, (split, cls) in enumerate([(s, c) for s in ("train", "val") for c in ("ants", "bees")])
                        for i in range(2)})


@pytest.mark.parametrize("name, zip_bytes, classes", [("hotdog", HOTDOG_ZIP, ["hotdog", "not-hotdog"]),
                                                      ("hymenoptera", HYMENOPTERA_ZIP, ["ants", "bees"])],
                         ids=["hotdog", "hymenoptera"])   # not the zip bytes: their timestamps differ per xdist worker
def test_seed_datasets_download_from_their_config(serve_files, tmp_path, monkeypatch, name, zip_bytes, classes):
    """configs/hotdog_resnet18.yaml and ants_bees_resnet18.yaml with --download: the archive (served on loopback
    under the real file name) unpacks into DATA_DIR; hotdog's test/ split becomes val/; a second run is a no-op."""
    import ms_transfer.core.download as download
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.config import resolve_config
    from ms_transfer.core.data import DatasetError

    url, subdir, val_from, sha = download.FOLDER_DATASETS[name]
    filename = url.rsplit("/", 1)[1]
    base, hits = serve_files({f"/{filename}": zip_bytes})
    monkeypatch.setitem(download.FOLDER_DATASETS, name, (f"{base}/{filename}", subdir, val_from, sha))
    config = {"hotdog": "hotdog_resnet18", "hymenoptera": "ants_bees_resnet18"}[name]
    cfg = resolve_config(["--config", config, "--data-dir", str(tmp_path / "data")])
    with pytest.raises(DatasetError, match=f"pass --download to fetch it .*{filename}"):
        recipe.prepare_data(cfg)
    cfg.download = True
    root = recipe.prepare_data(cfg)
    assert root == tmp_path / "data" / subdir and sorted(p.name for p in root.iterdir() if p.is_dir()) == ["train", "val"]
    assert scan_split(root, "val")[1] == classes
    assert recipe.prepare_data(cfg) == root and len(hits) == 1


def test_idx_files_download_for_array_datasets(serve_files, tmp_path, monkeypatch):
    """dataset: fashion_mnist with --download fetches the four IDX files (loopback) into DATA_DIR once."""
    import gzip as gz

    import ms_transfer.core.arrays as arrays
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.config import TrainConfig

    rng = np.random.RandomState(0)
    files = {}
    for split, n in (("train", 30), ("test", 10)):
        images, labels = arrays.IDX_FILES[split]
        for stem, array in ((images, rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)),
                            (labels, (np.arange(n) % 10).astype(np.uint8))):
            arrays.write_idx(tmp_path / stem, array)
            files[f"/fm/{stem}.gz"] = gz.compress((tmp_path / stem).read_bytes())
    base, hits = serve_files(files)
    monkeypatch.setitem(arrays.IDX_URLS, "fashion_mnist", f"{base}/fm/")
    cfg = TrainConfig(arch="fashion_cnn", image_size=28, dataset="fashion_mnist", download=True,
                      data_dir=str(tmp_path / "idx")).validate()
    root = recipe.prepare_data(cfg)
    assert len(scan_split(root, "test")[0]) == 10 and len(hits) == 4
    recipe.prepare_data(cfg)
    assert len(hits) == 4  # present: not fetched again
