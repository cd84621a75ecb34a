"""One config, two frameworks: torch_reference.train mirrors ms_transfer.train (artifacts, metrics fields,
freezing, resume), and a run's checkpoint from either side evaluates identically on the other."""
import functools
import json

import numpy as np
import pytest
import torch
from conftest import crash_after, small_config

from ms_transfer.core import naming
from ms_transfer.core.convert import convert_file
from ms_transfer.core.recipe import METRIC_FIELDS, TrainingError, plan_stages
from ms_transfer.evaluate import evaluate_checkpoint as ms_evaluate
from torch_reference.backend import TorchBackend
from torch_reference.checkpoint import load_run_checkpoint
from torch_reference.evaluate import evaluate_checkpoint as torch_evaluate
from torch_reference.models import build_model
from torch_reference.train import main as torch_main
from torch_reference.train import train as torch_train


@pytest.fixture(scope="module")
def data_dir(demo_images):
    return demo_images(6, 4, corrupt=True)


_cfg = functools.partial(small_config, num_workers=0)


@pytest.fixture(scope="module")
def both_runs(data_dir, tmp_path_factory):
    """The same config trained by each framework (the pil resize makes the val inputs identical)."""
    from ms_transfer.train import train as ms_train
    root = tmp_path_factory.mktemp("runs")
    common = dict(epochs=2, strategy="partial", lr_mult={"fc.*": 10.0}, schedule="cosine", weight_decay=1e-4,
                  resize_backend="pil")
    ms_train(_cfg(data_dir, root / "ms", **common))
    torch_train(_cfg(data_dir, root / "torch", **common))
    return root / "ms", root / "torch"


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_same_config_same_artifacts_and_metric_fields(both_runs):
    ms_run, torch_run = both_runs
    for run, ext in ((ms_run, "ckpt"), (torch_run, "pth")):
        for name in (f"best.{ext}", f"last.{ext}", "metrics.jsonl", "curves.png", "predictions.png", "config.yaml"):
            assert (run / name).stat().st_size > 0, run / name
    ms_rows, torch_rows = _rows(ms_run), _rows(torch_run)
    assert [list(r) for r in ms_rows] == [list(r) for r in torch_rows] == [list(METRIC_FIELDS)] * 2
    assert (ms_run / "config.yaml").read_text().replace("/ms\n", "/torch\n") == (torch_run / "config.yaml").read_text()
    assert all(r["skipped_files"] == 1 for r in ms_rows + torch_rows)  # the corrupt jpg, on both sides


def test_checkpoints_cross_evaluate_to_the_same_accuracy(both_runs, data_dir, tmp_path):
    ms_run, torch_run = both_runs
    for run, src, dst, evaluate in ((ms_run, "best.ckpt", "ported.pth", torch_evaluate),
                                    (torch_run, "best.pth", "ported.ckpt", ms_evaluate)):
        best = max(_rows(run), key=lambda r: r["val_acc"])  # best.* holds the first epoch with the top accuracy
        best = next(r for r in _rows(run) if r["val_acc"] == best["val_acc"])
        ported = tmp_path / f"{run.name}-{dst}"
        convert_file(run / src, ported)
        convert_file(run / src.replace("best", "last"), tmp_path / f"{run.name}-last-{dst}")  # optimizer state left out
        for ckpt in (ported, run / src):  # the converted file, and the original read across directly
            result = evaluate(str(ckpt), str(data_dir))
            assert result["accuracy"] == best["val_acc"], (ckpt, result["accuracy"], best)
            # same inputs (pil resize), same weights: logits agree to ~1e-6 relative (eval parity), so the
            # mean loss to well within 1e-4
            assert result["loss"] == pytest.approx(best["val_loss"], rel=1e-4, abs=1e-6)


def test_unfreeze_patterns_select_the_same_layers_in_both_frameworks(data_dir, tmp_path):
    from ms_transfer.models import create_model
    from ms_transfer.mindspore_backend.optim import apply_freeze
    cfg = _cfg(data_dir, tmp_path, freeze=["*"], unfreeze=["fc.*", "layer4.*"], strategy="finetune")
    stage = plan_stages(cfg)[0]
    net = create_model("resnet18", num_classes=2)
    ms_report = apply_freeze(net, stage.freeze, stage.unfreeze)
    to_tv = naming.name_map("resnet18", "ms_transfer", "torchvision")
    ms_trainable = {to_tv[p.name] for p in net.trainable_params()}
    trainer = TorchBackend(cfg).adopt(build_model("resnet18", 2), "resnet18")
    trainer.enter_stage(stage, [cfg.lr])
    torch_trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert torch_trainable == ms_trainable
    assert torch_trainable and all(n.startswith(("fc.", "layer4.")) for n in torch_trainable)
    assert len(trainer.frozen_bns) == ms_report.frozen_bn > 0


def _torch_state(path):
    return {k: v.numpy().copy() for k, v in load_run_checkpoint(path)[0].state_dict().items()}


def test_frozen_trunk_and_its_bn_statistics_stay_bit_identical(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path / "run", strategy="fixed_feature", epochs=2)
    torch.manual_seed(cfg.seed)  # train() builds the model right after seeding: the same initial weights
    before = {k: v.numpy().copy() for k, v in build_model("resnet18", 2).state_dict().items()}
    torch_train(cfg)
    after = _torch_state(tmp_path / "run" / "last.pth")
    trunk = [k for k in before if not k.startswith("fc.")]
    assert any(k.endswith("running_var") for k in trunk)
    for k in trunk:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    common = dict(epochs=3, lr=1e-3, schedule="cosine", weight_decay=1e-4, lr_mult={"fc.*": 10.0})
    torch_train(_cfg(data_dir, tmp_path / "full", **common))
    cut = _cfg(data_dir, tmp_path / "cut", **common)
    with pytest.raises(KeyboardInterrupt):
        torch_train(cut, callbacks=crash_after(2, cut))
    torch_train(_cfg(data_dir, tmp_path / "cut", resume=True, **common))
    full, resumed = _torch_state(tmp_path / "full" / "last.pth"), _torch_state(tmp_path / "cut" / "last.pth")
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)
    assert [r["epoch"] for r in _rows(tmp_path / "cut")] == [1, 2, 3]


def test_a_run_directory_of_the_other_framework_is_refused(both_runs, data_dir):
    ms_run, _ = both_runs
    before = (ms_run / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="other framework"):
        torch_train(_cfg(data_dir, ms_run))
    assert (ms_run / "metrics.jsonl").read_text() == before  # nothing touched


def test_cli_errors_exit_2(tmp_path, capsys):
    assert torch_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        torch_main(["--optimizer", "lbfgs"])


def test_loader_workers_start_from_a_forkserver_and_draw_what_forked_workers_draw(data_dir, monkeypatch):
    """DataLoader workers are forked from a forkserver, never from the training process: forking a process whose
    other threads are entering Python can copy the interpreter's thread-list lock while it is held, and the worker
    then waits forever (CPython gh-112275; a torchrun rank's worker hung so here, and a loop of 1-worker loaders
    beside 3 threads entering Python through ctypes hung at its 164th fork, never with the forkserver). How a worker
    starts does not change what it draws: the same augmented batches as forked workers."""
    import torch_reference.data as torch_data
    from ms_transfer.core.data import resolve_data_root, scan_split

    samples, _, _ = scan_split(resolve_data_root(data_dir), "train")

    def batches():
        loader, _ = torch_data.build_loader(samples, 32, 4, train=True, shuffle=True, seed=3, num_workers=2,
                                            augment="random")
        return loader.multiprocessing_context.get_start_method(), [x.numpy() for x, _ in loader]

    start, served = batches()
    assert start == "forkserver"
    monkeypatch.setattr(torch_data, "WORKER_START", "fork")
    start, forked = batches()
    assert start == "fork" and len(served) == len(forked) > 1
    assert all(np.array_equal(a, b) for a, b in zip(served, forked))


def test_loader_workers_end_when_their_training_process_is_killed(data_dir, tmp_path):
    """A forkserver's worker is not the trainer's child, so torch's own check (has my parent changed?) cannot see a
    SIGKILLed trainer; without ``exit_with`` its workers waited for work forever, kept the forkserver alive, and held
    the run's stdout open (a torchrun test then timed out reading it). Here: the workers of a killed trainer are
    gone within seconds, and so is its forkserver."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "trainer.py"
    script.write_text(
        "import sys\n"
        "from ms_transfer.core.data import resolve_data_root, scan_split\n"
        "from torch_reference.data import build_loader\n"
        "if __name__ == '__main__':\n"
        f"    samples, _, _ = scan_split(resolve_data_root({str(data_dir)!r}), 'train')\n"
        "    loader, _ = build_loader(samples, 32, 2, train=True, shuffle=True, seed=0, num_workers=2)\n"
        "    it = iter(loader)\n"
        "    next(it)\n"
        "    print(*[w.pid for w in it._workers], flush=True)\n"
        "    sys.stdin.read()\n")   # waits until killed, its workers idle
    trainer = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    workers = [int(p) for p in trainer.stdout.readline().split()]
    server = {int(open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[1]) for w in workers}
    assert len(workers) == 2 and trainer.pid not in server   # the workers' parent is the forkserver

    def running(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert all(running(p) for p in workers + list(server))
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    deadline = time.time() + 10   # measured: gone within 0.1 s (a pidfd wakes the waiting thread at once)
    while any(running(p) for p in workers + list(server)) and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers + list(server) if running(p)]


@pytest.mark.parametrize("run_as", ["module", "script"])
def test_loader_workers_do_not_import_the_main_module_again(data_dir, tmp_path, run_as):
    """Every new worker re-runs the program's main module (multiprocessing's spawn preparation: ``__mp_main__``),
    and a loader's workers are new every epoch. The forkserver imports what the main module imported, once, so
    those imports are already there in each worker; before, each worker imported them again (a 15-image run of 16
    epochs waited ~2 s an epoch: 47 s against 15 s). Here the main module imports a marker module that logs the importing process:
    three epochs of 2 workers log 2 processes (the trainer and the forkserver), not 8. Both ways a program runs:
    ``python -m module`` and ``python script.py``."""
    import os
    import subprocess
    import sys

    log = tmp_path / "imports.log"
    (tmp_path / "marker.py").write_text(f"import os\nopen({str(log)!r}, 'a').write(f'{{os.getpid()}}\\n')\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "trainer.py").write_text(   # in a package: runpy's warning names a package
        "import marker\n"
        "from ms_transfer.core.data import resolve_data_root, scan_split\n"
        "from torch_reference.data import build_loader\n"
        "if __name__ == '__main__':\n"
        f"    samples, _, _ = scan_split(resolve_data_root({str(data_dir)!r}), 'train')\n"
        "    for epoch in range(3):\n"
        "        loader, _ = build_loader(samples, 32, 2, train=True, shuffle=True, seed=epoch, num_workers=2)\n"
        "        assert len(list(loader)) > 1\n")
    argv = ["-m", "app.trainer"] if run_as == "module" else [str(tmp_path / "app" / "trainer.py")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(set(log.read_text().split())) == 2, log.read_text()
    # runpy warns of a main module imported before its run
    assert "RuntimeWarning" not in done.stderr, done.stderr[-3000:]
