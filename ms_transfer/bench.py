"""``python -m ms_transfer.bench``: throughput of MindSpore (GRAPH, PYNATIVE) vs torch eager, side by side.

Workloads (images/s, data already in memory so the input pipeline cannot be the bottleneck):

* ``inference``      eval-mode forward, no gradients;
* ``finetune``       full train step (forward, backward, momentum SGD with weight decay), batch-statistics BN;
* ``fixed_feature``  train step with everything frozen but the class layer (``fc``; VGG: ``classifier.6``, the
  cats-vs-dogs regime), the tutorial's way: one train cell over the whole net, frozen BNs in inference mode;
* ``fixed_fast``     MindSpore only: the same freezing, the frozen trunk run as pure inference + a head-only train
  step (``ms_transfer.mindspore_backend.frozen_trunk``), what ``ms_transfer.train`` does for a frozen trunk;
* ``cached_head``    the head's train step on precomputed trunk features (batches of the feature cache), what
  every epoch after the first costs with ``feature_cache: auto`` and a deterministic transform; both frameworks.

Every engine runs in its own subprocess (so peak RSS is per engine and one framework's thread pools never
slow the other), and the engines are interleaved over ``--rounds`` rounds (torch, GRAPH, PYNATIVE, torch, ...)
so that machine-load drift hits all of them alike; the table reports the median over rounds, the ratio to
torch eager from the same run, and the ratio to the machine's compute limit (see :func:`machine_info`).
Also timed: first step (includes GRAPH compilation), ResNet50 checkpoint conversion, the parity suite, and the
MindSpore data pipeline on generated JPEGs (to show it keeps up). Numbers are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .mindspore_backend import onednn   # reads MindSpore's libdnnl without importing MindSpore
from .core.flags import add_batch_size, add_json, plain, write_json
from .core.log import parse_args, progress_to_stderr
from .core.metrics import positive_int
from .core.workers import run_worker
from .core.naming import ALL_ARCHS
from .core.archs import find_arch, input_spec

#: ``torch_avx2``: torch eager under the same AVX2 cap as MindSpore, to separate ISA from framework overhead
ENGINES = ("torch", "torch_avx2", "ms_graph", "ms_pynative")
WORKLOADS = ("inference", "finetune", "fixed_feature", "fixed_fast", "cached_head")
#: fp32 FLOPs per cycle per core with 2 FMA units: 2 units x lanes x 2 (multiply + add); 8 lanes with AVX2,
#: 16 with AVX-512. torch uses AVX-512 where the CPU has it (measured here: forward convs at ~220 GFLOP/s,
#: above the AVX2 peak); MindSpore with oneDNN 3 is capped at AVX2 (ms_transfer/mindspore_backend/onednn.py), its
#: ceiling is lower.
FLOPS_PER_CYCLE_AVX2 = 32
FLOPS_PER_CYCLE_AVX512 = 64


@dataclass
class BenchConfig:
    arch: str = "resnet50"
    image_size: int = 224
    batch: int = 18
    steps: int = 6          # timed steps per workload and round (after one warm-up step)
    rounds: int = 2
    engines: Sequence[str] = ENGINES
    workloads: Sequence[str] = WORKLOADS
    extras: bool = True     # conversion, parity-suite and data-pipeline timings


QUICK = dict(arch="resnet18", image_size=64, batch=8, steps=3, rounds=1, engines=("torch", "ms_graph", "ms_pynative"))


@dataclass
class Measurement:
    engine: str
    workload: str
    images_per_s: List[float] = field(default_factory=list)   # one per round
    first_step_s: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s) if self.images_per_s else float("nan")


def _versions() -> Dict:
    """The installed frameworks and MindSpore's oneDNN with its ISA decision (ms_transfer.mindspore_backend.onednn; read
    without importing MindSpore, which applies the decision in each engine's own process)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("mindspore", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    decision = onednn.decide(onednn.user_isa())
    found["onednn"] = decision.onednn
    found["onednn_isa_cap"] = decision.isa
    found["onednn_decision"] = decision.reason
    return found


def machine_info() -> Dict:
    """Cores available to this process, clock, ISA and the fp32 compute limit ``cores x GHz x FLOPs/cycle``
    (64 with AVX-512, else 32; ``peak_gflops_fp32_avx2`` is MindSpore's ceiling under the AVX2 cap).

    The clock is /proc/cpuinfo's ``cpu MHz`` (the nominal rate a VM reports; turbo is not visible), so the
    limit is an estimate of peak, good for "how far from the hardware" rather than an exact roofline.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    info = onednn.cpu()   # the one /proc/cpuinfo reader
    mhz, model, flags, avx512 = info["mhz"], info["model"] or platform.processor(), info["flags"], info["avx512"]
    per_cycle = FLOPS_PER_CYCLE_AVX512 if avx512 else FLOPS_PER_CYCLE_AVX2
    return {"cores": cores, "cpu_mhz": mhz, "cpu": model, "avx2": " avx2" in flags, "avx512f": avx512,
            **_versions(),
            "peak_gflops_fp32": cores * mhz / 1000.0 * per_cycle,
            "peak_gflops_fp32_avx2": cores * mhz / 1000.0 * FLOPS_PER_CYCLE_AVX2,
            "python": platform.python_version()}


def forward_flops(arch: str, image_size: int) -> float:
    """Forward FLOPs per image (2 x multiply-accumulates of every conv and linear layer; BN/ReLU/add ignored)."""
    from torch_reference._torch import torch

    from torch_reference.models import build_model
    model = build_model(arch, 1000).eval()
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total[0] += 2 * output.numel() * k
        elif isinstance(module, torch.nn.Linear):
            total[0] += 2 * module.in_features * module.out_features
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, input_spec(arch)[0], image_size, image_size))
    for h in hooks:
        h.remove()
    return float(total[0])


# --- workers (one engine per subprocess) -------------------------------------------------------------

def _class_layer(arch: str, scheme: str) -> str:
    """The class layer's module name (``fc``; VGG: ``classifier.6``), the only layer the frozen workloads train."""
    from .core.naming import head_names
    return head_names(scheme, arch)[0].rsplit(".", 1)[0]


def _images(cfg: BenchConfig, rng) -> Any:
    """A batch of standard-normal float32 images (numpy) with the architecture's channel count (3; the seeds' networks 1)."""
    import numpy as np
    shape = (cfg.batch, input_spec(cfg.arch)[0], cfg.image_size, cfg.image_size)
    return rng.standard_normal(shape).astype(np.float32)


def check_arch(values: Dict) -> Optional[str]:
    """Fills in the image size of an architecture that has a fixed one (the seeds' networks: 28 px) and returns
    what is wrong with ``values`` for this bench, or ``None``."""
    arch = values.get("arch", BenchConfig.arch)
    spec = find_arch(arch)
    if spec is not None and spec.input.count != 1:
        return (f"--arch {arch} takes {spec.input.count} images per example; the bench times one-image models "
                "(a ResNet, a VGG, fashion_cnn or digit_cnn)")
    fixed = spec.input.size if spec is not None else None
    if fixed is not None:
        if values.get("image_size", fixed) != fixed:
            return f"--arch {arch} takes {fixed} px images, not --image-size {values['image_size']}; drop the flag"
        values["image_size"] = fixed
    return None


def _timed(step, steps: int) -> Dict[str, float]:
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return {"first_step_s": first, "seconds": time.perf_counter() - t}


def _torch_worker(cfg: BenchConfig) -> Dict[str, Dict[str, float]]:
    import numpy as np
    from torch_reference._torch import torch

    from torch_reference.models import build_model
    rng = np.random.RandomState(0)
    x = torch.from_numpy(_images(cfg, rng))
    y = torch.from_numpy(rng.randint(0, 2, cfg.batch))
    out = {}
    from ms_transfer.core.archs import head_module
    layer = _class_layer(cfg.arch, "torchvision") + "."
    for workload in cfg.workloads:
        if workload == "fixed_fast":
            continue
        torch.manual_seed(0)
        model = build_model(cfg.arch, 2)
        if workload == "cached_head":
            head = getattr(model, head_module(cfg.arch))
            setattr(model, head_module(cfg.arch), torch.nn.Identity())
            with torch.no_grad():
                features = model.eval()(x)
            for n, p in head.named_parameters():   # only the class layer trains, as in fixed_feature
                p.requires_grad_((head_module(cfg.arch) + "." + n).startswith(layer))
            params = [p for p in head.parameters() if p.requires_grad]
            opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
            head.train()

            def step():
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(head(features), y).backward()
                opt.step()
        elif workload == "inference":
            model.eval()

            def step():
                with torch.no_grad():
                    model(x)
        else:
            params = list(model.parameters())
            if workload == "fixed_feature":
                for name, p in model.named_parameters():
                    p.requires_grad_(name.startswith(layer))
                params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
            model.train()
            if workload == "fixed_feature":  # frozen BNs in eval mode, as torch_reference.train does
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.eval()

            def step():
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        out[workload] = _timed(step, cfg.steps)
    return out


def _mindspore_worker(cfg: BenchConfig, mode: str) -> Dict[str, Dict[str, float]]:
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from .mindspore_backend.backend import make_loss
    from .mindspore_backend.context import prepare_onednn, set_context
    from .models import build_model
    from .mindspore_backend.optim import apply_freeze, momentum_sgd
    # the same oneDNN decision as training (probed once per machine and version, then cached), before any kernel
    prepare_onednn(log=progress_to_stderr)
    set_context(mode, "CPU")
    rng = np.random.RandomState(0)
    x = ms.Tensor(_images(cfg, rng))
    y = ms.Tensor(rng.randint(0, 2, cfg.batch).astype(np.int32))
    out = {}
    class_layer = (["*"], [_class_layer(cfg.arch, "ms_transfer") + ".*"])
    for workload in cfg.workloads:
        ms.set_seed(0)
        net = build_model(cfg.arch, num_classes=2)
        if workload == "inference":
            net.set_train(False)

            def step():
                net(x).asnumpy()
        elif workload in ("fixed_fast", "cached_head"):
            from .mindspore_backend.frozen_trunk import FrozenTrunkStep
            apply_freeze(net, *class_layer)
            fast = FrozenTrunkStep(net, momentum_sgd(net.trainable_params(), 1e-3, 0.9, 1e-4), make_loss())
            features = fast.extract(x) if workload == "cached_head" else None

            def step():
                (fast.head_step(features, y) if workload == "cached_head" else fast(x, y)).asnumpy()
        else:
            if workload == "fixed_feature":
                apply_freeze(net, *class_layer)
            train_step = nn.TrainOneStepCell(nn.WithLossCell(net, make_loss()),
                                             momentum_sgd(net.trainable_params(), 1e-3, 0.9, 1e-4))
            train_step.set_train(True)

            def step():
                train_step(x, y).asnumpy()
        out[workload] = _timed(step, cfg.steps)
    return out


def _worker_main(engine: str, cfg_json: str) -> None:
    cfg = BenchConfig(**json.loads(cfg_json))
    if engine == "torch_avx2":  # torch under MindSpore's cap, to separate ISA from framework overhead
        if not onednn.user_isa():
            os.environ.update(onednn.cap_environ("AVX2"))
    elif engine.startswith("ms_"):
        from .mindspore_backend.context import apply_onednn_cap
        apply_onednn_cap()  # what every MindSpore process of this package does (mindspore_backend/context.py)
    # plain "torch" runs at its best: its own oneDNN is faster with AVX-512 and nothing here caps it
    print(f"BENCH_ISA {onednn.user_isa() or 'ALL'}", file=sys.stderr)
    if engine.startswith("torch"):
        result = _torch_worker(cfg)
    else:
        result = _mindspore_worker(cfg, engine.split("_", 1)[1])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("BENCH_RESULT " + json.dumps({"results": result, "peak_rss_mb": peak_mb}), flush=True)


def _run_engine(engine: str, cfg: BenchConfig) -> Dict:
    payload = json.dumps({k: v for k, v in asdict(cfg).items()})
    return run_worker(["ms_transfer.bench", "--worker", engine, "--worker-config", payload], "BENCH_RESULT",
                      f"benchmark worker {engine}")


# --- extras ------------------------------------------------------------------------------------------

def time_conversion() -> float:
    """Seconds to convert a torchvision ResNet50 .pth into a MindSpore .ckpt (read, rename, write)."""
    from torch_reference._torch import torch
    from torch_reference.models import build_model

    from . import convert  # noqa: F401  (the command's module: registers the .pth and .ckpt formats)
    from .core.convert import convert_file
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "resnet50.pth"
        torch.save(build_model("resnet50", 1000).state_dict(), src)
        t = time.perf_counter()
        convert_file(src, Path(tmp) / "resnet50.ckpt")
        return time.perf_counter() - t


def time_parity(quick: bool) -> Dict:
    """Wall time of ``python -m parity`` (quick: ResNet18 at 64 px; full: ResNet50 at 224 px), one mode."""
    args = (["--arch", "resnet18", "--image-size", "64", "--num-classes", "10"] if quick
            else ["--arch", "resnet50"]) + ["--mode", "graph"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "parity", *args], capture_output=True, text=True)
    return {"command": "python -m parity " + " ".join(args), "seconds": time.perf_counter() - t,
            "passed": proc.returncode == 0}


def time_data_pipeline(image_size: int, batch: int, n_images: int = 64) -> Dict:
    """Images/s of the MindSpore train pipeline (decode + RandomResizedCrop + flip + normalise, 2 workers)
    on generated JPEGs, so it can be compared with the train-step throughput."""
    from .mindspore_backend.data import create_dataset
    from .core.demo_data import make_demo_dataset
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_demo_dataset(root, n_train_per_class=n_images // 2, n_val_per_class=2, image_size=max(256, image_size),
                          seed=0)
        dataset, info = create_dataset(root, "train", image_size, batch, train=True, shuffle=True, seed=0,
                                       num_workers=2)
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
        return {"images_per_s": n / (time.perf_counter() - t), "images": n,
                "source_size": max(256, image_size)}


# --- driver ------------------------------------------------------------------------------------------

def run_bench(cfg: BenchConfig, quick: bool = False, log=print) -> Dict:
    machine = machine_info()
    flops = forward_flops(cfg.arch, cfg.image_size)
    measurements: Dict[tuple, Measurement] = {}
    peak_rss: Dict[str, float] = {}
    for r in range(cfg.rounds):
        for engine in cfg.engines:
            log(f"round {r + 1}/{cfg.rounds}: {engine} ...")
            res = _run_engine(engine, cfg)
            peak_rss[engine] = max(peak_rss.get(engine, 0.0), res["peak_rss_mb"])
            for workload, t in res["results"].items():
                m = measurements.setdefault((engine, workload), Measurement(engine, workload))
                m.images_per_s.append(cfg.batch * cfg.steps / t["seconds"])
                m.first_step_s.append(t["first_step_s"])
    report = {"config": asdict(cfg), "machine": machine, "forward_gflop_per_image": flops / 1e9,
              "measurements": [], "peak_rss_mb": peak_rss}
    for (engine, workload), m in measurements.items():
        torch_m = measurements.get(("torch", workload)) or measurements.get(("torch", "fixed_feature"))
        # training costs ~3x the forward (forward + input and weight gradients); a frozen trunk only the forward
        per_image = flops * (3.0 if workload == "finetune" else 1.0)
        limit = machine["peak_gflops_fp32"] * 1e9 / per_image if machine["peak_gflops_fp32"] else float("nan")
        if workload == "cached_head":   # the head's FLOPs only: the whole net's limit does not apply
            limit = float("nan")
        report["measurements"].append({
            "engine": engine, "workload": workload, "images_per_s": m.median, "rounds": m.images_per_s,
            "first_step_s": max(m.first_step_s), "vs_torch": m.median / torch_m.median if torch_m else None,
            "compute_limit_images_per_s": limit, "vs_limit": m.median / limit})
    if cfg.extras:
        log("extras: conversion, parity suite, data pipeline ...")
        report["resnet50_conversion_s"] = time_conversion()
        report["parity"] = time_parity(quick)
        report["data_pipeline"] = time_data_pipeline(cfg.image_size, cfg.batch)
    return report


def format_report(report: Dict) -> str:
    cfg, machine = report["config"], report["machine"]
    lines = [f"{cfg['arch']} | {cfg['image_size']} px | batch {cfg['batch']} | {cfg['steps']} steps x "
             f"{cfg['rounds']} rounds | {machine['cores']} cores @ {machine['cpu_mhz']:.0f} MHz "
             f"(fp32 peak ~{machine['peak_gflops_fp32']:.0f} GFLOP/s, {machine['peak_gflops_fp32_avx2']:.0f} at AVX2) | {report['forward_gflop_per_image']:.2f} "
             "GFLOP/image forward",
             f"{machine.get('cpu')} | MindSpore {machine.get('mindspore')} (oneDNN {machine.get('onednn')}, ISA cap "
             f"{machine.get('onednn_isa_cap') or 'none'}: {machine.get('onednn_decision')}) | torch {machine.get('torch')}",
             f"{'workload':<14} {'engine':<12} {'img/s':>8} {'vs torch':>9} {'limit':>7} {'vs limit':>9} "
             f"{'1st step s':>10}  rounds"]
    for m in sorted(report["measurements"], key=lambda m: (WORKLOADS.index(m["workload"]), m["engine"])):
        vs = f"{m['vs_torch']:.2f}x" if m["vs_torch"] is not None else "-"
        lines.append(f"{m['workload']:<14} {m['engine']:<12} {m['images_per_s']:>8.2f} {vs:>9} "
                     f"{m['compute_limit_images_per_s']:>7.1f} {m['vs_limit']:>8.0%} {m['first_step_s']:>10.2f}  "
                     + " ".join(f"{v:.2f}" for v in m["rounds"]))
    lines.append("peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in report["peak_rss_mb"].items()))
    if "resnet50_conversion_s" in report:
        lines.append(f"ResNet50 .pth -> .ckpt conversion: {report['resnet50_conversion_s']:.2f} s")
        p = report["parity"]
        lines.append(f"parity suite ({p['command']}): {p['seconds']:.1f} s, {'passed' if p['passed'] else 'FAILED'}")
        d = report["data_pipeline"]
        lines.append(f"MindSpore train data pipeline (2 workers, {d['source_size']} px JPEGs): "
                     f"{d['images_per_s']:.1f} img/s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.bench`` (no side effects: docs/cli.md renders it)."""
    p = argparse.ArgumentParser(prog="python -m ms_transfer.bench", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = BenchConfig()
    p.add_argument("--quick", action="store_true", help=f"CI smoke run: {QUICK}, well under a minute")
    p.add_argument("--arch", default=None, choices=ALL_ARCHS, metavar="ARCH",
                   help=f"any architecture of python -m ms_transfer.train --arch (default {d.arch})")
    p.add_argument("--image-size", type=positive_int, default=None, help=f"default {d.image_size}")
    add_batch_size(p, f"batch size (default {d.batch}, the tutorial's)", dest="batch")
    p.add_argument("--steps", type=positive_int, default=None, help=f"timed steps per workload and round (default {d.steps})")
    p.add_argument("--rounds", type=positive_int, default=None, help=f"interleaved rounds (default {d.rounds})")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=None,
                   help=f"default: all of {', '.join(ENGINES)} (--quick: {', '.join(QUICK['engines'])})")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=None, metavar="WORKLOAD",
                   help=f"default: all of {', '.join(WORKLOADS)} (described above)")
    p.add_argument("--no-extras", action="store_true", help="skip conversion / parity / data-pipeline timings")
    add_json(p, "the report")
    p.add_argument("--data-parallel", type=int, default=0, metavar="W",
                   help="instead: one process vs W ranks under msrun and torchrun, both frameworks, the finetune "
                        "step on the same global batch (W x --batch-size), with the all-reduce time per step "
                        "(ms_transfer/bench_parallel.py)")
    p.add_argument("--parity", action="store_true",
                   help="instead: the \"Parity cost\" table, python -m parity per arch, image size and mode in child "
                        "processes: seconds, peak RSS of the process tree and the memory the comparison needs, and the "
                        "peak above that of a child that only imports (ms_transfer/bench_parity.py); --arch / "
                        "--image-size narrow it to the matching cases")
    p.add_argument("--kernels", action="store_true",
                   help="instead: where a small model's MindSpore time goes, a 3x3 convolution at each ResNet18 stage's "
                        "shape and one operator's launch, both frameworks (--image-size, default 64, and "
                        "--batch-size, default 8; ms_transfer/bench_kernels.py)")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = parse_args(p, argv)
    if args.worker:
        _worker_main(args.worker, args.worker_config)
        return 0
    values = dict(QUICK) if args.quick else {}
    for key in ("arch", "image_size", "batch", "steps", "rounds", "engines", "workloads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["extras"] = not args.no_extras
    problem = check_arch(values) if args.data_parallel or not (args.parity or args.kernels) else None
    if problem:   # (--parity and --kernels have their own cases and sizes)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cfg = BenchConfig(**values)
    if args.data_parallel:
        return _data_parallel(cfg, args.data_parallel, args, argv)
    if args.parity:
        return _parity(args)
    if args.kernels:
        return _kernels(args)
    report = run_bench(cfg, quick=args.quick, log=progress_to_stderr)
    report["command"] = "python -m ms_transfer.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(format_report(report))
    write_json(args.json, report)
    return 0


def _data_parallel(cfg: BenchConfig, world: int, args, argv) -> int:
    from . import bench_parallel
    if world < 2:
        print("error: --data-parallel W needs W >= 2 ranks", file=sys.stderr)
        return 2
    machine = machine_info()
    progress_to_stderr(f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; {cfg.arch} at "
                       f"{cfg.image_size} px, MindSpore GRAPH")
    results = bench_parallel.run(cfg.arch, cfg.image_size, cfg.batch, cfg.steps, world,
                                 log=progress_to_stderr)
    report = {"machine": machine, "config": asdict(cfg), "world": world, "data_parallel": results,
              "command": "python -m ms_transfer.bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"{report['command']}\nMachine: {machine.get('cpu')}, {machine.get('cores')} cores\n"
          + bench_parallel.format_results(results, cfg.batch, world))
    write_json(args.json, report)
    return 0 if all("error" not in r for r in results.values()) else 1


def _kernels(args) -> int:
    """``--kernels``: per-convolution and per-operator times of both frameworks (ms_transfer/bench_kernels.py)."""
    from . import bench_kernels
    size, batch = args.image_size or QUICK["image_size"], args.batch or QUICK["batch"]
    results = bench_kernels.run_kernels(size, batch, log=progress_to_stderr)
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, MindSpore {machine.get('mindspore')} (oneDNN "
          f"{machine.get('onednn')}, ISA cap {machine.get('onednn_isa_cap') or 'none'}), torch {machine.get('torch')}\n"
          + bench_kernels.format_kernels(results, size, batch))
    write_json(args.json, {"machine": machine, "image_size": size, "batch": batch, "kernels": results})
    return 0


def _parity(args) -> int:
    """``--parity``: the "Parity cost" table (ms_transfer/bench_parity.py); exit 1 if a parity run did not pass."""
    from . import bench_parity
    cases = [c for c in bench_parity.DEFAULT_CASES if args.arch in (None, c.arch)
             and args.image_size in (None, c.image_size)]
    if not cases:
        print(f"error: no parity case matches --arch {args.arch} --image-size {args.image_size}; the cases: "
              + ", ".join(sorted({f"{c.arch} {c.image_size} px" for c in bench_parity.DEFAULT_CASES})),
              file=sys.stderr)
        return 2
    rows = bench_parity.run_parity_bench(cases, log=progress_to_stderr)
    machine = machine_info()
    print(bench_parity.format_parity_table(rows, f"{machine['cpu']}, {machine['cores']} cores, MindSpore "
                                                 f"{machine.get('mindspore')}, torch {machine.get('torch')}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "parity_cost": rows}, indent=2))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
