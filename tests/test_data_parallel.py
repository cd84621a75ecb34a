"""Data parallelism under the frameworks' own launchers (issue 13): sharding and launcher detection (core), the demo
config trained by ``msrun`` and ``torchrun`` with 2 ranks (one run directory, the files of a single-process run,
``--resume``, a rank that dies), and ``python -m parity --world-size 2`` (2-rank steps equal one process; each
injected data-parallel bug fails under both launchers)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import own_cache

from ms_transfer.core.data import batch_indices, shuffle_order
from ms_transfer.core.distributed import Dist, detect, launch_command, launcher_env, shard_epoch, threads_per_rank

ROOT = Path(__file__).resolve().parent.parent
#: what a single-process run writes (tests/test_train.py checks the same list for one process)
RUN_FILES = {"config.yaml", "metrics.jsonl", "curves.png", "predictions.png"}


# --- core: sharding and detection -----------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch, world", [(128, 16, 2), (37, 4, 2), (37, 4, 3), (10, 4, 2), (5, 8, 2), (64, 1, 4)])
def test_every_sample_once_on_exactly_one_rank_and_steps_are_one_process_steps(n, batch, world):
    order = shuffle_order(n, 7)
    shards = [shard_epoch(order, batch, r, world) for r in range(world)]
    steps = {s[1] for s in shards}
    assert len(steps) == 1   # every rank takes as many steps
    seen = np.concatenate([s[0] for s in shards])
    assert len(seen) == len(set(seen.tolist()))   # no duplicates
    left_out = n % world
    assert all(s[2] == left_out for s in shards) and len(seen) == n - left_out   # only n mod world, and said so
    # step i of the W-rank run = step i of one process with batch W*B, the slices in rank order
    single = batch_indices(n - left_out, world * batch, None)
    single = [order[idx] for idx in single]
    assert len(single) == steps.pop()
    for i, block in enumerate(single):
        per_rank = len(block) // world
        for r, (mine, _, _) in enumerate(shards):
            start = sum(min(batch, len(b) // world) for b in single[:i])
            assert list(mine[start:start + per_rank]) == list(block[r * per_rank:(r + 1) * per_rank])


def test_shard_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        shard_epoch(range(8), 2, 2, 2)


def test_launchers_are_detected_from_their_environment():
    assert detect({}) == Dist()
    assert detect({"MS_ROLE": "MS_WORKER", "RANK_ID": "1", "RANK_SIZE": "2", "MS_WORKER_NUM": "2"}) == \
        Dist(1, 2, 2, "msrun")
    assert detect({"MS_ROLE": "MS_SCHED", "RANK_ID": "0", "RANK_SIZE": "2"}).launcher == "msrun-scheduler"
    assert detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == Dist(3, 4, 2, "torchrun")
    with pytest.raises(RuntimeError, match="RANK_ID"):
        detect({"MS_ROLE": "MS_WORKER", "RANK_SIZE": "2"})
    # 2 local ranks on 2 cores: one thread each; never zero
    assert threads_per_rank(Dist(0, 2, 2, "torchrun"), cores=2) == 1
    assert threads_per_rank(Dist(0, 4, 4, "msrun"), cores=2) == 1
    assert threads_per_rank(Dist(0, 2, 2, "msrun"), cores=16) == 8


# --- the demo config under both launchers ---------------------------------------------------------------------

#: the training module each launcher runs
TRAIN = {"msrun": "ms_transfer.train", "torchrun": "torch_reference.train"}


def _launch(launcher, args, tmp_path, **popen):
    cmd = launch_command(launcher, 2, [TRAIN[launcher], *args], tmp_path / "msrun_logs")
    env = {**launcher_env(), "MS_TRANSFER_CACHE": str(own_cache(tmp_path / "cache"))}
    return cmd, env


def _run(launcher, args, tmp_path, timeout=600):
    cmd, env = _launch(launcher, args, tmp_path)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _demo_args(tmp_path, out, *extra):
    return ["--config", str(ROOT / "configs" / "demo.yaml"), "--data-dir", str(tmp_path / "demo"),
            "--output-dir", str(out), *extra]


def test_msrun_trains_the_demo_config_into_one_run_directory_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = _run("msrun", _demo_args(tmp_path, out, "--epochs", "1"), tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = first.stdout
    # rank 0 alone prints the run (msrun --join shows every rank's output: one epoch line, one config table)
    assert text.count("epoch 1/1 [finetune]") == 1 and "2 ranks x batch 16 = global batch 32, 4 steps" in text
    assert "rank 1 of 2" in text and "1 CPU kernel thread(s) per rank" in text
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == RUN_FILES | {"best.ckpt", "last.ckpt"}
    resumed = _run("msrun", _demo_args(tmp_path, out, "--epochs", "2", "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # the logged accuracy is a single-process evaluation of the checkpoint rank 0 wrote
    from ms_transfer.evaluate import main as evaluate
    result = tmp_path / "eval.json"
    assert evaluate(["--ckpt", str(out / "last.ckpt"), "--data-dir", str(tmp_path / "demo"),
                     "--json", str(result)]) == 0
    assert json.loads(result.read_text())["accuracy"] == pytest.approx(rows[-1]["val_acc"], abs=1e-9)


LAST = {"msrun": "last.ckpt", "torchrun": "last.pth"}


def _kill_a_rank_mid_run(launcher, tmp_path, out):
    """Start 40 frozen-trunk epochs on 2 ranks, SIGKILL one worker once rank 0 has written its last checkpoint;
    returns the launcher's output and the seconds from the kill to its (non-zero) exit."""
    cmd, env = _launch(launcher, _demo_args(tmp_path, out, "--epochs", "40", "--strategy", "fixed_feature"), tmp_path)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / LAST[launcher]).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    children = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), TRAIN[launcher]], capture_output=True,
                              text=True).stdout.split()
    # msrun's scheduler runs the workers' command line too; MS_ROLE tells them apart
    workers = [pid for pid in children
               if launcher != "msrun" or b"MS_ROLE=MS_WORKER" in Path(f"/proc/{pid}/environ").read_bytes()]
    assert len(workers) == 2, children
    killed = time.time()
    os.kill(int(workers[-1]), signal.SIGKILL)   # one rank dies mid-run
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, output[-3000:]
    return output, time.time() - killed


def _resume_one_more_epoch(launcher, tmp_path, out, done):
    """best/last are intact (atomic writes by rank 0): the run resumes from last for one more epoch."""
    resumed = _run(launcher, _demo_args(tmp_path, out, "--epochs", str(done + 1), "--strategy", "fixed_feature",
                                        "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, done + 2))


def test_torchrun_frozen_trunk_run_survives_a_killed_rank_and_resumes(tmp_path):
    out = tmp_path / "run"
    output, _ = _kill_a_rank_mid_run("torchrun", tmp_path, out)
    assert "Signal 9 (SIGKILL)" in output or "SIGKILL" in output, output[-3000:]
    assert "Feature cache: off under data parallelism" in output
    from torch_reference.checkpoint import load_run_checkpoint
    _, meta, _ = load_run_checkpoint(out / "last.pth")
    assert 1 <= meta["epoch"] < 40
    _resume_one_more_epoch("torchrun", tmp_path, out, meta["epoch"])
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == RUN_FILES | {"best.pth", "last.pth"}


@pytest.mark.slow
def test_msrun_run_ends_when_a_rank_is_killed_and_resumes(tmp_path):
    """msrun's side of a dead rank (slow: its scheduler needs ~30 s of missed heartbeats before it ends the job):
    SIGKILL one worker mid-run; msrun exits non-zero instead of hanging, and rank 0's last.ckpt loads and resumes."""
    out = tmp_path / "run"
    output, seconds = _kill_a_rank_mid_run("msrun", tmp_path, out)
    print(f"msrun ended the job {seconds:.0f} s after the kill")
    assert seconds < 120, output[-3000:]   # measured: 34-45 s
    assert "exited with exception" in output, output[-3000:]   # msrun's words; the rank's own log has the rest
    from ms_transfer.models import load_run_checkpoint
    _, weights = load_run_checkpoint(out / "last.ckpt")
    assert 1 <= weights.meta["epoch"] < 40
    _resume_one_more_epoch("msrun", tmp_path, out, weights.meta["epoch"])


# --- parity: 2 ranks = one process, and the injected bugs ------------------------------------------------------

def test_two_ranks_equal_one_process_and_each_data_parallel_bug_fails_under_both_launchers():
    """ResNet18 at 64 px, per-rank batch 4, 3 steps (python -m parity --train-steps 3 --world-size 2): clean runs
    pass the training-step rule against one process (per-slice BN reference in finetune; plain batch 8 with the
    frozen trunk), with bit-identical ranks after every step; each bug fails its run, under msrun and torchrun."""
    from parity import ParityConfig
    from parity.suite.data_parallel import DP_BUGS, run_data_parallel

    cfg = ParityConfig(arch="resnet18", mode="graph", batch=4, image_size=64, num_classes=10, train_steps=3)
    cases = [("finetune", None), ("fixed_feature", None)] + [("finetune", bug) for bug in DP_BUGS]
    results = run_data_parallel(cfg, cases)
    for (launcher, regime, bug), rows in results.items():
        ranks = [r for r in rows if r.check.endswith("ranks agree")]
        assert ranks and ranks[0].passed, rows     # every rank bit-identical (all bugs keep the ranks in step)
        if bug is None:
            assert all(r.passed for r in rows), (launcher, regime, rows)
            assert max(r.ratio for r in rows) < 1.0, rows   # bound K = 4; measured <= 0.08
        else:
            bad = [r for r in rows if not r.passed]
            assert bad and max(r.ratio for r in bad) > 25, (launcher, bug, rows)   # measured 33-609
    assert {k[0] for k in results} == {"msrun", "torchrun"}
