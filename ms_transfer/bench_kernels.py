"""``python -m ms_transfer.bench --kernels``: where a small model's MindSpore time goes, kernel by kernel.

The small-model rows of the bench (ResNet18 at 64 px, batch 8) are below torch eager. This separates the two causes
that are not this package's code: the convolution kernel itself (a chain of identical 3x3 convolutions at each
ResNet stage's shape, so that one launch carries many kernels) and the fixed cost of one operator in a compiled
graph (a chain of ReLUs on a small tensor). Each framework runs in its own child process, as the rest of the bench;
every chain is one GRAPH-mode cell (MindSpore) or one eager ``nn.Sequential`` (torch) timed over
:data:`REPEATS` calls after :data:`WARMUP`. Numbers are reported, never asserted.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Callable, Dict, List, Tuple

from .core.workers import run_worker

#: calls timed per chain, after WARMUP untimed ones (the first compiles the MindSpore graph)
REPEATS, WARMUP = 20, 3
#: convolutions per chain (one launch): per-launch costs spread over them
CHAIN = 10
#: operators in the launch-overhead chain
OPS_CHAIN = 50


def stage_shapes(image_size: int) -> List[Tuple[int, int]]:
    """``(channels, side)`` of the 3x3 convolutions of ResNet18/34's four stages at ``image_size`` px (the stem and
    max pool divide by 4, every later stage by 2)."""
    return [(64 * 2 ** i, max(1, image_size // (4 * 2 ** i))) for i in range(4)]


def _time(call: Callable[[], object]) -> float:
    for _ in range(WARMUP):
        call()
    t = time.perf_counter()
    for _ in range(REPEATS):
        call()
    return (time.perf_counter() - t) / REPEATS


def _torch_worker(image_size: int, batch: int) -> Dict:
    from torch_reference._torch import torch
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    out = {"conv": [], "op_ms": None}
    for c, side in stage_shapes(image_size):
        net = torch.nn.Sequential(*[torch.nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(CHAIN)]).eval()
        x = torch.rand(batch, c, side, side)
        out["conv"].append({"channels": c, "side": side, "ms": 1e3 * _time(lambda: net(x)) / CHAIN})
    relus = torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(OPS_CHAIN)])
    x = torch.rand(batch, 64, 16, 16)
    out["op_ms"] = 1e3 * _time(lambda: relus(x)) / OPS_CHAIN
    return out


def _mindspore_worker(image_size: int, batch: int) -> Dict:
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from .core.log import progress_to_stderr
    from .mindspore_backend.context import prepare_onednn, set_context
    prepare_onednn(log=progress_to_stderr)   # the oneDNN decision training uses
    set_context("graph", "CPU")
    ms.set_seed(0)
    rng = np.random.RandomState(0)
    out = {"conv": [], "op_ms": None}
    for c, side in stage_shapes(image_size):
        net = nn.SequentialCell([nn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False)
                                 for _ in range(CHAIN)]).set_train(False)
        x = ms.Tensor(rng.rand(batch, c, side, side).astype(np.float32))
        out["conv"].append({"channels": c, "side": side, "ms": 1e3 * _time(lambda: net(x).asnumpy()) / CHAIN})
    relus = nn.SequentialCell([nn.ReLU() for _ in range(OPS_CHAIN)]).set_train(False)
    x = ms.Tensor(rng.rand(batch, 64, 16, 16).astype(np.float32))
    out["op_ms"] = 1e3 * _time(lambda: relus(x).asnumpy()) / OPS_CHAIN
    return out


def run_kernels(image_size: int, batch: int, log: Callable[[str], None] = print) -> Dict:
    """Both frameworks' per-convolution and per-operator times (milliseconds), each from its own child process."""
    results = {}
    for engine in ("torch", "mindspore"):
        log(f"kernels: {engine} ...")
        results[engine] = run_worker(["ms_transfer.bench_kernels", engine, str(image_size), str(batch)], "KERNELS",
                                     f"kernel benchmark worker {engine}")
    return results


def format_kernels(results: Dict, image_size: int, batch: int) -> str:
    t, m = results["torch"], results["mindspore"]
    lines = [f"3x3 convolutions at ResNet18's stage shapes ({image_size} px input, batch {batch}), "
             f"{CHAIN} per launch; ms per convolution",
             f"{'stage shape':<16} {'torch':>8} {'MindSpore':>10} {'MS / torch':>11} {'MS GFLOP/s':>11}"]
    for a, b in zip(t["conv"], m["conv"]):
        flops = 2 * batch * b["channels"] ** 2 * 9 * b["side"] ** 2
        lines.append(f"{b['channels']:>4} x {b['side']:>2} x {b['side']:<2}    {a['ms']:>8.3f} {b['ms']:>10.3f} "
                     f"{b['ms'] / a['ms']:>10.2f}x {flops / b['ms'] / 1e6:>11.1f}")
    lines.append(f"one operator in a launch (ReLU on {batch}x64x16x16, {OPS_CHAIN} per launch): torch "
                 f"{t['op_ms']:.3f} ms, MindSpore {m['op_ms']:.3f} ms ({m['op_ms'] / t['op_ms']:.1f}x)")
    return "\n".join(lines)


if __name__ == "__main__":
    engine, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if engine == "mindspore":
        from .mindspore_backend.context import apply_onednn_cap
        apply_onednn_cap()   # before MindSpore loads, as every MindSpore process of this package
        result = _mindspore_worker(size, n)
    else:
        result = _torch_worker(size, n)
    print("KERNELS " + json.dumps(result), flush=True)
