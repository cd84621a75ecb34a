"""The one training loop (ms_transfer.core.loop) and its framework-neutral core: layering, resume-extend and
resume refusals, the run-directory lock across processes and frameworks, ``--demo`` from an installed package,
and the frozen-trunk fast path + feature cache on the torch backend."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config

from ms_transfer.core.feature_cache import CACHE_STATS
from ms_transfer.core.recipe import TrainingError
from ms_transfer.core.runlock import INFO_NAME, RunDirInUse, RunLock

ROOT = Path(__file__).resolve().parent.parent
CORE_MODULES = sorted(p.stem for p in (ROOT / "ms_transfer" / "core").glob("*.py") if p.stem != "__init__")


def _python(code: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(demo_images):
    return demo_images(6, 3)


_cfg = small_config


def _trainers():
    from ms_transfer.train import train as ms_train
    from torch_reference.train import train as torch_train
    return {"mindspore": (ms_train, "ckpt"), "torch": (torch_train, "pth")}


# --- layering -----------------------------------------------------------------------------------------------

def test_core_imports_neither_framework():
    """Every core module imports with mindspore and torch made unimportable (a meta-path blocker)."""
    result = _python(f"""
        import importlib, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("mindspore", "torch", "torchvision"):
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        for m in {CORE_MODULES!r}:
            importlib.import_module("ms_transfer.core." + m)
        print("imported", len({CORE_MODULES!r}))
    """, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(CORE_MODULES)}" in result.stdout and len(CORE_MODULES) >= 15


def test_torch_side_never_loads_mindspore_and_the_package_has_no_side_effects():
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    result = _python("""
        import os, sys
        import ms_transfer, ms_transfer.core.loop
        caps = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # the cap's two spellings (mindspore_backend.onednn)
        assert not set(caps) & set(os.environ), "import ms_transfer changed the environment"
        import torch_reference.train, torch_reference.evaluate
        assert not [m for m in sys.modules if m.split(".")[0] == "mindspore"], "MindSpore was imported"
        assert not set(caps) & set(os.environ)
        import ms_transfer.models  # the MindSpore side applies its oneDNN decision itself (mindspore_backend.onednn)
        from ms_transfer.mindspore_backend import context
        assert all(os.environ.get(var) == context.DECISION.isa for var in caps), context.DECISION
        print("ok")
    """, cwd=ROOT, env=env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# --- resume -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_resume_extends_a_finished_run(data_dir, tmp_path, framework):
    """The most common reason to resume: train 1 epoch, then --resume --epochs 3 continues (the crash this
    replaces: MindSpore's Gather indexing past the restored 1-epoch learning-rate list)."""
    train, ext = _trainers()[framework]
    common = dict(lr=1e-3, schedule="cosine", mode="graph")
    train(_cfg(data_dir, tmp_path / "run", epochs=1, **common))
    first = (tmp_path / "run" / f"last.{ext}").read_bytes()
    summary = train(_cfg(data_dir, tmp_path / "run", epochs=3, resume=True, **common))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and summary["epochs"] == 3
    assert (tmp_path / "run" / f"last.{ext}").read_bytes() != first
    assert "epochs: 3" in (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(TrainingError, match="already trained 3 epoch.*--epochs N with N > 3"):
        train(_cfg(data_dir, tmp_path / "run", epochs=3, resume=True, **common))


def test_resume_refuses_a_changed_setting_and_changes_nothing(data_dir, tmp_path):
    train, _ = _trainers()["mindspore"]
    run = tmp_path / "run"
    train(_cfg(data_dir, run, epochs=1))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(TrainingError, match=r"--resume: lr is 0\.5 but .* lr=0\.01"):
        train(_cfg(data_dir, run, epochs=2, lr=0.5, resume=True))
    with pytest.raises(TrainingError, match="--resume: strategy"):
        train(_cfg(data_dir, run, epochs=2, strategy="fixed_feature", resume=True))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # config.yaml not rewritten


def test_failed_resume_on_a_corrupt_checkpoint_changes_nothing(data_dir, tmp_path, capsys):
    from ms_transfer.train import main
    train, _ = _trainers()["mindspore"]
    run = tmp_path / "run"
    train(_cfg(data_dir, run, epochs=1))
    (run / "last.ckpt").write_bytes(b"truncated")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = ["--config", "wolf_dog_finetune", "--arch", "resnet18", "--pretrained", "none", "--data-dir",
            str(data_dir), "--output-dir", str(run), "--image-size", "32", "--epochs", "2", "--mode", "pynative",
            "--resume", "--lr", "0.3"]
    assert main(argv) == 2
    assert "last.ckpt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# --- the run-directory lock -----------------------------------------------------------------------------

def _hold_lock(run_dir: Path, framework: str) -> subprocess.Popen:
    """Another process holding the run directory (as a running training would)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ms_transfer.core.runlock import RunLock
        lock = RunLock({str(run_dir)!r}, {framework!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("holder, framework", [("mindspore", "mindspore"), ("torch", "mindspore"),
                                               ("mindspore", "torch")])
def test_a_second_run_on_the_same_directory_is_refused(data_dir, tmp_path, capsys, holder, framework):
    from ms_transfer.train import main as ms_main
    from torch_reference.train import main as torch_main
    run = tmp_path / "run"
    proc = _hold_lock(run, holder)
    try:
        argv = ["--config", "demo", "--data-dir", str(data_dir), "--output-dir", str(run), "--image-size", "32",
                "--epochs", "1", "--mode", "pynative"]
        assert {"mindspore": ms_main, "torch": torch_main}[framework](argv) == 1
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and holder in err and "in use" in err
        assert sorted(p.name for p in run.iterdir()) == [".run.lock", INFO_NAME]  # nothing written
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_of_a_killed_run_is_taken_over(data_dir, tmp_path, capsys):
    train, _ = _trainers()["mindspore"]
    run = tmp_path / "run"
    proc = _hold_lock(run, "torch")
    proc.kill()  # killed: the OS releases the lock, the holder note stays behind
    proc.wait()
    assert (run / INFO_NAME).exists()
    train(_cfg(data_dir, run, epochs=1))
    err = capsys.readouterr().err
    assert "stale lock" in err and f"pid {proc.pid}" in err
    assert (run / "last.ckpt").is_file() and not (run / INFO_NAME).exists()


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with RunLock(tmp_path / "run", "mindspore"):
        with pytest.raises(RunDirInUse, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run", "torch").acquire()
    RunLock(tmp_path / "run", "torch").acquire().release()  # free again


def test_a_failed_fresh_run_leaves_no_directory(tmp_path):
    train, _ = _trainers()["mindspore"]
    with pytest.raises(Exception, match="does not exist"):
        train(_cfg(tmp_path / "no-such-data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# --- --demo from an installed package -----------------------------------------------------------------------

def test_demo_runs_offline_from_another_directory_with_a_non_editable_install(tmp_path):
    """Build the wheel, install it (no deps: the venv has them) into a folder of its own, and run --demo from a
    directory that is not the checkout: the shipped demo config is found and nothing is downloaded."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"  # build from a copy: setuptools writes build/ in-tree
    # only what the wheel is built from: a copy of the whole checkout took in a second venv (8 GB) when one existed
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("ms_transfer", "torch_reference", "parity"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(next(wheels.glob("*.whl")))], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "ms_transfer" / "configs" / "demo.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), no_proxy="*", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9")  # any download attempt would fail fast
    run = subprocess.run([sys.executable, "-c", "import ms_transfer, sys; print(ms_transfer.__file__)"],
                         capture_output=True, text=True, cwd=work, env=env)
    assert run.stdout.strip().startswith(str(site)), run.stdout  # the installed copy, not the checkout
    train = subprocess.run([sys.executable, "-m", "ms_transfer.train", "--demo", "--epochs", "1", "--image-size", "32",
                            "--output-dir", "runs/demo"], capture_output=True, text=True, cwd=work, env=env,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "runs" / "demo" / "best.ckpt").is_file() and (work / "data" / "demo" / "README.txt").is_file()
    assert "arch: resnet18" in (work / "runs" / "demo" / "config.yaml").read_text()


# --- frozen trunk and feature cache on the torch backend ----------------------------------------------------

def test_torch_frozen_trunk_uses_the_feature_cache_and_trains_the_same(data_dir, tmp_path):
    """Both frameworks get the fast path and the cache from the one loop: a cached torch run equals an uncached
    one exactly (the head sees the same features in the same batches), and a second run reads the cache."""
    import torch

    from torch_reference.checkpoint import load_run_checkpoint
    from torch_reference.train import train
    common = dict(strategy="fixed_feature", augment="none", epochs=3, num_workers=0)
    CACHE_STATS.clear()
    train(_cfg(data_dir, tmp_path / "cached", **common))
    assert CACHE_STATS["saved"] == 2 and CACHE_STATS["reuse"] >= 2  # train + val saved; later epochs from memory
    train(_cfg(data_dir, tmp_path / "plain", feature_cache="off", **common))
    train(_cfg(data_dir, tmp_path / "again", **common))
    assert CACHE_STATS["hit"] == 2  # the third run read both splits from disk
    states = [load_run_checkpoint(tmp_path / name / "last.pth")[0].state_dict()
              for name in ("cached", "plain", "again")]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]) and torch.equal(states[0][key], states[2][key]), key
    rows = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("cached", "plain")]
    assert [r["val_acc"] for r in rows[0]] == [r["val_acc"] for r in rows[1]]
    np.testing.assert_allclose([r["train_loss"] for r in rows[0]], [r["train_loss"] for r in rows[1]], rtol=0)


def test_onednn_cap_follows_the_bundled_version_the_cpu_and_the_user():
    """The cap is decided, not assumed (ms_transfer.mindspore_backend.onednn): the user's ISA wins; no AVX-512, no cap;
    an unprobed machine gets the rule from the measured versions (oneDNN >= 3: AVX2, 2.x: none); a cached probe decides
    (the kernels oneDNN picked first, see test_onednn.py)."""
    from ms_transfer.mindspore_backend import onednn

    version = onednn.bundled_onednn()
    assert version and version.count(".") == 2   # read from MindSpore's own libdnnl
    assert onednn.decide("AVX512_CORE").isa == "AVX512_CORE"
    decision = onednn.decide(None)
    if not onednn.cpu()["avx512"]:
        assert decision.isa is None
    elif not decision.probe:   # the rule until a probe (see ms_transfer.mindspore_backend.onednn.rule)
        assert decision.isa == ("AVX2" if int(version.split(".")[0]) >= 3 else None)
    else:   # measured: the kernels oneDNN picked, then the rule unless timing is clearly apart (onednn.probed_choice)
        assert decision.isa == onednn.probed_choice(onednn.rule(version).isa, decision.probe)
    assert f"oneDNN {version}" in decision.describe()
