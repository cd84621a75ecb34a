"""The best validation epoch's checkpoint is the one tested, early stopping stops, and both survive a resume, in
both frameworks.

One run per framework (module-scoped): the digit adder's digit recogniser on 5% of the 5k MNIST digits, Adam with a step
schedule whose LR grows 100x every epoch (1e-3, 0.1, 10, ...): epoch 1 is the best validation epoch and the later
ones are ruined, so the last model and the best one differ; patience 1 stops the run after epoch 2 of 4.
"""
import json

import pytest
from conftest import small_config, train_digits

from ms_transfer.core import recipe
from ms_transfer.core.recipe import prepare_data


@pytest.fixture(scope="module", params=["mindspore", "torch"])
def stopped_run(request, tmp_path_factory):
    """A run that peaks at epoch 1 and stops early after epoch 2: ``framework``, ``tmp``, ``overrides``, the
    dataset ``root`` and the ``cache`` it was exported to (shared by this module's tests: one export)."""
    framework, tmp = request.param, tmp_path_factory.mktemp(f"early-stop-{request.param}")
    overrides = dict(epochs=4, schedule="step", step_size=1, gamma=100.0, early_stopping_patience=1,
                     num_workers=0)
    with pytest.MonkeyPatch.context() as patch:   # module scope: the per-test cache fixture is not set up yet
        patch.setattr(recipe, "CACHE_DIR", tmp / "cache")
        train_digits("digit_cnn", tmp, tmp / "run", framework, **overrides)
        root = prepare_data(small_config(tmp, tmp / "unused", dataset="mnist5k", arch="digit_cnn", image_size=28))
    return dict(framework=framework, tmp=tmp, overrides=overrides, root=root, cache=tmp / "cache")


def _rows(run):
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def test_early_stopping_stops_once_patience_runs_out(stopped_run):
    rows = _rows(stopped_run["tmp"] / "run")
    assert [r["epoch"] for r in rows] == [1, 2]      # 4 configured, stopped after epoch 2 (patience 1)
    assert rows[1]["val_acc"] < rows[0]["val_acc"]   # the LR jump ruined epoch 2


def test_the_tested_checkpoint_is_the_best_validation_epoch(stopped_run):
    framework, run, root = stopped_run["framework"], stopped_run["tmp"] / "run", stopped_run["root"]
    rows, test = _rows(run), json.loads((run / "test.json").read_text())
    best = max(rows, key=lambda r: r["val_acc"])
    assert (test["epoch"], test["model"], test["val_acc"]) == (best["epoch"], "best", best["val_acc"]) == (1, "best",
                                                                                                           rows[0]["val_acc"])
    assert (test["epochs_trained"], test["early_stopping_patience"]) == (2, 1)
    # its metrics are those of best.ckpt/.pth, evaluated on its own by the evaluation CLI's function
    ext = "ckpt" if framework == "mindspore" else "pth"
    if framework == "mindspore":
        from ms_transfer.evaluate import evaluate_checkpoint
    else:
        from torch_reference.evaluate import evaluate_checkpoint
    result = evaluate_checkpoint(str(run / f"best.{ext}"), str(root), split="test", batch_size=64, num_workers=0)
    assert result["accuracy"] == test["test_acc"]
    assert result["loss"] == test["test_loss"]  # the same batches (64) through the same weights
    last = evaluate_checkpoint(str(run / f"last.{ext}"), str(root), split="test", batch_size=64, num_workers=0)
    assert last["accuracy"] != test["test_acc"]      # the last model is not what was tested


def test_a_resumed_run_that_had_stopped_trains_no_further_epoch(stopped_run, monkeypatch):
    framework, tmp, overrides = stopped_run["framework"], stopped_run["tmp"], stopped_run["overrides"]
    monkeypatch.setattr(recipe, "CACHE_DIR", stopped_run["cache"])
    before = json.loads((tmp / "run" / "test.json").read_text())
    train_digits("digit_cnn", tmp, tmp / "run", framework, resume=True, **overrides)
    assert [r["epoch"] for r in _rows(tmp / "run")] == [1, 2]
    assert json.loads((tmp / "run" / "test.json").read_text()) == before
