"""``python -m ms_transfer.bench --parity``: what ``python -m parity`` costs, per architecture, image size and mode.

Each case runs ``python -m parity --arch A --image-size S --num-classes N --mode M`` in a child process; the child's
whole process tree is sampled for its resident memory (RSS) every :data:`SAMPLE_SECONDS`, as ``.ci/measure.py``
does for CI, so a run's peak counts whatever the parity run starts. Beside each peak the table prints the memory the
comparison cannot do without, :func:`need_bytes`: the model's weights, gradients and optimizer state (momentum) in
both frameworks, float32, plus the torch float64 reference's (issue 22 asks every arch at its CI size within 1.5x of
it). A child that only imports what a parity run imports is sampled first (:func:`imports_rss`): the table also gives
each peak above it against the need. Numbers are reported, never asserted: wall times depend on what else the machine
runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

#: seconds between two RSS samples of a child's process tree
SAMPLE_SECONDS = 0.25
#: bytes per parameter that a comparison must hold at once: weights, gradients and momentum (3 tensors) in MindSpore
#: float32 (12), torch float32 (12) and the torch float64 reference (24)
NEED_BYTES_PER_PARAM = 3 * 4 + 3 * 4 + 3 * 8


@dataclass(frozen=True)
class ParityCase:
    """One ``python -m parity`` run of the table."""

    arch: str
    image_size: int
    num_classes: int
    mode: str   # graph, pynative or both (python -m parity's default: one process, one mode after the other)

    def argv(self) -> List[str]:
        return ["--arch", self.arch, "--image-size", str(self.image_size), "--num-classes", str(self.num_classes),
                "--mode", self.mode]


#: the default table: ResNet18 / ResNet50 at their CI size (64 px, 10 classes: tests/test_parity.py) and at 224 px
#: with 1000 classes (ResNet50 both modes at once too: ``python -m parity``'s default), VGG16 at 224 px in GRAPH mode
#: (``make parity-vgg``'s 224 px run)
DEFAULT_CASES = tuple(
    [ParityCase(arch, 64, 10, mode) for arch in ("resnet18", "resnet50") for mode in ("graph", "pynative")]
    + [ParityCase("resnet18", 224, 1000, mode) for mode in ("graph", "pynative")]
    + [ParityCase("resnet50", 224, 1000, mode) for mode in ("graph", "pynative", "both")]
    + [ParityCase("vgg16", 224, 1000, "graph")])


def tree_rss(pid: int) -> int:
    """Bytes resident in process ``pid`` and all its descendants now (0 once it has ended)."""
    import psutil   # a MindSpore requirement

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_sampled(cmd: Sequence[str]) -> Dict:
    """Run ``cmd`` (output captured); ``{"exit", "seconds", "peak_rss", "stderr_tail"}`` with the peak RSS of its
    process tree in bytes."""
    start = time.monotonic()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(SAMPLE_SECONDS)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    done.set()
    sampler.join()
    return {"exit": proc.returncode, "seconds": time.monotonic() - start, "peak_rss": peak[0],
            "stderr_tail": "\n".join(stderr.strip().splitlines()[-5:])}


def parameter_count(arch: str, num_classes: int) -> int:
    """Parameters of ``arch`` with a ``num_classes`` head (torchvision's model; the port has the same ones)."""
    from torch_reference.models import build_model

    return sum(p.numel() for p in build_model(arch, num_classes).parameters())


def need_bytes(n_params: int) -> int:
    """What a comparison of an ``n_params`` model needs at least (:data:`NEED_BYTES_PER_PARAM` per parameter)."""
    return n_params * NEED_BYTES_PER_PARAM


def run_case(case: ParityCase) -> Dict:
    """One case in a child process: the sampled run, its verdict, and the need beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parity.json"
        run = run_sampled([sys.executable, "-m", "parity", *case.argv(), "--json", str(out)])
        reports = json.loads(out.read_text()) if out.exists() else []
    n_params = parameter_count(case.arch, case.num_classes)
    return {**asdict(case), **run, "passed": run["exit"] == 0 and bool(reports),
            "parity_seconds": [r["seconds"].get("total") for r in reports],
            "params": n_params, "need": need_bytes(n_params)}


#: what every ``python -m parity`` process imports before it builds anything: the frameworks and the comparison
IMPORTS = ("import torch, torchvision, mindspore, ms_transfer.models, torch_reference.models, parity.suite.run, "
           "parity.engine.comparison")


def imports_rss() -> int:
    """Peak RSS of a child that only imports what a parity run imports (:data:`IMPORTS`): the fixed cost inside
    every row's peak, which no comparison can shed (~1.0 GiB here, 0.66 of it torch and torchvision)."""
    return run_sampled([sys.executable, "-c", IMPORTS])["peak_rss"]


def run_parity_bench(cases: Sequence[ParityCase] = DEFAULT_CASES, log: Callable[[str], None] = print) -> List[Dict]:
    """Every case, one child process each, one after the other; each row also has ``imports``, the peak of a
    child that only imports (:func:`imports_rss`, measured once first)."""
    log("parity cost: the imports alone ...")
    fixed = imports_rss()
    log(f"  peak RSS {fixed / 2**30:.2f} GiB")
    rows = []
    for i, case in enumerate(cases, 1):
        log(f"parity cost {i}/{len(cases)}: python -m parity {' '.join(case.argv())} ...")
        row = {**run_case(case), "imports": fixed}
        rows.append(row)
        log(f"  exit {row['exit']}, {row['seconds']:.0f} s, peak RSS {row['peak_rss'] / 2**30:.2f} GiB (need "
            f"{row['need'] / 2**30:.2f} GiB)" + (f":\n{row['stderr_tail']}" if row["exit"] not in (0, 1) else ""))
    return rows


def format_parity_table(rows: Sequence[Dict], cpu: Optional[str] = None) -> str:
    """The "Parity cost" table (Markdown), as BENCHMARKS.md records it; with the rows' ``imports`` (the same for
    every row), a line giving it and a column with the peak above it against the need."""
    gib = 2.0 ** 30
    fixed = rows[0].get("imports") if rows else None
    lines = [f"Parity cost ({cpu})" if cpu else "Parity cost"]
    if fixed is not None:
        lines.append(f"imports alone (torch, torchvision, MindSpore, the comparison): peak RSS {fixed / gib:.2f} GiB")
    extra = " (peak - imports) / need |" if fixed is not None else ""
    lines += ["| arch | px | classes | mode | result | seconds | peak RSS GiB | need GiB | peak / need |" + extra,
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    for r in rows:
        result = "pass" if r["passed"] else ("FAIL" if r["exit"] == 1 else f"error (exit {r['exit']})")
        lines.append(f"| {r['arch']} | {r['image_size']} | {r['num_classes']} | {r['mode']} | {result} | "
                     f"{r['seconds']:.0f} | {r['peak_rss'] / gib:.2f} | {r['need'] / gib:.2f} | "
                     f"{r['peak_rss'] / r['need']:.1f}x |"
                     + (f" {(r['peak_rss'] - fixed) / r['need']:.1f}x |" if extra else ""))
    return "\n".join(lines)
