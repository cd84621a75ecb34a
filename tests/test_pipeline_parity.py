"""Data pipeline parity: ms_transfer.mindspore_backend.data (MindSpore) vs torch_reference.data (torchvision) on real
JPEGs."""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageDraw
from torchvision.datasets import ImageFolder

from ms_transfer.core.data import DatasetError, PilResizeCenterCrop, eval_resize_size, load_rgb, scan_split
from ms_transfer.mindspore_backend.data import create_dataset, load_image_for_eval
from parity.suite.pipeline import GREY_LEVEL, ROUNDING_BOUND, compare_val_pipelines, main
from torch_reference.data import ScannedImageFolder, create_loader

#: (width, height): landscape, portrait, ~1:1 odd, 4:3, smaller than the 256 resize (upscaled), large
#: 3:2, and 301x227 whose resized width 339 makes MindSpore's floored crop offset differ from torchvision's.
SIZES = [(500, 375), (375, 500), (257, 300), (640, 480), (100, 80), (1024, 683), (301, 227)]


def natural_image(width: int, height: int, seed: int) -> Image.Image:
    """Photo-like content: smooth gradients and waves, sensor-like noise, filled shapes and thin lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 150 + 60], -1)
    base += 40 * np.sin(xx[..., None] / rng.uniform(5, 30, 3) + yy[..., None] / rng.uniform(5, 30, 3))
    base += rng.normal(0, 12, (height, width, 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.03, 0.2) * min(width, height)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(5):
        draw.line([(rng.uniform(0, width), rng.uniform(0, height)), (rng.uniform(0, width), rng.uniform(0, height))],
                  fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    return im


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory) -> Path:
    """``root/{train,val}/{cats,dogs}/`` with the SIZES JPEGs (quality 90) spread over both classes."""
    root = tmp_path_factory.mktemp("jpegs")
    for split in ("train", "val"):
        for i, (w, h) in enumerate(SIZES):
            folder = root / split / ("cats", "dogs")[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            natural_image(w, h, seed=i).save(folder / f"img_{w}x{h}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def jpeg_paths(jpeg_dir) -> list:
    return [p for p, _ in scan_split(jpeg_dir, "val")[0]]


# --- (a) resize_backend="pil": the same tensors as torchvision, to float32 rounding -----------------------

@pytest.mark.parametrize("image_size", [224, 64])
def test_pil_backend_matches_torchvision_to_rounding(jpeg_paths, image_size):
    rows, summary = compare_val_pipelines(jpeg_paths, image_size, "pil")
    assert len(rows) == len(SIZES)
    for row in rows:
        assert row["max_abs"] <= ROUNDING_BOUND, row
    assert summary["passed"] is True and summary["max_abs"] <= ROUNDING_BOUND
    assert ROUNDING_BOUND < GREY_LEVEL / 1000  # a single differing pixel value could not hide under it


def test_pil_resize_crop_is_torchvision_bit_for_bit(jpeg_paths):
    """The uint8 geometry itself is identical, including sizes where MindSpore's own arithmetic is off by one."""
    for path in jpeg_paths:
        for size in (224, 64):
            ours = PilResizeCenterCrop(eval_resize_size(size), size)(load_rgb(path))
            theirs = T.Compose([T.Resize(eval_resize_size(size)), T.CenterCrop(size)])(Image.open(path).convert("RGB"))
            np.testing.assert_array_equal(ours, np.asarray(theirs))
    # (width, height, size): int(size / (w/h)) and int(size * long / short) disagree for these
    for w, h, size in [(212, 146, 73), (398, 146, 73), (32, 391, 256), (128, 391, 256), (146, 244, 73)]:
        expected = T.Resize(size)(Image.new("RGB", (w, h))).size
        assert PilResizeCenterCrop(size, min(size, 64)).output_size(w, h) == expected


def test_pil_backend_dataset_matches_torch_loader(jpeg_dir):
    """End to end: same files, same order, same labels, same tensors (MindSpore dataset vs DataLoader)."""
    ms_ds, ms_info = create_dataset(jpeg_dir, "val", 64, 4, train=False, shuffle=False, seed=0, num_workers=1,
                                    resize_backend="pil")
    loader, tv_info = create_loader(jpeg_dir, "val", 64, 4, train=False, shuffle=False, seed=0)
    assert ms_info.classes == tv_info.classes and ms_info.num_samples == tv_info.num_samples == len(SIZES)
    ms_batches = list(ms_ds.create_tuple_iterator(output_numpy=True, num_epochs=1))
    tv_batches = list(loader)
    assert len(ms_batches) == len(tv_batches) == 2
    for (ms_x, ms_y), (tv_x, tv_y) in zip(ms_batches, tv_batches):
        np.testing.assert_array_equal(ms_y, tv_y.numpy())
        assert np.abs(ms_x - tv_x.numpy()).max() <= ROUNDING_BOUND


def test_resize_backend_is_validated(jpeg_dir, jpeg_paths):
    with pytest.raises(DatasetError, match=r"'opencv'.*'mindspore', 'pil'"):
        create_dataset(jpeg_dir, "val", 64, 2, train=False, shuffle=False, seed=0, resize_backend="opencv")
    with pytest.raises(ValueError, match="'PIL'"):
        load_image_for_eval(jpeg_paths[0], 64, resize_backend="PIL")


# --- (b) default resize_backend="mindspore": a reported, bounded difference --------------------------------

def test_default_backend_difference_is_reported_and_bounded(jpeg_paths):
    rows, summary = compare_val_pipelines(jpeg_paths, 224, "mindspore")
    by_size = {(r["width"], r["height"]): r for r in rows}
    assert summary["passed"] is None and summary["bound"] is None  # a report, not a pass/fail check
    for row in rows:
        if row["scale"] < 1:  # downscaled: MindSpore's bilinear has no antialiasing, Pillow's does
            assert row["max_abs"] > GREY_LEVEL / 2, row
        # Measured on these images (OpenCV-style vs Pillow bilinear, see parity/pipeline.py): mean 0.003-0.1,
        # the worst being a one-pixel crop shift of a textured image. Gross pipeline bugs are far above 0.25:
        # RGB/BGR swap ~0.5-0.65, horizontal flip ~0.9-1.0, missing normalisation > 1. Subtler bugs (a one-pixel
        # shift: 0.05-0.1) are what the exact pil-backend tests above are for.
        assert row["mean_abs"] < 0.25, row
    # Upscaled without a crop shift: only fixed-point rounding, 1 grey level.
    assert by_size[(100, 80)]["max_abs"] <= 1.5 * GREY_LEVEL
    # MindSpore's C++ CenterCrop floors (d-S)/2, torchvision rounds it: d=339 or 383 (d-S = 3 mod 4) is 1 px off.
    assert by_size[(301, 227)]["shift"] == [-1, 0] and by_size[(1024, 683)]["shift"] == [-1, 0]
    assert by_size[(500, 375)]["shift"] == [0, 0]
    assert 0 < summary["mean_abs"] < 0.25


# --- (c) the torch dataset scans exactly like ms_transfer.mindspore_backend.data
# ---------------------------------------------

@pytest.fixture()
def messy_dir(tmp_path) -> Path:
    for split in ("train", "val"):
        for cls in ("b_wolves", "a_dogs"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                natural_image(40 + 3 * i, 30, seed=i).save(folder / f"{cls}_{i}.jpg", quality=90)
        (tmp_path / split / ".ipynb_checkpoints").mkdir()  # hidden class folder: not a class
        natural_image(20, 20, seed=9).save(tmp_path / split / ".ipynb_checkpoints" / "x.jpg")
    (tmp_path / "train" / "a_dogs" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a_dogs" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "b_wolves" / "corrupt.jpg").write_bytes(os.urandom(300))
    return tmp_path


def test_scanned_image_folder_matches_scan_split(messy_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples, classes, skipped = scan_split(messy_dir, "train")
        dataset = ScannedImageFolder(messy_dir, "train")
    assert classes == ["a_dogs", "b_wolves"] and dataset.classes == classes
    assert dataset.class_to_idx == {"a_dogs": 0, "b_wolves": 1}
    assert dataset.samples == samples and dataset.targets == [label for _, label in samples]
    assert len(dataset) == 6 and sorted(Path(p).name for p, _ in dataset.skipped) == ["corrupt.jpg", "notes.txt"]
    assert dataset.skipped == skipped
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0
    np.testing.assert_array_equal(np.asarray(image), load_rgb(samples[0][0]))
    # plain torchvision ImageFolder would have kept the corrupt file: that is why the scan is shared
    assert any(p.endswith("corrupt.jpg") for p, _ in ImageFolder(str(messy_dir / "train")).samples)


def test_scanned_image_folder_substitutes_vanished_file(messy_dir, caplog):
    dataset = ScannedImageFolder(messy_dir, "val")
    vanished = dataset.samples[1][0]
    os.remove(vanished)
    image, label = dataset[1]
    assert np.array_equal(np.asarray(image), load_rgb(dataset.samples[2][0])) and label == dataset.samples[2][1]
    assert [p for p, _ in dataset.load_failures] == [vanished]
    assert "using the next readable image" in caplog.text


# --- (d) create_loader: shapes, dtypes, seeded order ----------------------------------------------------

def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_create_loader_shapes_and_seeded_order(jpeg_dir):
    loader, info = create_loader(jpeg_dir, "val", 32, 3, train=False, shuffle=True, seed=5)
    assert info.classes == ["cats", "dogs"] and info.num_samples == len(SIZES) and info.skipped == []
    first = _epoch(loader)
    x, y = first[0]
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in first) == len(SIZES)
    again = _epoch(create_loader(jpeg_dir, "val", 32, 3, train=False, shuffle=True, seed=5)[0])
    for (xa, ya), (xb, yb) in zip(first, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _epoch(create_loader(jpeg_dir, "val", 32, 3, train=False, shuffle=True, seed=6)[0])
    assert torch.cat([b[1] for b in other]).tolist() != torch.cat([b[1] for b in first]).tolist()

    # train: random augmentation from the global torch RNG (num_workers=0), so seed it before iterating
    train_batches = []
    for _ in range(2):
        loader, _ = create_loader(jpeg_dir, "train", 24, 4, train=True, shuffle=True, seed=1)
        torch.manual_seed(0)
        train_batches.append(next(iter(loader)))
    assert train_batches[0][0].shape == (4, 3, 24, 24)
    assert torch.equal(train_batches[0][0], train_batches[1][0])
    assert torch.equal(train_batches[0][1], train_batches[1][1])


# --- (e) the CLI --------------------------------------------------------------------------------------------

def test_cli_prints_table_and_writes_json(jpeg_dir, jpeg_paths, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--data-dir", str(jpeg_dir), "--image-size", "64", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max abs" in text and "mean abs" in text and "img_1024x683.jpg" in text
    assert "overall (7 images, 64 px, resize_backend=mindspore)" in text
    report = json.loads(out.read_text())
    assert len(report["rows"]) == len(SIZES) and report["summary"]["max_abs"] > 0

    assert main(["--images", *jpeg_paths[:2], "--resize-backend", "pil", "--image-size", "64"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["--images", str(tmp_path / "missing.jpg")]) == 2
    assert "error" in capsys.readouterr().err
