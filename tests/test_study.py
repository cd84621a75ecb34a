"""``python -m ms_transfer.study``: a two-cell study (scratch and transfer-fixed digit adders) in both frameworks on
the real 5k digits, resumed after a cell is lost; bad study configs are clear errors."""
import json

import numpy as np
import pytest
import yaml
from conftest import own_cache

from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.core.config import CONFIG_DIR
from ms_transfer.study import main


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def study_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_TRANSFER_CACHE", str(own_cache(tmp_path / "cache")))  # the cells' subprocesses cache here
    small = {"epochs": 1, "num_workers": 1}
    pretrain = _yaml(tmp_path / "pretrain.yaml", {**yaml.safe_load((CONFIG_DIR / "digits_pretrain.yaml").read_text()),
                                                  **small, "data_fraction": 0.1})
    base = _yaml(tmp_path / "adder.yaml", {**yaml.safe_load((CONFIG_DIR / "digit_adder.yaml").read_text()), **small})
    return _yaml(tmp_path / "study.yaml", {
        "base": str(base), "pretrain": str(pretrain), "fractions": [0.05], "seeds": [0],
        "regimes": {"scratch": {"init": "scratch"}, "transfer_fixed": {"init": "transfer", "freeze": ["branch_*"]}},
        "output_dir": str(tmp_path / "study")})


def test_two_cells_in_both_frameworks_resume_and_tabulate(study_config, tmp_path, capsys):
    assert main(["--config", str(study_config)]) == 0
    out = tmp_path / "study"
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["cells"]) == sorted(f"{fw}/{r}/f0.05-s0" for fw in ("mindspore", "torch")
                                              for r in ("scratch", "transfer_fixed"))
    for cell in results["cells"].values():
        assert len(cell["val_acc"]) == 1 and 0 <= cell["test_acc"] <= 1
    assert (out / "study.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| transfer_fixed | 5% |" in table and "MindSpore vs torch" in table
    # both frameworks start each cell from the same numpy-drawn weights; transfer puts the recogniser's trunk in
    # both branches
    init = read_weights(out / "init" / "transfer-seed0.safetensors").state
    pre = read_weights(out / "pretrain" / "best.pth").state
    assert np.array_equal(init["branch_a.conv1.weight"], pre["features.conv1.weight"])
    assert np.array_equal(init["branch_b.conv1.weight"], pre["features.conv1.weight"])
    for fw in ("mindspore", "torch"):
        cfg = yaml.safe_load((out / "cells" / fw / "transfer_fixed" / "f0.05-s0.yaml").read_text())
        assert cfg["pretrained"].endswith("transfer-seed0.safetensors") and cfg["freeze"] == ["branch_*"]
    # a lost cell (killed before test.json) is run again; finished cells are not touched
    kept = out / "cells" / "torch" / "scratch" / "f0.05-s0" / "test.json"
    stamp = kept.stat().st_mtime_ns
    (out / "cells" / "mindspore" / "scratch" / "f0.05-s0" / "test.json").unlink()
    capsys.readouterr()
    assert main(["--config", str(study_config)]) == 0
    assert "4 cells, 3 done, 1 to run" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp
    assert len(json.loads((out / "results.json").read_text())["cells"]) == 4


def test_bad_study_configs_are_clear_errors(tmp_path, capsys):
    bad = _yaml(tmp_path / "s.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain",
                                      "regimes": {"scratch": {"init": "nope"}}})
    assert main(["--config", str(bad)]) == 2
    assert "regime 'scratch' needs init: scratch or init: transfer" in capsys.readouterr().err
    bad = _yaml(tmp_path / "s.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain",
                                      "regimes": {"fixed": {"init": "transfer", "freze": ["branch_*"]}}})
    assert main(["--config", str(bad)]) == 2
    assert "regime 'fixed' sets unknown training key(s) ['freze']" in capsys.readouterr().err
    bad = _yaml(tmp_path / "s.yaml", {"base": "demo", "pretrain": "digits_pretrain",
                                      "regimes": {"scratch": {"init": "scratch"}}})
    assert main(["--config", str(bad)]) == 2
    assert "a study needs an array dataset" in capsys.readouterr().err


def test_the_headline_says_what_the_smallest_fraction_shows():
    from ms_transfer.study import headline

    def group(regime, fraction, mean):
        return {"framework": "mindspore", "regime": regime, "fraction": fraction, "mean": mean, "std": 0.0, "n": 1,
                "train_samples": 50 if fraction == 0.02 else 200}
    regimes = {"scratch_means": {"init": "scratch"}, "scratch": {"init": "scratch"}, "frozen": {"init": "transfer"},
               "tuned": {"init": "transfer"}}
    groups = {f"mindspore/{g['regime']}/{g['fraction']:g}": g for g in (
        group("scratch_means", 0.02, 0.55), group("scratch", 0.02, 0.61), group("frozen", 0.02, 0.90),
        group("tuned", 0.02, 0.87), group("scratch", 0.1, 0.95), group("frozen", 0.1, 0.96))}
    study = {"frameworks": ["mindspore"], "fractions": [0.1, 0.02], "regimes": regimes}
    line = headline({"study": study, "groups": groups})
    assert line.startswith("With 50 labelled training images (the smallest fraction)")
    # the best transfer regime against the best regime without pretraining, whatever their order
    assert "(frozen) reaches 0.900 test accuracy" in line
    assert "without pretraining (scratch) on the same images reaches 0.610: +0.290" in line
    assert headline({"study": {**study, "regimes": {"scratch": regimes["scratch"]}}, "groups": groups}) == ""
    # with the cells, the sentence also says how far the difference moves from one seed's draw to another's
    cells = {f"{r}/{s}": {"framework": "mindspore", "regime": r, "fraction": 0.02, "seed": s, "test_acc": a}
             for r, accs in (("scratch", (0.5, 0.7)), ("frozen", (0.9, 0.9))) for s, a in enumerate(accs)}
    line = headline({"study": study, "groups": groups, "cells": cells})
    assert "reaches 0.610: +0.290; per seed +0.200 to +0.400, what" in line


def test_small_fractions_keep_their_digits_in_the_table():
    from ms_transfer.study import percent
    assert [percent(f) for f in (0.0026, 0.0257, 0.05, 0.5, 1.0)] == ["0.26%", "2.57%", "5%", "50%", "100%"]


def test_the_demo_validates_on_no_more_labels_than_it_trains_on():
    """make demo's study: at every data fraction each class has at least as many training as validation labels,
    the smallest fraction uses at most 10 labels per class, and the target digits are not the pretraining ones."""
    from ms_transfer.core.arrays import source_splits
    from ms_transfer.core.config import load_yaml
    from ms_transfer.core.data import SplitScan, cap_split, subset_split
    from ms_transfer.study import StudyConfig

    study = StudyConfig.load(CONFIG_DIR / "study_demo.yaml")
    base = {**load_yaml(CONFIG_DIR / f"{study.base}.yaml"), **study.train}
    pretrain = load_yaml(CONFIG_DIR / f"{study.pretrain}.yaml")
    assert not set(base["dataset_classes"]) & set(pretrain["dataset_classes"])
    splits = source_splits(base["dataset"], base["val_fraction"], classes=base["dataset_classes"])

    def scan(split):
        return SplitScan(CONFIG_DIR, split, base["dataset_classes"], [("", int(c)) for c in splits[split].labels], [])
    for fraction in study.fractions:
        for seed in study.seeds:
            train = subset_split(scan("train"), fraction, seed)
            val = cap_split(scan("val"), train, seed) if base.get("val_cap") == "train" else scan("val")
            assert (np.bincount(train.labels) >= np.bincount(val.labels)).all(), (fraction, seed)
            assert len(val) >= len(base["dataset_classes"])   # at least one validation image per class
    assert np.bincount(subset_split(scan("train"), min(study.fractions), 0).labels).max() <= 10


def test_the_learning_rate_is_chosen_on_mean_validation_accuracy_over_both_fractions():
    from ms_transfer.study import choose_lr
    best = {"0.001": {"0.01": 0.80, "1": 0.97}, "0.003": {"0.01": 0.85, "1": 0.96}, "0.0003": {"0.01": 0.85, "1": 0.96}}
    assert choose_lr(best, [1.0, 0.01]) == 0.0003          # the same mean: the smaller rate
    best["0.003"]["1"] = 0.99
    assert choose_lr(best, [0.01, 1.0]) == 0.003           # the best mean
    best = {"0.001": {"0.01": 0.075, "1": 0.762}, "0.003": {"0.01": 0.100, "1": 0.562}}
    assert choose_lr(best, [0.01, 1.0]) == 0.001           # one image at 1% does not outweigh 100%


def test_a_swept_regime_trains_every_cell_with_the_winner_and_reuses_the_sweep_cell(tmp_path, monkeypatch):
    """The sweep runs each learning rate on the sweep seed at the smallest and largest fraction in the first
    framework (val accuracy only); every cell then trains with the winner, and the cells the sweep already ran are
    copied, not trained again. No training here: a fake run writes what a run writes."""
    from ms_transfer.study import Study, StudyConfig

    runs = []

    def fake_run(self, framework, config, run_dir, what):
        runs.append((framework, config["lr"], config["data_fraction"], config["seed"]))
        run_dir.mkdir(parents=True)
        val = 0.9 - abs(config["lr"] - 0.003) * 10   # 0.003 is best at every fraction
        (run_dir / "metrics.jsonl").write_text(json.dumps({"val_acc": val, "train_seconds": 1.0}) + "\n")
        (run_dir / "test.json").write_text(json.dumps({"test_acc": val, "epoch": 1}))

    monkeypatch.setattr(Study, "_run", fake_run)
    monkeypatch.setattr(Study, "init_file", lambda self, init, seed, arch=None, exclude=(): tmp_path / f"{init}-{seed}.safetensors")
    monkeypatch.setattr(Study, "write", lambda self, results: None)
    cfg = StudyConfig.load(_yaml(tmp_path / "s.yaml", {
        "base": "digit_adder", "pretrain": "digits_pretrain", "fractions": [0.05, 0.5, 1.0], "seeds": [0, 1],
        "regimes": {"scratch": {"init": "scratch", "lr": [0.001, 0.003]}}}))
    results = Study(cfg, tmp_path / "study").run()
    sweep = results["sweeps"]["scratch"]
    assert sweep["chosen"] == 0.003 and sweep["fractions"] == [0.05, 1.0] and sweep["framework"] == "mindspore"
    assert sorted(runs[:4]) == sorted(("mindspore", lr, f, 0) for lr in (0.001, 0.003) for f in (0.05, 1.0))
    trained = runs[4:]
    assert all(lr == 0.003 for _, lr, _, _ in trained)
    # 2 frameworks x 3 fractions x 2 seeds = 12 cells, of which mindspore seed 0 at 5% and 100% came from the sweep
    assert len(trained) == 10 and ("mindspore", 0.003, 0.05, 0) not in trained
    assert len(results["cells"]) == 12


def test_a_sweep_of_more_than_three_rates_is_refused(tmp_path, capsys):
    bad = _yaml(tmp_path / "s.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain",
                                      "regimes": {"scratch": {"init": "scratch", "lr": [1e-4, 3e-4, 1e-3, 3e-3]}}})
    assert main(["--config", str(bad)]) == 2
    assert "a swept lr is a list of 1 to 3 positive values" in capsys.readouterr().err


def test_the_adder_study_measures_the_recogniser_on_the_cells_test_pairs(tmp_path):
    """The bar printed beside the digit adder's table: the pretrained recogniser's two test predictions added,
    on the fixed test pairs every cell is tested on. Right predictions give 1; one wrong image spoils the two
    pairs it is in (once as the first digit, once as a partner)."""
    from ms_transfer.study import Study, StudyConfig, split_labels

    study = Study(StudyConfig(base="digit_adder", pretrain="digits_pretrain", regimes={"scratch": {"init": "scratch"}},
                              output_dir=str(tmp_path)))
    assert study.recogniser_baseline() is None            # no pretraining run yet
    labels = split_labels(study.base)
    (tmp_path / "pretrain").mkdir()
    test = tmp_path / "pretrain" / "test.json"
    test.write_text(json.dumps({"test_predictions": labels}))
    assert study.recogniser_baseline() == 1.0
    wrong = list(labels)
    wrong[0] = (wrong[0] + 1) % 10
    test.write_text(json.dumps({"test_predictions": wrong}))
    assert study.recogniser_baseline() == pytest.approx(1 - 2 / len(labels))


def test_a_second_study_process_on_the_same_directory_is_refused(tmp_path, monkeypatch, capsys):
    """Two study processes on one output directory would each start the other's running cell over (its run
    directory is replaced): the second is refused, naming the first, and touches nothing."""
    from ms_transfer.core.runlock import RunLock
    from ms_transfer.study import Study

    monkeypatch.setattr(Study, "_run", lambda *a, **k: pytest.fail("a refused study must not train"))
    config = _yaml(tmp_path / "s.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain", "seeds": [0],
                                         "fractions": [0.05], "regimes": {"scratch": {"init": "scratch"}},
                                         "output_dir": str(tmp_path / "study")})
    with RunLock(tmp_path / "study", "study"):
        assert main(["--config", str(config)]) == 1
    assert "is in use by pid" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == [".run.lock"]


def test_cells_run_side_by_side_with_jobs_and_a_failure_stops_the_queue(tmp_path, monkeypatch):
    """``jobs: 2`` trains two cells at once (each fake run waits at a barrier only two concurrent runs pass), with
    the shared dataset exported once before; the results are the serial run's. A failing cell stops the queue:
    the error names it, the cells that finished keep their results and the rest stay pending."""
    import threading
    import time

    import ms_transfer.core.recipe as recipe
    from ms_transfer.study import Study, StudyConfig, StudyError

    exported, barrier, fail = [], threading.Barrier(2, timeout=20), set()

    def fake_run(self, framework, config, run_dir, what):
        if not fail:
            barrier.wait()   # a BrokenBarrierError after 20 s if the cells ran one at a time
        elif config["seed"] in fail:
            raise StudyError(f"{what} failed (exit 1)")
        else:
            time.sleep(0.5)  # still running when the other worker's cell fails
        run_dir.mkdir(parents=True)
        val = 0.5 + 0.1 * config["seed"]
        (run_dir / "metrics.jsonl").write_text(json.dumps({"val_acc": val, "train_seconds": 1.0}) + "\n")
        (run_dir / "test.json").write_text(json.dumps({"test_acc": val, "epoch": 1}))

    monkeypatch.setattr(Study, "_run", fake_run)
    monkeypatch.setattr(recipe, "prepare_data", lambda cfg: exported.append(cfg.dataset))
    monkeypatch.setattr(Study, "init_file", lambda self, init, seed, arch=None, exclude=(): tmp_path / f"{init}-{seed}.safetensors")
    monkeypatch.setattr(Study, "write", lambda self, results: None)
    config = {"base": "digit_adder", "pretrain": "digits_pretrain", "fractions": [0.05], "seeds": [0, 1, 2, 3],
              "frameworks": ["mindspore"], "regimes": {"scratch": {"init": "scratch"}}, "jobs": 2}
    results = Study(StudyConfig.load(_yaml(tmp_path / "s.yaml", config)), tmp_path / "study").run()
    assert exported == ["mnist5k"]
    assert {k: c["test_acc"] for k, c in results["cells"].items()} == {
        f"mindspore/scratch/f0.05-s{s}": pytest.approx(0.5 + 0.1 * s) for s in range(4)}

    fail.add(1)   # seed 0 runs beside it and finishes; no cell starts after the failure
    with pytest.raises(StudyError, match="f0.05-s1"):
        Study(StudyConfig.load(_yaml(tmp_path / "s.yaml", {**config, "seeds": [0, 1, 2, 3, 4, 5]})),
              tmp_path / "study2").run()
    done = sorted(p.parent.name for p in (tmp_path / "study2" / "cells").rglob("test.json"))
    assert done == ["f0.05-s0"]


def test_jobs_below_one_and_bad_overrides_are_refused(tmp_path, capsys):
    bad = _yaml(tmp_path / "s.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain", "jobs": 0,
                                      "regimes": {"scratch": {"init": "scratch"}}})
    assert main(["--config", str(bad)]) == 2
    assert "jobs must be a whole number >= 1" in capsys.readouterr().err
    good = _yaml(tmp_path / "g.yaml", {"base": "digit_adder", "pretrain": "digits_pretrain",
                                       "regimes": {"scratch": {"init": "scratch"}}})
    assert main(["--config", str(good), "--jobs", "0"]) == 2
    assert "the command line (--jobs): jobs must be a whole number >= 1" in capsys.readouterr().err
    assert main(["--config", str(good), "--fractions", "0.5", "2"]) == 2   # the other overrides are checked too
    assert "the command line (--fractions): fractions must be in (0, 1]" in capsys.readouterr().err


def test_a_regime_s_pretrained_exclude_keeps_those_tensors_at_their_drawn_init(tmp_path, capsys):
    """A regime's ``pretrained_exclude`` (e.g. transfer only the first two conv blocks) is honoured: the cells start
    from a file of their own whose excluded tensors are the numpy-drawn ones (the study used to set the cells'
    ``pretrained_exclude`` to [] and load the whole trunk). A glob that matches nothing and a scratch regime that
    sets it are errors."""
    from ms_transfer.core.checkpoint_io import CheckpointError
    from ms_transfer.core.init import init_state, save_init
    from ms_transfer.study import Study, StudyConfig, transfer_trunk

    source = save_init(tmp_path / "pre" / "best.safetensors", "fashion_cnn", 10, seed=99)   # stands in for pretraining
    lower = ["fc.*", "features.conv3.*", "features.bn3.*"]
    trunk = transfer_trunk(source, "fashion_cnn", lower)
    assert "features.conv2.weight" in trunk and not [k for k in trunk if "conv3" in k or "bn3" in k or "fc." in k]
    with pytest.raises(CheckpointError, match="no tensor"):
        transfer_trunk(source, "fashion_cnn", ["features.conv9.*"])

    config = _yaml(tmp_path / "s.yaml", {"base": "digits_0to4", "pretrain": "digits_5to9", "seeds": [0],
                                         "regimes": {"full": {"init": "transfer"},
                                                     "lower": {"init": "transfer", "pretrained_exclude": lower}},
                                         "output_dir": str(tmp_path / "study")})
    study = Study(StudyConfig.load(config))
    study.pretrained = lambda: source
    cells = {c.regime: c for c in study.cells()}
    full, part = (read_weights(study.cell_config(cells[r])["pretrained"]).state for r in ("full", "lower"))
    assert study.cell_config(cells["lower"])["pretrained_exclude"] == []   # already applied, in the file
    pre, drawn = read_weights(source).state, init_state("fashion_cnn", 5, 0)
    assert np.array_equal(part["features.conv2.weight"], pre["features.conv2.weight"])
    assert np.array_equal(part["features.conv3.weight"], drawn["features.conv3.weight"])
    assert np.array_equal(full["features.conv3.weight"], pre["features.conv3.weight"])

    bad = _yaml(tmp_path / "b.yaml", {"base": "digits_0to4", "pretrain": "digits_5to9",
                                      "regimes": {"s": {"init": "scratch", "pretrained_exclude": ["fc.*"]}}})
    assert main(["--config", str(bad)]) == 2
    assert "pretrained_exclude leaves tensors out of the pretrained trunk, so it needs init: transfer" in \
        capsys.readouterr().err
