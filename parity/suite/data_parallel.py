"""Data-parallel parity: N steps of a 2-rank run (``msrun`` and ``torchrun``) against one process.

``python -m parity --train-steps N --world-size W``. The problem, the global batches (``W * batch`` samples each)
and every regime's reference are made here; each launcher then starts ``W`` ranks of this module's worker
(``python -m parity.suite.data_parallel JOB FRAMEWORK``), which drives the framework's *real trainer backend*, data
parallel exactly as ``python -m ms_transfer.train`` under ``msrun`` / ``python -m torch_reference.train`` under
``torchrun`` run it (``MindSporeBackend``: ``DATA_PARALLEL``, ``gradients_mean=True``; ``TorchBackend``: DDP over
gloo), each rank on its slice of every global batch (``core.distributed.shard_epoch``). Compared:

* **ranks agree**: every rank's parameters after every step, bit for bit (SHA-256 digests); BatchNorm running
  statistics are not part of it, see below;
* **against one process**, with the training-step rule of :mod:`parity.suite.training` (float64 torch reference,
  float32 jittered floor samples): the loss of every step (mean over the ranks), every parameter's update and
  rank 0's BatchNorm statistic updates. The reference is one process on the global batch. With train-mode BN
  (``finetune``, ``partial``) each rank normalises its own slice, in both frameworks' default data parallelism
  (torch's ``SyncBatchNorm`` raises on CPU: "SyncBatchNorm expected input tensor to be on GPU"), so the reference
  does the same: one process runs the model on each rank's slice separately (one backward through the mean of the
  slices' losses: the average of the ranks' gradients) and keeps the statistics slice 0 produced (rank 0's). With
  frozen BN (``fixed_feature``) it is plainly one process with batch ``W * batch``. The report also gives how far
  the plain one-process run is from the per-slice one in the train-BN regimes: the measured effect of per-rank
  BN statistics.

Both frameworks' W-rank runs are compared with the same float64 reference and floor, as single-process runs are.

Injected data-parallel bugs (``--inject``; into *both* launchers' runs, each must fail): ``grad_sum`` (gradients
summed over the ranks, not averaged: MindSpore ``gradients_mean=False``, a DDP comm hook that sums),
``other_shard`` (every rank trains on rank 0's slice), ``bn_synced`` (BatchNorm normalises over the global batch,
what ``SyncBatchNorm`` would do, on this side only: each rank runs the whole global batch).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ms_transfer.core.distributed import detect, launch_command, launcher_env, shard_epoch
from ms_transfer.core.recipe import plan_stages, stage_lrs

from ..engine.report import CheckResult
from ..engine.tolerance import FLOOR_SAMPLES, compare, failed, jitter_fn
from .training import (Batches, fixed_batches, regime_config, torch_training, without_dropout_ms,
                       without_dropout_torch)

#: injected data-parallel bugs (see the module docstring); each runs in the finetune regime (train-mode BN)
DP_BUGS = ("grad_sum", "other_shard", "bn_synced")
LAUNCHERS = ("msrun", "torchrun")
FRAMEWORK = {"msrun": "mindspore", "torchrun": "torch"}
#: regimes whose BatchNorms normalise with batch statistics (the per-slice reference)
TRAIN_BN_REGIMES = ("finetune", "partial")

Case = Tuple[str, Optional[str]]   # (regime, injected bug)


def rank_slices(batch_len: int, world: int) -> List[List[int]]:
    """Every rank's sample indices in one global batch (``core.distributed.shard_epoch`` of an in-order batch)."""
    per_rank = batch_len // world
    return [shard_epoch(np.arange(batch_len), per_rank, r, world)[0] for r in range(world)]


# --- the one-process reference ------------------------------------------------------------------------------

def per_slice_step(world: int) -> Callable:
    """A ``parity.suite.training.torch_training`` step of one process that computes what ``world`` ranks do with
    train-mode BatchNorm: the model runs on each rank's slice separately (each slice's own batch statistics), one
    backward through the mean of the slices' losses (the average of the ranks' gradients), and the running
    statistics are those slice 0 produced (rank 0's)."""
    from torch_reference._torch import torch

    def step(trainer, model, xt, yt) -> float:
        slices = rank_slices(len(yt), world)
        order = torch.from_numpy(np.concatenate(slices))
        stat_names = [k for k in model.state_dict() if k.endswith(("running_mean", "running_var"))]
        rank0_stats: Dict[str, "torch.Tensor"] = {}

        def logits_of():
            outs = []
            for r, idx in enumerate(slices):
                outs.append(model(xt[idx]))
                if r == 0:   # what rank 0 keeps: the statistics of its own slice
                    rank0_stats.update({k: v.detach().clone() for k, v in model.state_dict().items()
                                        if k in stat_names})
            return torch.cat(outs)   # cross-entropy's mean over it = the mean of the (equal-sized) slices' means
        trainer.set_train()
        loss = trainer.step_on(logits_of, yt[order])
        with torch.no_grad():   # after the backward, which needs the statistics the forward saw
            for k, v in model.state_dict().items():
                if k in rank0_stats:
                    v.copy_(rank0_stats[k])
        return loss
    return step


def torch_reference(cfg, state, batches: Batches, num_classes: int, dtype: str, world: int, per_slice: bool):
    """``len(batches)`` steps of ``TorchBackend`` in one process on the global batches (``per_slice``: BatchNorm
    statistics per rank slice, :func:`per_slice_step`); ``parity.suite.training``'s result layout."""
    return torch_training(cfg, state, batches, num_classes, dtype, per_slice_step(world) if per_slice else None)


def regime_reference(cfg, problem, batches: Batches, regime: str, world: int):
    """``(float64 reference, float32 floor samples, plain one-process float64 run or None)`` of one regime."""
    per_slice = regime in TRAIN_BN_REGIMES
    ref = torch_reference(cfg, problem.torch_state, batches, problem.num_classes, "float64", world, per_slice)
    samples = []
    for i in range(FLOOR_SAMPLES):
        jitter = jitter_fn(cfg.seed + 100 + i)
        state = {k: jitter(v) for k, v in problem.torch_state.items()}
        samples.append(torch_reference(cfg, state, [(jitter(x), y) for x, y in batches], problem.num_classes,
                                       "float32", world, per_slice))
    plain = (torch_reference(cfg, problem.torch_state, batches, problem.num_classes, "float64", world, False)
             if per_slice else None)
    return ref, samples, plain


def bn_effect(ref, plain) -> str:
    """How far one process on the whole global batch is from per-rank BatchNorm statistics (relative L2 of the
    parameter updates and of the step losses)."""
    def rel(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
        num = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)
        den = sum(float(np.sum(b[k] ** 2)) for k in b)
        return (num / den) ** 0.5 if den else 0.0
    return (f"per-rank BN vs one process on the global batch: param updates differ by {rel(plain['params'], ref['params']):.2e} "
            f"(relative L2), losses by {rel(plain['losses'], ref['losses']):.2e}")


# --- the ranks ----------------------------------------------------------------------------------------------

def _digest(arrays) -> np.ndarray:
    from ms_transfer.core.loop import parameters_digest
    return parameters_digest(arrays)


def _sum_hook(state, bucket):
    """DDP comm hook of the ``grad_sum`` bug: all-reduce without dividing by the world size."""
    import torch.distributed as tdist
    fut = tdist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def _rank_batches(batches: Batches, rank: int, world: int, inject: Optional[str]) -> Batches:
    out = []
    for x, y in batches:
        if inject == "bn_synced":     # the whole global batch on every rank: SyncBatchNorm's statistics
            idx = np.arange(len(y))
        else:
            idx = np.asarray(rank_slices(len(y), world)[0 if inject == "other_shard" else rank])
        out.append((x[idx], y[idx]))
    return out


def _run_mindspore(cfg, state, batches: Batches, num_classes: int, inject: Optional[str]) -> Dict:
    import mindspore as ms

    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from ms_transfer.mindspore_backend.checkpoint import load_state_into
    from ms_transfer.core import naming
    from ms_transfer.models import build_model

    trainer = MindSporeBackend(cfg)
    trainer.setup(cfg)
    ms.set_auto_parallel_context(gradients_mean=inject != "grad_sum")
    net = without_dropout_ms(build_model(cfg.arch, num_classes, cfg.padding))
    load_state_into(net, state, strict=True)
    trainer.adopt(net)
    stage = plan_stages(cfg)[0]
    trainer.enter_stage(stage, stage_lrs(cfg, stage, len(batches)))
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    losses, digests = [], []
    for x, y in batches:
        losses.append(trainer.train_step(ms.Tensor(x), ms.Tensor(y.astype(np.int32)))[0])
        digests.append(_digest(trainer.parameter_arrays()))
    ms.set_auto_parallel_context(gradients_mean=True)
    updates = {p.name: p.asnumpy() - before[p.name] for p in net.get_parameters()}
    renamed, unknown = naming.rename(updates, cfg.arch, "ms_transfer", "torchvision")
    assert not unknown, unknown
    return {"losses": np.array(losses), "digests": np.array(digests), "updates": renamed}


def _run_torch(cfg, state, batches: Batches, num_classes: int, inject: Optional[str]) -> Dict:
    from torch_reference._torch import torch

    from torch_reference.backend import TorchBackend
    from torch_reference.models import build_model, load_numpy_state

    trainer = TorchBackend(cfg)
    trainer.setup(cfg)
    model = without_dropout_torch(build_model(cfg.arch, num_classes, cfg.padding))
    load_numpy_state(model, state)
    trainer.adopt(model, cfg.arch, cfg.padding)
    stage = plan_stages(cfg)[0]
    trainer.enter_stage(stage, stage_lrs(cfg, stage, len(batches)))
    if inject == "grad_sum":
        (trainer.ddp or trainer.ddp_head).register_comm_hook(None, _sum_hook)
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    losses, digests = [], []
    for x, y in batches:
        losses.append(trainer.train_step(torch.from_numpy(x), torch.from_numpy(y))[0])
        digests.append(_digest(trainer.parameter_arrays()))
    updates = {k: v.detach().numpy() - before[k] for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    return {"losses": np.array(losses), "digests": np.array(digests), "updates": updates}


def worker(job_dir: Path, framework: str) -> None:
    """One rank: every case of the job, results to ``JOB/<framework>_case<k>_rank<r>.npz``."""
    job = json.loads((job_dir / "job.json").read_text())
    arrays = np.load(job_dir / "arrays.npz")
    dist = detect()
    if not dist.enabled:
        raise SystemExit("parity.suite.data_parallel's worker runs under msrun or torchrun (python -m parity "
                         "--world-size N starts it)")
    prefix = "m/" if framework == "mindspore" else "t/"
    state = {k[2:]: arrays[k] for k in arrays.files if k.startswith(prefix)}
    batches = [(arrays[f"x{i}"], arrays[f"y{i}"]) for i in range(job["steps"])]
    run = _run_mindspore if framework == "mindspore" else _run_torch
    for k, (regime, inject) in enumerate(job["cases"]):
        cfg = regime_config(regime, job["arch"], job["batch"], job["image_size"], job["seed"], job["padding"])
        cfg.mode = job["mode"]
        result = run(cfg, state, _rank_batches(batches, dist.rank, dist.world_size, inject), job["num_classes"],
                     inject)
        flat = {"losses": result["losses"], "digests": result["digests"],
                **{f"u/{n}": v for n, v in result["updates"].items()}}
        np.savez(job_dir / f"{framework}_case{k}_rank{dist.rank}.npz", **flat)
        print(f"[rank {dist.rank}] {framework} {regime}{' + ' + inject if inject else ''}: done", flush=True)


# --- launching ----------------------------------------------------------------------------------------------

def _launch(launcher: str, world: int, job_dir: Path, log: Callable[[str], None]) -> Optional[str]:
    """Run the job's ranks under ``launcher``; ``None`` on success, else the failure (with the log's tail)."""
    cmd = launch_command(launcher, world, ["parity.suite.data_parallel", str(job_dir), FRAMEWORK[launcher]],
                         job_dir / f"{launcher}_logs")
    log(f"{launcher}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, env=launcher_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800)
    (job_dir / f"{launcher}.out").write_text(proc.stdout)
    if proc.returncode == 0:
        return None
    # the first rank error (a worker's own traceback, in msrun's logs or torchrun's output), not the launcher's
    text = proc.stdout + "".join(p.read_text(errors="replace") for p in sorted((job_dir / f"{launcher}_logs").glob("worker_*.log")))
    errors = [line.strip() for line in text.splitlines()
              if line.strip() and "WARNING" not in line and ("Error" in line or "error:" in line)
              and "Distributed job exited" not in line]
    return (f"{launcher} exited with {proc.returncode}: {errors[0][:300] if errors else 'see the log'} "
            f"(output and logs kept in {job_dir})")


# --- the comparison -----------------------------------------------------------------------------------------

def _ranks_row(label: str, digests: List[np.ndarray]) -> CheckResult:
    steps = len(digests[0])
    differ = [(r, s) for r in range(1, len(digests)) for s in range(steps)
              if not np.array_equal(digests[r][s], digests[0][s])]
    if differ:
        r, s = differ[0]
        return failed(label, f"rank {r} differs from rank 0 after step {s + 1} ({len(differ)} rank-steps differ)")
    return CheckResult(label, 0.0, 0.0, 0.0, 0.0, 0.0, True, f"{len(digests)} ranks x {steps} steps bit-identical")


def _rows(launcher: str, regime: str, inject: Optional[str], job_dir: Path, k: int, world: int, ref, samples
          ) -> List[CheckResult]:
    framework = FRAMEWORK[launcher]
    tag = f"{launcher} x{world} {regime}" + (f" [{inject}]" if inject else "")
    try:
        ranks = [np.load(job_dir / f"{framework}_case{k}_rank{r}.npz") for r in range(world)]
    except OSError as exc:
        return [failed(f"{tag}: ranks", f"no result: {exc}")]
    rows = [_ranks_row(f"{tag}: ranks agree", [r["digests"] for r in ranks])]
    updates = {n[2:]: ranks[0][n] for n in ranks[0].files if n.startswith("u/")}
    port = {"losses": {"": np.mean([r["losses"] for r in ranks], axis=0)},
            "params": {n: updates[n] for n in ref["params"]},
            "stats": {n: updates[n] for n in ref["stats"]}}
    for key, what in (("losses", "loss, every step"), ("params", "param updates"), ("stats", "BN stat updates")):
        if ref[key]:
            rows.append(compare(f"{tag}: {what}", port[key], ref[key], [s[key] for s in samples]))
    return rows


def run_data_parallel(cfg, cases: Sequence[Case], launchers: Sequence[str] = LAUNCHERS, world: int = 2,
                      log: Callable[[str], None] = lambda s: None, keep: Optional[Path] = None
                      ) -> Dict[Tuple[str, str, Optional[str]], List[CheckResult]]:
    """Every ``(regime, injected bug)`` case under every launcher against its one-process reference; returns
    ``{(launcher, regime, inject): rows}`` and logs the BN effect line of the train-BN regimes. ``cfg``: a
    ``parity.ParityConfig`` (``batch`` is per rank); ``keep``: a directory for the job files (default: temporary)."""
    from .problems import make_problem

    global_batch = world * cfg.batch
    problem = make_problem(cfg.arch, cfg.num_classes, global_batch, cfg.image_size, cfg.seed, cfg.padding)
    batches = fixed_batches(problem, cfg.train_steps, cfg.seed)
    job_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="parity-dp-"))
    job_dir.mkdir(parents=True, exist_ok=True)
    arrays = {**{f"t/{k}": v for k, v in problem.torch_state.items()},
              **{f"m/{k}": v for k, v in problem.ms_state.items()},
              **{f"x{i}": x for i, (x, _) in enumerate(batches)}, **{f"y{i}": y for i, (_, y) in enumerate(batches)}}
    np.savez(job_dir / "arrays.npz", **arrays)
    job = {"arch": cfg.arch, "num_classes": problem.num_classes, "batch": cfg.batch, "image_size": cfg.image_size,
           "seed": cfg.seed, "padding": cfg.padding, "mode": cfg.mode, "steps": cfg.train_steps,
           "cases": [list(c) for c in cases]}
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))
    references = {}
    for regime in dict.fromkeys(r for r, _ in cases):
        t = time.perf_counter()
        rcfg = regime_config(regime, cfg.arch, global_batch, cfg.image_size, cfg.seed, cfg.padding)
        references[regime] = regime_reference(rcfg, problem, batches, regime, world)
        if references[regime][2] is not None:
            log(f"{regime}: {bn_effect(references[regime][0], references[regime][2])}")
        log(f"{regime}: one-process reference and {FLOOR_SAMPLES} floor samples in {time.perf_counter() - t:.1f} s")
    results = {}
    for launcher in launchers:
        t = time.perf_counter()
        error = _launch(launcher, world, job_dir, log)
        log(f"{launcher}: {len(cases)} case(s) on {world} ranks in {time.perf_counter() - t:.1f} s")
        for k, (regime, inject) in enumerate(cases):
            ref, samples, _ = references[regime]
            rows = _rows(launcher, regime, inject, job_dir, k, world, ref, samples)
            if error and all(r.passed for r in rows):
                rows.append(failed(f"{launcher} x{world} {regime}: launch", error))
            results[(launcher, regime, inject)] = rows
    passed = all(r.passed for rows in results.values() for r in rows)
    if not keep and (passed or any(k[2] for k in results)):   # a failing clean run keeps its logs for the user
        shutil.rmtree(job_dir, ignore_errors=True)
    return results


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
