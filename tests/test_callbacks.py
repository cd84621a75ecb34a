"""The loop's side effects as callbacks: hook order, callbacks replacing the defaults, a failing run's
``on_exception``, the TensorBoard logger in both frameworks (event files read back with TensorBoard's own reader),
and ``--quiet`` / ``--verbose`` on every CLI."""
import json

import numpy as np
import pytest
from conftest import small_config

from ms_transfer.core.callbacks import Callback, CallbackList, default_callbacks
from ms_transfer.core.config import save_config
from ms_transfer.core.log import setup_logging
from ms_transfer.core.recipe import plan_stages, stage_lrs
from ms_transfer.core.callbacks.tensorboard import EPOCH_TAGS


@pytest.fixture(scope="module")
def data_dir(demo_images):
    return demo_images(6, 3)  # 12 train images: 3 steps of batch 4 per epoch


@pytest.fixture(autouse=True)
def _default_log_level():
    """A CLI run with --quiet lowers the process's log level: later tests get the default back."""
    yield
    setup_logging(0)


class Recorder(Callback):
    """Every hook call, in order."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, state):
        self.calls.append("fit_start")

    def on_stage_start(self, state):
        self.calls.append(f"stage_start {state.stage.name} {len(state.stage_lrs)} lrs")

    def on_epoch_start(self, state, cached):
        self.calls.append(f"epoch_start {state.epoch} cached={cached}")

    def on_train_batch_end(self, state, batch, loss):
        assert np.isfinite(loss)
        self.calls.append(f"batch {state.global_step(batch)}")

    def on_epoch_end(self, state, epoch, metrics):
        assert state.history[-1] is metrics
        self.calls.append(f"epoch_end {epoch}")

    def on_fit_end(self, state):
        self.calls.append("fit_end")

    def on_exception(self, state, exc):
        self.calls.append(f"exception {type(exc).__name__}")


class Fail(Callback):
    def on_train_batch_end(self, state, batch, loss):
        if state.global_step(batch) == 4:
            raise RuntimeError("a callback failed at step 4")


def test_given_callbacks_replace_the_defaults_and_see_every_hook_in_order(data_dir, tmp_path):
    from torch_reference.train import train
    recorder = Recorder()
    train(small_config(data_dir, tmp_path / "run", epochs=2, num_workers=0), callbacks=[recorder])
    assert recorder.calls == ["fit_start", "stage_start finetune 6 lrs",
                              "epoch_start 1 cached=False", "batch 1", "batch 2", "batch 3", "epoch_end 1",
                              "epoch_start 2 cached=False", "batch 4", "batch 5", "batch 6", "epoch_end 2",
                              "fit_end"]
    # no default callbacks: the loop itself writes only the config (and its lock note is gone)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["config.yaml"]


def test_a_failing_run_calls_on_exception_and_raises(data_dir, tmp_path):
    from torch_reference.train import train
    recorder = Recorder()
    cfg = small_config(data_dir, tmp_path / "run", epochs=2, num_workers=0)
    with pytest.raises(RuntimeError, match="at step 4"):
        train(cfg, callbacks=[*default_callbacks(cfg), recorder, Fail()])
    assert recorder.calls[-3:] == ["epoch_start 2 cached=False", "batch 4", "exception RuntimeError"]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1]  # epoch 1 recorded, checkpoints of epoch 1 kept
    assert (tmp_path / "run" / "last.pth").is_file()


def test_callbacks_must_be_callback_instances():
    with pytest.raises(TypeError, match="Callback instances"):
        CallbackList([lambda state: None])


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_tensorboard_flag_writes_loss_lr_and_epoch_scalars(data_dir, tmp_path, capsys, framework):
    """``--tensorboard DIR`` through each trainer's CLI: per-step loss and LR (the cosine schedule's), per-epoch
    losses and accuracy equal to ``metrics.jsonl``; the torch run is ``--quiet`` (no epoch lines, no report), the
    MindSpore one ``--verbose`` (the debug lines too)."""
    from ms_transfer.train import main as ms_main
    from torch_reference.train import main as torch_main
    cfg = small_config(data_dir, tmp_path / "run", epochs=2, schedule="cosine", num_workers=0)
    save_config(cfg, tmp_path / "run.yaml")
    level = {"mindspore": "--verbose", "torch": "--quiet"}[framework]
    main = {"mindspore": ms_main, "torch": torch_main}[framework]
    assert main(["--config", str(tmp_path / "run.yaml"), "--tensorboard", str(tmp_path / "tb"), level]) == 0
    out = capsys.readouterr().out
    shown = framework == "mindspore"
    assert ("epoch 2/2 [finetune]" in out and "Done: best val accuracy" in out) is shown
    assert ("Callbacks: ProgressBar, MetricsWriter, CheckpointWriter, Plots, TestEvaluation, TensorBoardLogger"
            in out) is shown

    scalars = _events(tmp_path / "tb")
    assert set(scalars) == {"step/loss", "step/lr", *EPOCH_TAGS.values()}
    assert [s for s, _ in scalars["step/loss"]] == [s for s, _ in scalars["step/lr"]] == [1, 2, 3, 4, 5, 6]
    lrs = stage_lrs(cfg, plan_stages(cfg)[0], 3)
    np.testing.assert_allclose([v for _, v in scalars["step/lr"]], lrs, rtol=1e-6)
    assert lrs[0] > lrs[-1]  # cosine: the LR really changes per step
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key, tag in EPOCH_TAGS.items():
        assert [s for s, _ in scalars[tag]] == [1, 2]
        np.testing.assert_allclose([v for _, v in scalars[tag]], [r[key] for r in rows], rtol=1e-6, err_msg=tag)
    losses = np.array([v for _, v in scalars["step/loss"]]).reshape(2, 3)
    np.testing.assert_allclose(losses.mean(axis=1), [r["train_loss"] for r in rows], rtol=1e-5)


def test_tensorboard_without_its_package_is_a_clear_error_before_the_run(data_dir, tmp_path, capsys, monkeypatch):
    import sys

    from torch_reference.train import main
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)  # as if not installed
    cfg = small_config(data_dir, tmp_path / "run", num_workers=0)
    save_config(cfg, tmp_path / "run.yaml")
    assert main(["--config", str(tmp_path / "run.yaml"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "pip install -e '.[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _clis():
    from ms_transfer import bench, evaluate, predict, study, train
    from ms_transfer.core import convert
    from torch_reference import evaluate as torch_evaluate
    from torch_reference import train as torch_train
    return [train, torch_train, evaluate, predict, study, convert, bench, torch_evaluate]


def test_every_cli_takes_quiet_and_verbose(capsys):
    for module in _clis():
        with pytest.raises(SystemExit) as exit_:
            module.main(["--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "--quiet" in text and "--verbose" in text, module.__name__
        with pytest.raises(SystemExit):  # one or the other
            module.main(["--quiet", "--verbose"])
        assert "not allowed with argument" in capsys.readouterr().err, module.__name__


def test_the_callbacks_load_no_framework(tmp_path):
    """The callbacks are core: importing them and writing TensorBoard events loads no framework (tensorboardX
    would import torch into a MindSpore run)."""
    import subprocess
    import sys
    code = ("import sys, ms_transfer.core.callbacks\n"
            "from ms_transfer.core.callbacks.tensorboard import TensorBoardLogger\n"
            f"logger = TensorBoardLogger({str(tmp_path / 'tb')!r})\n"
            "logger.on_fit_start(None)\nlogger.scalar('a/b', 1.5, 3)\nlogger.on_fit_end(None)\n"
            "print(sorted(m for m in ('mindspore', 'torch', 'tensorflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert _events(tmp_path / "tb") == {"a/b": [(3, 1.5)]}
