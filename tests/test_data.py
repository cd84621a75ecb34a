"""Scanning, validation and MindSpore pipelines of ms_transfer.mindspore_backend.data (+ the synthetic demo set)."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ms_transfer.core.data import IMAGENET_MEAN, IMAGENET_STD, DatasetError, DatasetInfo, resolve_data_root, scan_split
from ms_transfer.core.demo_data import CLASSES, make_demo_dataset
from ms_transfer.mindspore_backend.data import create_dataset, load_image_for_eval

RNG = np.random.default_rng(0)


def _rgb(h=40, w=52):
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_mixed_class(folder: Path) -> None:
    """One valid image of each real-world flavour (6 files)."""
    folder.mkdir(parents=True, exist_ok=True)
    _rgb().save(folder / "rgb.jpg")
    _rgb(30, 30).convert("L").save(folder / "gray.jpeg")
    _rgb().convert("CMYK").save(folder / "cmyk.jpg")
    rgba = Image.fromarray(RNG.integers(0, 256, (36, 44, 4), dtype=np.uint8), "RGBA")
    rgba.save(folder / "alpha.png")
    _rgb(50, 40).save(folder / "upper.JPG", format="JPEG")
    _rgb().convert("P").save(folder / "palette.bmp")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """``parent/Canidae/{train,val}/{dogs,wolves}`` with mixed formats, one corrupt file, one .txt."""
    parent = tmp_path_factory.mktemp("data")
    root = parent / "Canidae"
    for split in ("train", "val"):
        for cls in ("dogs", "wolves"):
            write_mixed_class(root / split / cls)
    (root / "train" / "wolves" / "broken.jpg").write_bytes(os.urandom(300))
    (root / "train" / "dogs" / "notes.txt").write_text("not an image")
    (root / "train" / "dogs" / ".DS_Store").write_bytes(b"\0\1")
    return parent


def test_resolve_parent_and_direct(dataset_dir):
    assert resolve_data_root(dataset_dir) == dataset_dir / "Canidae"
    assert resolve_data_root(dataset_dir / "Canidae") == dataset_dir / "Canidae"


def test_scan_split_formats_labels_and_skips(dataset_dir):
    with pytest.warns(UserWarning, match="broken.jpg") as record:
        samples, classes, skipped = scan_split(dataset_dir, "train")
    assert classes == ["dogs", "wolves"]
    assert len(samples) == 12
    names = sorted(Path(p).name for p, label in samples if label == 0)
    assert names == ["alpha.png", "cmyk.jpg", "gray.jpeg", "palette.bmp", "rgb.jpg", "upper.JPG"]
    assert {label for _, label in samples} == {0, 1}
    assert all(Path(p).parent.name == classes[label] for p, label in samples)
    skipped_names = sorted(Path(p).name for p, _ in skipped)
    assert skipped_names == ["broken.jpg", "notes.txt"]  # .DS_Store ignored silently
    assert "notes.txt" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean split warns nothing
        samples, _, skipped = scan_split(dataset_dir, "val")
    assert len(samples) == 12 and skipped == []


def test_missing_dir_and_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_data_root(tmp_path / "nope")
    (tmp_path / "only" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"needs both .*Expected layout"):
        resolve_data_root(tmp_path / "only")


def test_class_mismatch_names_classes(tmp_path):
    for split, classes in (("train", ("cats", "dogs")), ("val", ("dogs", "wolves"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            _rgb().save(tmp_path / split / cls / "a.jpg")
    with pytest.raises(DatasetError) as err:
        create_dataset(tmp_path, "train", 32, 2, train=True, shuffle=False, seed=0)
    msg = str(err.value)
    assert "only in train: ['cats']" in msg and "only in val: ['wolves']" in msg
    assert isinstance(err.value, ValueError)


def _first_batch(dataset):
    return next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))


def test_val_pipeline_shapes_and_determinism(dataset_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds_a, info = create_dataset(dataset_dir, "val", 32, 4, train=False, shuffle=False, seed=0)
        ds_b, _ = create_dataset(dataset_dir, "val", 32, 4, train=False, shuffle=False, seed=1)
    assert isinstance(info, DatasetInfo) and info.num_samples == 12 and info.classes == ["dogs", "wolves"]
    batches_a = list(ds_a.create_tuple_iterator(output_numpy=True, num_epochs=1))
    batches_b = list(ds_b.create_tuple_iterator(output_numpy=True, num_epochs=1))
    images, labels = batches_a[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.shape == (4,)
    assert sum(len(b[1]) for b in batches_a) == 12
    for (ia, la), (ib, lb) in zip(batches_a, batches_b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    # load_image_for_eval applies the same transform as the val pipeline (first sample, no shuffle).
    first = scan_split(dataset_dir, "val")[0][0][0]
    np.testing.assert_allclose(load_image_for_eval(first, 32)[0], images[0], atol=1e-5)


def test_train_pipeline_same_seed_same_batch(dataset_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, info = create_dataset(dataset_dir, "train", 24, 6, train=True, shuffle=True, seed=7)
        batch_a = _first_batch(a)
        b, _ = create_dataset(dataset_dir, "train", 24, 6, train=True, shuffle=True, seed=7)
        batch_b = _first_batch(b)
    assert len(info.skipped) == 2
    assert batch_a[0].shape == (6, 3, 24, 24) and batch_a[0].dtype == np.float32
    np.testing.assert_array_equal(batch_a[0], batch_b[0])
    np.testing.assert_array_equal(batch_a[1], batch_b[1])


def test_file_vanishing_mid_epoch_is_substituted(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                _rgb().save(tmp_path / split / cls / f"{i}.jpg")
    dataset, info = create_dataset(tmp_path, "val", 16, 4, train=False, shuffle=False, seed=0)
    (tmp_path / "val" / "a" / "1.jpg").unlink()
    labels = [lab for _, lab in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    assert sum(len(lab) for lab in labels) == 4  # epoch completes with a substitute
    assert [Path(p).name for p, _ in info.load_failures] == ["1.jpg"]


def test_imagenet_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_demo_dataset(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_train_per_class=4, n_val_per_class=2, image_size=32)
    samples, classes, skipped = scan_split(root, "train")
    assert classes == list(CLASSES) and len(samples) == 8 and skipped == []
    assert len(scan_split(root, "val")[0]) == 4
    assert "synthetic" in (root / "README.txt").read_text().lower()
    suffixes = {Path(p).suffix for p, _ in samples}
    assert suffixes == {".jpg", ".png"}
    before = {p: os.stat(p).st_mtime_ns for p, _ in samples}
    assert make_demo_dataset(root, n_train_per_class=4, n_val_per_class=2, image_size=32) == root
    assert {p: os.stat(p).st_mtime_ns for p, _ in samples} == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temp dirs left behind
    other = make_demo_dataset(tmp_path / "again", n_train_per_class=4, n_val_per_class=2, image_size=32)
    for p, _ in samples:  # deterministic
        assert (other / Path(p).relative_to(root)).read_bytes() == Path(p).read_bytes()


def test_hidden_folders_below_a_class_are_ignored(tmp_path):
    root = tmp_path / "data"
    make_demo_dataset(root, n_train_per_class=2, n_val_per_class=1, image_size=32)
    cls_dir = root / "train" / CLASSES[0]
    for hidden in (".ipynb_checkpoints", "__MACOSX"):
        (cls_dir / hidden).mkdir()
        Image.new("RGB", (8, 8)).save(cls_dir / hidden / "copy-checkpoint.jpg")
    samples, _, skipped = scan_split(root, "train")
    assert len(samples) == 4 and not skipped
    assert not any("checkpoint" in path for path, _ in samples)
