"""A plain image folder (DATA_DIR/<class>/<images>, no train/ and val/) trains: the held-out split, its record in
the run directory, resume on it, and the shipped my_folder config, in both frameworks."""
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_checkpoint
from PIL import Image

from ms_transfer.core.config import FOLDER_VAL_FRACTION, ConfigError, TrainConfig, resolve_config
from ms_transfer.core.data import scan_classes
from ms_transfer.core.holdout import SPLIT_FILES, holdout_split, read_split, scan_training_data, write_split
from ms_transfer.core.layout import DatasetError, find_dataset, resolve_data_root

CLASSES = {"cats": 6, "dogs": 5}
CLASSES_ORDER = sorted(CLASSES)


def _make_folder(root: Path, counts=CLASSES) -> Path:
    rng = np.random.RandomState(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A flat two-class folder inside a parent (found through the chain of single subfolders)."""
    return _make_folder(tmp_path_factory.mktemp("plain") / "photos" / "pets")


def _split(root, fraction=0.2, seed=0):
    classes = [p.name for p in sorted(root.iterdir())]
    samples, skipped = scan_classes(root, classes)
    return holdout_split(root, classes, samples, skipped, fraction, seed)


def _files(scan):
    return [Path(p).relative_to(scan.root).as_posix() for p, _ in scan.samples]


def test_a_plain_folder_is_found_and_split_stratified_and_seeded(folder):
    assert find_dataset(folder.parent.parent) == (folder, False)
    with pytest.raises(DatasetError, match="holds class folders but no train/ and val/"):
        resolve_data_root(folder)   # commands other than training need train/ and val/
    (folder.parent / "other" / "train").mkdir(parents=True)   # beside another dataset: pets/ is not a class
    try:
        with pytest.raises(DatasetError, match=r"holds dataset folders with train/ or val/ \(other\).*--data-dir"):
            find_dataset(folder.parent)
    finally:
        shutil.rmtree(folder.parent / "other")
    scans = _split(folder, 0.4)
    # round(0.4 * 6) = 2 cats and round(0.4 * 5) = 2 dogs validate; labels follow the class folders
    assert np.bincount(scans["val"].labels).tolist() == [2, 2]
    assert np.bincount(scans["train"].labels).tolist() == [4, 3]
    assert not set(_files(scans["train"])) & set(_files(scans["val"]))
    assert all(Path(p).parent.name == CLASSES_ORDER[label] for p, label in scans["val"].samples)
    assert _files(_split(folder, 0.4)["val"]) == _files(scans["val"])           # same seed, same split
    assert any(_files(_split(folder, 0.4, seed=s)["val"]) != _files(scans["val"]) for s in (1, 2, 3))
    # a small class keeps one image on each side: round(0.05 * 5) = 0 -> 1, round(0.95 * 5) = 5 -> 4
    assert np.bincount(_split(folder, 0.05)["val"].labels).tolist() == [1, 1]
    assert np.bincount(_split(folder, 0.95)["train"].labels).tolist() == [1, 1]


def test_a_class_with_fewer_than_two_images_is_a_clear_error(tmp_path, capsys):
    from torch_reference.train import main as torch_main

    root = _make_folder(tmp_path / "data", {"ants": 3, "bees": 1, "wasps": 4})
    with pytest.raises(DatasetError, match=r"'bees' \(1 readable image\) hold fewer than 2 images.*Add images to "
                                           r".*bees, or move that folder out"):
        _split(root)
    # from the command line: bad input, exit 2 before a model is built, nothing written into the run directory
    assert torch_main(["--data-dir", str(root), "--output-dir", str(tmp_path / "run"), "--pretrained", "none"]) == 2
    assert "'bees' (1 readable image)" in capsys.readouterr().err
    assert not any((tmp_path / "run").glob("*"))


def test_val_fraction_defaults_per_kind_of_dataset():
    cfg = TrainConfig().validate()
    assert cfg.val_fraction is None
    assert cfg.holdout_fraction(True) == FOLDER_VAL_FRACTION == 0.2 and cfg.holdout_fraction(False) == 0.1
    cfg = resolve_config(["--val-fraction", "0.3"])
    assert cfg.val_fraction == 0.3 and cfg.holdout_fraction(True) == cfg.holdout_fraction(False) == 0.3
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        resolve_config(["--val-fraction", "1.5"])


def test_my_folder_config_is_resnet50_with_imagenet_weights_in_a_timestamped_folder(monkeypatch):
    cfg = resolve_config(["--config", "my_folder", "--data-dir", "DIR"])
    assert (cfg.arch, cfg.pretrained, cfg.padding) == ("resnet50", "resnet50_imagenet1k_v2", "torch")
    assert cfg.output_dir.startswith("runs/my_folder-") and "{" not in cfg.output_dir
    assert len(cfg.output_dir) == len("runs/my_folder-YYYYMMDD-HHMMSS")
    with pytest.raises(ConfigError, match="--resume continues an existing run.*pass --output-dir"):
        resolve_config(["--config", "my_folder", "--resume"])
    assert resolve_config(["--config", "my_folder", "--resume", "--output-dir", "runs/x"]).output_dir == "runs/x"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="would differ between the ranks"):
        resolve_config(["--config", "my_folder"])


def test_resume_reads_the_recorded_split_and_checks_the_folder(folder, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    out = tmp_path / "run"
    out.mkdir()
    _, scans, plain = scan_training_data(data, out, 0.2, seed=3, resume=False)
    assert plain
    write_split(out, scans)
    # resumed with another seed and fraction: the recorded split, not a new draw
    classes, again, _ = scan_training_data(data, out, 0.5, seed=7, resume=True)
    assert classes == CLASSES_ORDER
    for split in ("train", "val"):
        assert again[split].samples == scans[split].samples
    # an image added since: a warning, and the run keeps its split
    shutil.copy(data / "cats" / "0.png", data / "cats" / "new.png")
    with caplog.at_level(logging.WARNING):
        _, again = read_split(out, data)
    assert "cats/new.png" in caplog.text and "keeps its split" in caplog.text
    assert again["train"].samples == scans["train"].samples
    # an image of the split removed: the split cannot be rebuilt
    removed = _files(scans["val"])[0]
    (data / removed).unlink()
    with pytest.raises(DatasetError, match=f"missing from .*{removed}.*Restore them, or start a new run"):
        read_split(out, data)
    with pytest.raises(DatasetError, match="split_train.txt not found"):
        read_split(tmp_path, data)


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """One tiny run per framework from the command line, with --config my_folder: MindSpore's ResNet18 from random
    init, torch's ResNet50 from a local ImageNet-shaped weights file (what resnet50_imagenet1k_v2 would download);
    32 px, batch 3 (9 training images: no batch of one, which torch's BatchNorm refuses at 1x1 features), one epoch."""
    from ms_transfer.train import main as ms_main
    from torch_reference.train import main as torch_main

    tmp = tmp_path_factory.mktemp("runs")
    weights, _ = torch_checkpoint(tmp, "resnet50", num_classes=1000, name="resnet50_imagenet.pth")
    common = ["--config", "my_folder", "--data-dir", str(folder.parent.parent), "--image-size", "32",
              "--batch-size", "3", "--epochs", "1", "--num-workers", "1", "--seed", "5"]
    runs = {"mindspore": tmp / "ms", "torch": tmp / "torch"}
    codes = {"mindspore": ms_main(common + ["--arch", "resnet18", "--pretrained", "none", "--mode", "pynative",
                                            "--output-dir", str(runs["mindspore"])]),
             "torch": torch_main(common + ["--pretrained", str(weights), "--output-dir", str(runs["torch"])])}
    return codes, runs


def test_a_plain_folder_trains_from_the_command_line_in_both_frameworks(trained):
    codes, runs = trained
    assert codes == {"mindspore": 0, "torch": 0}
    assert (runs["mindspore"] / "last.ckpt").is_file() and (runs["torch"] / "last.pth").is_file()
    for name in SPLIT_FILES.values():
        ms_lines = (runs["mindspore"] / name).read_text().splitlines()
        assert ms_lines and ms_lines == (runs["torch"] / name).read_text().splitlines()  # framework-neutral
    val = (runs["torch"] / SPLIT_FILES["val"]).read_text().splitlines()
    assert sorted(v.split("/")[0] for v in val) == ["cats", "dogs"]   # 20 %: one of 6 cats, one of 5 dogs


def test_a_resumed_plain_folder_run_keeps_its_split(trained, folder):
    from ms_transfer.train import main as ms_main

    codes, runs = trained
    run = runs["mindspore"]
    before = {name: (run / name).read_text() for name in SPLIT_FILES.values()}
    code = ms_main(["--config", "my_folder", "--data-dir", str(folder), "--image-size", "32", "--batch-size", "3",
                    "--epochs", "2", "--num-workers", "1", "--seed", "5", "--arch", "resnet18", "--pretrained",
                    "none", "--mode", "pynative", "--resume", "--output-dir", str(run)])
    assert code == 0
    assert {name: (run / name).read_text() for name in SPLIT_FILES.values()} == before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
