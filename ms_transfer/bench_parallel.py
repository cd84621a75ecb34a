"""``python -m ms_transfer.bench --data-parallel``: one process vs ``W`` ranks (``msrun`` / ``torchrun``), both
frameworks, on this machine, side by side.

Each engine trains the same global batch (``W x batch``): one process on the whole batch, or ``W`` ranks under the
framework's launcher on ``batch`` each, through the trainers' own backends (``MindSporeBackend`` with
``DATA_PARALLEL``, ``TorchBackend`` with DDP), the finetune regime. Reported: global images/s, the ratio to the
same framework's single process, and the per-step communication cost: an all-reduce of a buffer as large as the
gradients (every parameter), timed alone on the ranks (MindSpore ``ops.AllReduce`` over mccl, torch
``all_reduce`` over gloo). On a 2-core machine the ranks share the cores the single process uses, so no speed-up
can show: the numbers measure the overhead.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

#: engine -> (framework, launcher or "" for one process)
ENGINES = {"torch x1": ("torch", ""), "torch x2 (torchrun)": ("torch", "torchrun"),
           "mindspore x1": ("mindspore", ""), "mindspore x2 (msrun)": ("mindspore", "msrun")}


def _config(arch: str, image_size: int, batch: int, mode: str):
    from .core.config import TrainConfig
    return TrainConfig(arch=arch, image_size=image_size, batch_size=batch, epochs=1, pretrained=None,
                       strategy="finetune", optimizer="momentum", lr=1e-3, schedule="constant",
                       mode=mode, compile_cache="off").validate(source="bench")   # first step = compile


def worker(framework: str, spec: Dict) -> None:
    """One process or one rank: time ``steps`` train steps of the per-process batch, and (ranks) an all-reduce
    of the gradients' size; rank 0 writes ``spec["out"]``."""
    import numpy as np

    from .core.archs import input_spec
    from .core.distributed import detect
    from .core.recipe import plan_stages, stage_lrs

    dist = detect()
    world = dist.world_size
    batch = spec["batch"] if dist.enabled else spec["batch"] * spec["world"]
    cfg = _config(spec["arch"], spec["image_size"], batch, spec["mode"])
    rng = np.random.RandomState(dist.rank)
    channels = input_spec(spec["arch"])[0]   # the seeds' networks take one channel
    x = rng.standard_normal((batch, channels, spec["image_size"], spec["image_size"])).astype(np.float32)
    y = rng.randint(0, 10, size=batch)
    if framework == "mindspore":
        import mindspore as ms
        from .mindspore_backend.backend import MindSporeBackend
        trainer = MindSporeBackend(cfg)
        trainer.setup(cfg)
        trainer.build(cfg.arch, 10, "torch")
        x, y = ms.Tensor(x), ms.Tensor(y.astype(np.int32))
        n_params = sum(int(np.prod(p.shape)) for p in trainer.model.get_parameters())

        def all_reduce(buffer):
            from mindspore import ops
            return float(ops.AllReduce()(buffer)[0].asnumpy())
        buffer = ms.Tensor(np.ones(n_params, np.float32))
    else:
        from torch_reference._torch import torch
        from torch_reference.backend import TorchBackend
        trainer = TorchBackend(cfg)
        trainer.setup(cfg)
        trainer.build(cfg.arch, 10, "torch")
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        n_params = sum(p.numel() for p in trainer.model.parameters())

        def all_reduce(buffer):
            torch.distributed.all_reduce(buffer)
            return float(buffer[0])
        buffer = torch.ones(n_params)
    stage = plan_stages(cfg)[0]
    trainer.enter_stage(stage, stage_lrs(cfg, stage, spec["steps"] + 1))
    start = time.perf_counter()
    trainer.train_step(x, y)
    first = time.perf_counter() - start
    times: List[float] = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        trainer.train_step(x, y)
        times.append(time.perf_counter() - start)
    comm = []
    if dist.enabled:
        for _ in range(6):
            trainer.barrier()
            start = time.perf_counter()
            all_reduce(buffer)
            comm.append(time.perf_counter() - start)
    step = statistics.median(times)
    if dist.is_main:
        Path(spec["out"]).write_text(json.dumps({
            "images_per_s": batch * world / step, "step_s": step, "first_step_s": first, "world": world,
            "allreduce_s": statistics.median(comm[1:]) if comm else 0.0, "grad_mb": n_params * 4 / 1e6}))


def run(arch: str, image_size: int, batch: int, steps: int, world: int = 2, mode: str = "graph",
        log=print) -> Dict[str, Dict]:
    """Every engine of :data:`ENGINES` (``world`` ranks) in its own launch; ``{engine: result}``."""
    from .core.distributed import launch_command, launcher_env

    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        for engine, (framework, launcher) in ENGINES.items():
            out = Path(tmp) / f"{len(results)}.json"
            spec = {"arch": arch, "image_size": image_size, "batch": batch, "steps": steps, "world": world,
                    "mode": mode, "out": str(out)}
            args = ["ms_transfer.bench_parallel", framework, json.dumps(spec)]
            cmd = launch_command(launcher, world, args, Path(tmp) / "logs") if launcher else \
                [sys.executable, "-m", *args]
            log(f"  {engine} ...")
            proc = subprocess.run(cmd, env=launcher_env(), capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0 or not out.exists():
                tail = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line][-1:]
                results[engine] = {"error": f"exit {proc.returncode}: {tail[0][:200] if tail else 'no result'}"}
                continue
            results[engine] = json.loads(out.read_text())
    return results


def format_results(results: Dict[str, Dict], batch: int, world: int) -> str:
    lines = [f"Data parallel: global batch {world * batch} (one process) = {world} ranks x {batch}",
             f"{'engine':<22} {'img/s':>8} {'vs x1':>6} {'step ms':>8} {'first step s':>12} {'all-reduce ms':>14}"]
    for engine, r in results.items():
        if "error" in r:
            lines.append(f"{engine:<22} failed: {r['error']}")
            continue
        single = results.get(engine.split(" x")[0] + " x1", {})
        ratio = r["images_per_s"] / single["images_per_s"] if single.get("images_per_s") else float("nan")
        comm = f"{r['allreduce_s'] * 1e3:.1f} ({r['grad_mb']:.0f} MB)" if r["world"] > 1 else "-"
        lines.append(f"{engine:<22} {r['images_per_s']:8.1f} {ratio:5.2f}x {r['step_s'] * 1e3:8.1f} "
                     f"{r['first_step_s']:12.1f} {comm:>14}")
    return "\n".join(lines)


if __name__ == "__main__":
    worker(sys.argv[1], json.loads(sys.argv[2]))
