"""``python -m ms_transfer.study --config configs/study_digit_adder.yaml``: transfer vs scratch, both frameworks.

The seeds' headline experiment: for every data fraction, seed and regime (``scratch``, ``transfer_fixed``,
``transfer_finetune``), train one run per framework and record its per-epoch validation accuracy and the test
accuracy of its best validation epoch's checkpoint; then write ``results.json``, ``results.md`` (mean +- std over
seeds, and how far the two frameworks' means are apart in units of that spread) and ``study.png`` (test accuracy vs
data fraction, one line per regime, MindSpore solid and torch dashed).

Every cell is an ordinary training run (``python -m ms_transfer.train`` / ``python -m torch_reference.train`` in a
subprocess, with a config file written next to it), so anything a run can do a cell can do. Same start in both
frameworks: every cell starts from a weight file drawn with numpy (:mod:`ms_transfer.core.init`, per seed), whose
trunk is the pretrained one for the transfer regimes; the data order and the digit pairs follow the seed. The
pretrained network is trained once per study (``pretrain``), by one framework, and used by both.

Resumable: a cell is done when its run directory holds ``test.json``; a killed study run again skips finished cells,
and a half-finished cell is started over (its directory is replaced; nothing else is touched).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml
from tqdm import tqdm

from .core import naming
from .core.arrays import MNIST_CLASSES as SOURCE_CLASSES, SOURCES  # every array source has 10 classes
from .core.archs import task_of
from .core.checkpoint_io import read_weights
from .core.data import SplitScan
from .core.tasks import SUM_CLASSES, VAL_PAIR_SEED, is_pair_task, pair_split
from .core.config import ConfigError, TrainConfig, config_path, load_yaml
from .core.convert import convert_weights, excluded_names, into_arch
from .core.init import save_init
from .core.flags import plain
from .core.log import parse_args
from .core.runlock import RunDirInUse, RunLock
# the cells' checkpoints of both frameworks are read here (neither module loads its framework)
from .mindspore_backend import ckpt_format  # noqa: F401
from torch_reference import pth_format  # noqa: F401

logger = logging.getLogger(__name__)
FRAMEWORKS = {"mindspore": "ms_transfer.train", "torch": "torch_reference.train"}
#: the checkpoint each framework's runs write
CKPT = {"mindspore": "best.ckpt", "torch": "best.pth"}
INITS = ("scratch", "transfer")
#: a regime sweeps at most this many learning rates
MAX_SWEEP = 3
#: the sweep's defaults: the study's first seed and framework, its smallest and largest fraction
SWEEP_DEFAULTS = {"seed": None, "fractions": None, "framework": None}


class StudyError(RuntimeError):
    """A study cannot run (bad study config, a failed cell); the message says which and where its log is."""


@dataclass
class StudyConfig:
    """A study: the training config every cell starts from and what varies."""

    base: str                                   # training config of every cell (shipped name or path)
    pretrain: str                               # training config of the pretrained network (trained once)
    regimes: Dict[str, Dict[str, Any]]          # name -> {"init": scratch|transfer, other training keys}
    fractions: List[float] = field(default_factory=lambda: [0.01, 0.05, 0.5, 1.0])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    frameworks: List[str] = field(default_factory=lambda: list(FRAMEWORKS))
    pretrain_framework: str = "torch"
    epochs: Optional[int] = None                # overrides the base config's epochs
    train: Dict[str, Any] = field(default_factory=dict)   # training keys of every cell, over the base config's
    #: where a regime's list of learning rates (``lr: [a, b, c]``) is swept: one seed, two data fractions, one
    #: framework; the winner (see :meth:`Study.chosen_lr`) trains every cell of that regime
    sweep: Dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/study"
    #: cells trained side by side, each in its own process (the pretraining and the sweep run first, one at a time).
    #: Small cells spend most of their time starting a process and compiling, one core each: on 2 cores, 2 jobs ran
    #: the demo's pretraining and 15 cells 1.43x faster (174 -> 122 s, BENCHMARKS.md)
    jobs: int = 1

    @classmethod
    def load(cls, path: Path) -> "StudyConfig":
        """Read and check a study YAML; unknown keys and bad values raise :class:`ConfigError`."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            cfg = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cfg.check(str(path))

    def check(self, where: str) -> "StudyConfig":
        """Check the values (frameworks, training keys, regimes, sweep, jobs, fractions): after :meth:`load`, and
        again after command-line overrides; :class:`ConfigError` names ``where`` (the file, or the flags)."""
        bad = [f for f in self.frameworks if f not in FRAMEWORKS] + (
            [self.pretrain_framework] if self.pretrain_framework not in FRAMEWORKS else [])
        if bad:
            raise ConfigError(f"{where}: unknown framework(s) {bad}; use {', '.join(FRAMEWORKS)}")
        fields = set(TrainConfig.__dataclass_fields__)
        unknown = sorted(set(self.train) - fields)
        if unknown:
            raise ConfigError(f"{where}: train: unknown training key(s) {unknown}")
        for name, regime in self.regimes.items():
            if regime.get("init") not in INITS:
                raise ConfigError(f"{where}: regime {name!r} needs init: scratch or init: transfer")
            unknown = sorted(set(regime) - fields - {"init"})
            if unknown:
                raise ConfigError(f"{where}: regime {name!r} sets unknown training key(s) {unknown}")
            if regime.get("pretrained_exclude") and regime["init"] != "transfer":
                raise ConfigError(f"{where}: regime {name!r}: pretrained_exclude leaves tensors out of the "
                                  "pretrained trunk, so it needs init: transfer")
            lrs = regime.get("lr")
            if isinstance(lrs, list) and not (1 <= len(lrs) <= MAX_SWEEP and all(float(v) > 0 for v in lrs)):
                raise ConfigError(f"{where}: regime {name!r}: a swept lr is a list of 1 to {MAX_SWEEP} positive "
                                  f"values, got {lrs}")
        unknown = sorted(set(self.sweep) - set(SWEEP_DEFAULTS))
        if unknown:
            raise ConfigError(f"{where}: sweep: unknown key(s) {unknown}; known: {sorted(SWEEP_DEFAULTS)}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ConfigError(f"{where}: jobs must be a whole number >= 1 (cells run side by side), got {self.jobs!r}")
        if not all(0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"{where}: fractions must be in (0, 1], got {self.fractions}")
        return self


@dataclass(frozen=True)
class Cell:
    framework: str
    regime: str
    fraction: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.framework}/{self.regime}/f{self.fraction:g}-s{self.seed}"


class Study:
    """Runs the cells of a :class:`StudyConfig` under ``output_dir`` and tabulates them."""

    def __init__(self, cfg: StudyConfig, out: Optional[Path] = None, python: str = sys.executable,
                 command: Optional[str] = None) -> None:
        self.cfg, self.python, self.command = cfg, python, command
        self._sweeps: Dict[str, Dict[str, Any]] = {}   # regime -> :meth:`sweep`'s result, computed once
        self.out = Path(out or cfg.output_dir)
        self.base = {**load_yaml(config_path(Path(cfg.base))), **cfg.train}
        self.train_cfg = TrainConfig(**self.base).validate(source=cfg.base)
        if self.train_cfg.dataset not in SOURCES:
            raise ConfigError(f"{cfg.base}: a study needs an array dataset (dataset: {', '.join(SOURCES)}): its cells "
                              "are evaluated on the dataset's test split")

    def cells(self) -> List[Cell]:
        c = self.cfg
        return [Cell(fw, regime, fraction, seed) for fraction in c.fractions for seed in c.seeds
                for regime in c.regimes for fw in c.frameworks]

    # --- running -------------------------------------------------------------------------------------------
    def _run(self, framework: str, config: Dict[str, Any], run_dir: Path, what: str) -> None:
        """One training run in a subprocess; its output goes to ``run_dir.log``."""
        if run_dir.exists():  # a half-finished run of an earlier, killed study: start it over
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        config_file = run_dir.parent / f"{run_dir.name}.yaml"  # (not with_suffix: "f0.01-s0" has a dot)
        config_file.write_text(yaml.safe_dump({**config, "output_dir": str(run_dir)}, sort_keys=False))
        log = run_dir.parent / f"{run_dir.name}.log"
        with open(log, "w") as f:
            code = subprocess.call([self.python, "-m", FRAMEWORKS[framework], "--config", str(config_file)],
                                   stdout=f, stderr=subprocess.STDOUT)
        if code != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-8:])
            raise StudyError(f"{what} failed (exit {code}); log: {log}\n{tail}")

    def pretrained(self) -> Path:
        """The pretrained network's checkpoint, trained once by ``pretrain_framework``."""
        run_dir = self.out / "pretrain"
        ckpt = run_dir / CKPT[self.cfg.pretrain_framework]
        if not (run_dir / "test.json").exists():
            logger.info(f"Pretraining {self.cfg.pretrain} ({self.cfg.pretrain_framework}) into {run_dir}")
            config = load_yaml(config_path(Path(self.cfg.pretrain)))
            self._run(self.cfg.pretrain_framework, config, run_dir, f"pretraining ({self.cfg.pretrain})")
        return ckpt

    def init_file(self, init: str, seed: int, arch: Optional[str] = None, exclude: Sequence[str] = ()) -> Path:
        """The numpy-drawn start of every cell of ``seed`` (``transfer``: with the pretrained trunk, but for the
        tensors matching a regime's ``pretrained_exclude`` globs) whose network is ``arch`` (default: the base
        config's; a regime may set another, e.g. a different head)."""
        arch = arch or self.train_cfg.arch
        variant = "" if arch == self.train_cfg.arch else f"{arch}-"
        if exclude:   # another trunk: its own file, named by the patterns
            variant += "x" + hashlib.sha256(json.dumps(sorted(exclude)).encode()).hexdigest()[:8] + "-"
        path = self.out / "init" / f"{variant}{init}-seed{seed}.safetensors"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        overrides = transfer_trunk(self.pretrained(), arch, exclude) if init == "transfer" else None
        classes = self.train_cfg.dataset_classes or SOURCE_CLASSES
        return save_init(path, arch, len(classes), seed, overrides)

    def cell_config(self, cell: Cell, lr: Optional[float] = None) -> Dict[str, Any]:
        """The training config of ``cell`` (with ``lr``: a sweep cell's)."""
        regime = dict(self.cfg.regimes[cell.regime])
        init = regime.pop("init")
        exclude = regime.pop("pretrained_exclude", [])   # in the start file: those tensors keep their drawn init
        if isinstance(regime.get("lr"), list):
            regime["lr"] = lr if lr is not None else self.chosen_lr(cell.regime)
        start = self.init_file(init, cell.seed, regime.get("arch"), exclude)
        config = {**self.base, **regime, "pretrained": str(start), "pretrained_url": None,
                  "pretrained_exclude": [], "data_fraction": cell.fraction, "seed": cell.seed}
        if self.cfg.epochs:
            config["epochs"] = self.cfg.epochs
        return config

    def run_cell(self, cell: Cell) -> Path:
        run_dir = self.out / "cells" / cell.key
        if (run_dir / "test.json").exists():
            return run_dir
        config = self.cell_config(cell)
        swept = self.sweep_dir(cell, config["lr"])
        if swept is not None and (swept / "test.json").exists():   # the sweep ran this very cell: reuse it
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(swept, run_dir)
            return run_dir
        self._run(cell.framework, config, run_dir, f"cell {cell.key}")
        return run_dir

    # --- the learning-rate sweep ---------------------------------------------------------------------------
    def sweep_plan(self) -> Dict[str, Any]:
        """Seed, the two fractions and the framework of the sweep (``sweep`` in the study config, else the
        first seed, the smallest and largest fraction and the first framework)."""
        c, s = self.cfg, self.cfg.sweep
        return {"seed": s["seed"] if s.get("seed") is not None else c.seeds[0],
                "fractions": sorted(s.get("fractions") or {min(c.fractions), max(c.fractions)}),
                "framework": s.get("framework") or c.frameworks[0]}

    def swept_regimes(self) -> List[str]:
        return [r for r, regime in self.cfg.regimes.items() if isinstance(regime.get("lr"), list)]

    def sweep_dir(self, cell: Cell, lr: float) -> Optional[Path]:
        """The sweep run that trained ``cell`` with ``lr`` (``None`` when the sweep has no such cell)."""
        plan = self.sweep_plan()
        if (cell.regime not in self.swept_regimes() or cell.framework != plan["framework"]
                or cell.seed != plan["seed"] or cell.fraction not in plan["fractions"]):
            return None
        return self.out / "sweep" / cell.regime / f"lr{lr:g}" / f"f{cell.fraction:g}-s{cell.seed}"

    def sweep(self, regime: str) -> Dict[str, Any]:
        """Run (or reuse) the sweep cells of ``regime`` and return every learning rate's best validation accuracy
        per fraction and the chosen one."""
        plan, lrs = self.sweep_plan(), [float(v) for v in self.cfg.regimes[regime]["lr"]]
        best: Dict[str, Dict[str, float]] = {}
        for lr in lrs:
            for fraction in plan["fractions"]:
                cell = Cell(plan["framework"], regime, fraction, plan["seed"])
                run_dir = self.sweep_dir(cell, lr)
                if not (run_dir / "test.json").exists():
                    logger.info(f"Sweeping {regime}: lr {lr:g} at {percent(fraction)} ({plan['framework']}, seed "
                                f"{plan['seed']})")
                    self._run(cell.framework, self.cell_config(cell, lr), run_dir, f"sweep cell {run_dir}")
                rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
                best.setdefault(f"{lr:g}", {})[f"{fraction:g}"] = max(r["val_acc"] for r in rows)
        return {**plan, "lrs": lrs, "best_val_acc": best, "chosen": choose_lr(best, plan["fractions"])}

    def swept(self, regime: str) -> Dict[str, Any]:
        """:meth:`sweep`'s result for ``regime``, run once per study process."""
        if regime not in self._sweeps:
            self._sweeps[regime] = self.sweep(regime)
        return self._sweeps[regime]

    def chosen_lr(self, regime: str) -> float:
        return self.swept(regime)["chosen"]

    def run(self) -> Dict:
        """Run every pending cell (progress bar), then write and return the results. One study process per output
        directory (a second one would start the first one's running cell over): :class:`RunDirInUse` names the
        holder."""
        with RunLock(self.out, "study"):
            return self._run_cells()

    def _run_cells(self) -> Dict:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "study.yaml").write_text(yaml.safe_dump(asdict(self.cfg), sort_keys=False))
        cells = self.cells()
        pending = [c for c in cells if not (self.out / "cells" / c.key / "test.json").exists()]
        logger.info(f"Study {self.out}: {len(cells)} cells, {len(cells) - len(pending)} done, {len(pending)} to run")
        start = time.perf_counter()
        for regime in self.swept_regimes():
            lr = self.chosen_lr(regime)
            logger.info(f"{regime}: learning rate {lr:g} (of {self.cfg.regimes[regime]['lr']}, on validation accuracy)")
        with tqdm(total=len(pending), unit="cell", disable=None if logger.isEnabledFor(logging.INFO) else True) as bar:
            if self.cfg.jobs > 1 and len(pending) > 1:
                self._run_side_by_side(pending, bar)
            else:
                for cell in pending:
                    bar.set_postfix_str(cell.key)
                    self.run_cell(cell)
                    bar.update()
        results = self.collect()
        results["wall_seconds_this_invocation"] = time.perf_counter() - start
        self.write(results)
        return results

    def _run_side_by_side(self, pending: Sequence[Cell], bar: tqdm) -> None:
        """``jobs`` cells at a time, each in its own process. What cells share is made first, one at a time: the
        exported datasets (an export's build folder has one name), the pretrained network and every cell's start.
        The first failure (or an interrupt) stops the queue: the running cells finish and keep their results, the
        rest stay pending for the next run; every failure is logged, the first is raised."""
        from .core.recipe import prepare_data

        exported = set()
        for cell in pending:
            config = TrainConfig(**{**self.cell_config(cell), "pretrained": None}).validate()
            data = (config.dataset, tuple(config.dataset_classes or ()), config.val_fraction, config.data_dir)
            if data not in exported:
                prepare_data(config)
                exported.add(data)
        stop = threading.Event()

        def run(cell: Cell) -> bool:
            if stop.is_set():   # an earlier cell failed: this one stays pending
                return False
            try:
                self.run_cell(cell)
            except BaseException:
                stop.set()
                raise
            return True

        with ThreadPoolExecutor(self.cfg.jobs) as pool:
            futures = {pool.submit(run, cell): cell for cell in pending}
            try:
                for future in as_completed(futures):
                    if future.exception() is None and future.result():
                        bar.set_postfix_str(futures[future].key)
                        bar.update()
            except BaseException:   # e.g. KeyboardInterrupt in this thread: no new cell starts
                stop.set()
                raise
        failed = [(futures[f], f.exception()) for f in futures if f.exception() is not None]
        if failed:
            skipped = sum(1 for f in futures if f.exception() is None and not f.result())
            for cell, exc in failed:
                logger.error(f"cell {cell.key} failed: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
            logger.error(f"{len(failed)} cell(s) failed, {skipped} not started (they run when the study runs again)")
            raise failed[0][1]

    # --- results -------------------------------------------------------------------------------------------
    def collect(self) -> Dict:
        """Per cell: val accuracy per epoch and the test accuracy; per (framework, regime, fraction): mean/std."""
        cells = {}
        for cell in self.cells():
            run_dir = self.out / "cells" / cell.key
            if not (run_dir / "test.json").exists():
                continue
            rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
            test = json.loads((run_dir / "test.json").read_text())
            # val_acc[i] is epoch first_epoch + i: 0 when the run validated its start (head_init: class_means)
            cells[cell.key] = {**asdict(cell), "val_acc": [r["val_acc"] for r in rows],
                               "first_epoch": rows[0].get("epoch", 1), "test_acc": test["test_acc"],
                               "test_epoch": test["epoch"], "train_samples": test.get("train_samples"),
                               "train_seconds": sum(r["train_seconds"] for r in rows)}
        groups: Dict[str, Dict] = {}
        for c in cells.values():
            key = f"{c['framework']}/{c['regime']}/{c['fraction']:g}"
            groups.setdefault(key, {"framework": c["framework"], "regime": c["regime"], "fraction": c["fraction"],
                                    "test_acc": [], "val_curves": [], "train_samples": c["train_samples"],
                                    "first_epoch": c["first_epoch"]})
            groups[key]["test_acc"].append(c["test_acc"])
            groups[key]["val_curves"].append(c["val_acc"])
        for g in groups.values():
            acc = np.array(g["test_acc"])
            g.update(mean=float(acc.mean()), std=float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, n=len(acc))
            curves = g.pop("val_curves")   # early stopping ends cells at different epochs: mean over those still running
            g["val_mean_per_epoch"] = [float(np.mean([c[e] for c in curves if len(c) > e]))
                                       for e in range(max(map(len, curves)))]
        sweeps = {r: self.swept(r) for r in self.swept_regimes()}
        return {"study": asdict(self.cfg), "provenance": provenance(self.command), "sweeps": sweeps,
                "recogniser_sum_acc": self.recogniser_baseline(), "cells": cells, "groups": groups,
                "agreement": agreement(groups)}

    def recogniser_baseline(self) -> Optional[float]:
        """For a digit-adder study: the share of the test pairs whose sum the pretrained recogniser gets right by
        adding its two predictions (the pairs every cell is tested on); ``None`` for other studies or without
        the pretraining run's test predictions."""
        test = self.out / "pretrain" / "test.json"
        if not is_pair_task(task_of(self.train_cfg.arch)) or not test.exists():
            return None
        row = json.loads(test.read_text())
        if "test_predictions" not in row:
            return None
        labels = split_labels(self.base)
        scan = SplitScan(self.out, "test", SUM_CLASSES, list(zip(row["test_predictions"], labels)), [])
        pairs = pair_split(scan, VAL_PAIR_SEED)    # as the cells' test pairs: ((pred_a, pred_b), true sum)
        return float(np.mean([a + b == total for (a, b), total in pairs.samples]))

    def write(self, results: Dict) -> None:
        (self.out / "results.json").write_text(json.dumps(results, indent=1))
        (self.out / "results.md").write_text(markdown_table(results))
        plot_study(results, self.out / "study.png")
        print(markdown_table(results))
        print(f"Results: {self.out / 'results.md'}, {self.out / 'results.json'}, {self.out / 'study.png'}")
        summary = headline(results)
        if summary:
            print(summary)


def publish(out: Path, target: Path) -> None:
    """Copy a study's results (``results.json``, ``results.md``, ``study.png``) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "results.md", "study.png"):
        shutil.copy2(out / name, target / name)
    print(f"Published to {target}")


def split_labels(base: Dict[str, Any], split: str = "test") -> List[int]:
    """The labels of the base config's ``split``, in the order a run evaluates it."""
    from .core.data import scan_split
    from .core.recipe import prepare_data

    root = prepare_data(TrainConfig(**{**base, "pretrained": None}).validate())
    samples, _, _ = scan_split(root, split)
    return [label for _, label in samples]


def choose_lr(best: Dict[str, Dict[str, float]], fractions: Sequence[float]) -> float:
    """The learning rate with the highest mean, over the sweep's fractions, of its best-epoch validation accuracy;
    on a tie the smaller rate (the same rule for every regime; validation data only). Not the smallest fraction
    first: there validation holds a few dozen images, and one image decided between rates (the digit adder's
    frozen branches: 0.100 vs 0.075 of 40 pairs at 1%, then 0.56 vs 0.76 at 100%)."""
    return min((float(lr) for lr in best),
               key=lambda lr: (-float(np.mean([best[f"{lr:g}"][f"{f:g}"] for f in fractions])), lr))


def provenance(command: Optional[str] = None) -> Dict[str, Any]:
    """What produced a study's numbers: the command line, the frameworks' versions and the CPU."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("mindspore", "torch", "torchvision", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"command": command, "versions": versions, "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version()}


def transfer_trunk(ckpt: Path, arch: str, exclude: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The trunk of the pretrained checkpoint ``ckpt`` (any framework) fitted to ``arch``, torchvision names; the
    head is not taken (it starts from the cell's own init), nor the tensors matching an ``exclude`` glob (this
    project's names, as ``pretrained_exclude``; a glob that matches nothing is an error)."""
    weights = read_weights(ckpt)
    state, _, report = convert_weights(weights, "ms_transfer")
    state, _ = into_arch(state, report.arch, arch, ckpt)
    dropped = set(excluded_names(list(state), exclude, ckpt))
    to_torch = naming.name_map(arch, "ms_transfer", "torchvision")
    return {to_torch[k]: v for k, v in state.items() if not k.startswith("fc.") and k not in dropped}


def headline(results: Dict) -> str:
    """One sentence saying what the numbers mean: at the smallest data fraction, the best transfer regime's mean
    test accuracy against the best scratch regime's on the same images (the first framework's); ``""`` without
    both."""
    study, groups = results["study"], results["groups"]
    fw, smallest = study["frameworks"][0], min(study["fractions"])
    by_init = {init: [groups[k] for r, regime in study["regimes"].items()
                      if regime["init"] == init and (k := f"{fw}/{r}/{smallest:g}") in groups] for init in INITS}
    if not by_init["scratch"] or not by_init["transfer"]:
        return ""
    scratch, best = (max(by_init[init], key=lambda g: g["mean"]) for init in ("scratch", "transfer"))
    images = f"{scratch['train_samples']} labelled training images" if scratch.get("train_samples") else \
        f"{smallest:.1%} of the training images"
    # per seed, the same images: how far one draw of the few labels moves the difference
    acc = {(c["regime"], c["seed"]): c["test_acc"] for c in results.get("cells", {}).values()
           if c["framework"] == fw and c["fraction"] == smallest}
    gaps = [acc[(best["regime"], s)] - acc[(scratch["regime"], s)] for s in sorted({s for _, s in acc})
            if (best["regime"], s) in acc and (scratch["regime"], s) in acc]
    spread = f"; per seed {min(gaps):+.3f} to {max(gaps):+.3f}" if len(gaps) > 1 else ""
    return (f"With {images} (the smallest fraction), the network that starts from the pretrained trunk "
            f"({best['regime']}) reaches {best['mean']:.3f} test accuracy where the same network without pretraining "
            f"({scratch['regime']}) on the same images reaches {scratch['mean']:.3f}: "
            f"{best['mean'] - scratch['mean']:+.3f}{spread}, what "
            f"was learnt on the pretraining data is worth on this task ({fw}, mean over {best['n']} seed(s); each "
            "cell tests its best validation epoch).")


def agreement(groups: Dict[str, Dict]) -> List[Dict]:
    """Per (regime, fraction) seen in both frameworks: the difference of their mean test accuracies and the
    pooled spread over seeds (``ratio`` = difference / spread; below ~1: the frameworks agree within the seeds)."""
    rows = []
    for g in groups.values():
        if g["framework"] != "mindspore":
            continue
        other = groups.get(f"torch/{g['regime']}/{g['fraction']:g}")
        if other is None:
            continue
        spread = float(np.sqrt((g["std"] ** 2 + other["std"] ** 2) / 2))
        diff = g["mean"] - other["mean"]
        rows.append({"regime": g["regime"], "fraction": g["fraction"], "mindspore_minus_torch": diff,
                     "spread": spread, "ratio": abs(diff) / spread if spread > 0 else None})
    return rows


def percent(fraction: float) -> str:
    """A data fraction as a percentage with up to 3 significant digits: 0.05 -> ``5%``, 1/390 -> ``0.256%``."""
    return f"{fraction * 100:.3g}%"


def markdown_table(results: Dict) -> str:
    """Test accuracy (mean +- std over seeds) per regime and fraction, one column per framework."""
    groups, study = results["groups"], results["study"]
    lines = ["| regime | data | " + " | ".join(f"{fw} test acc" for fw in study["frameworks"]) + " |",
             "|---|---|" + "---|" * len(study["frameworks"])]
    for regime in study["regimes"]:
        for fraction in study["fractions"]:
            cols = []
            for fw in study["frameworks"]:
                g = groups.get(f"{fw}/{regime}/{fraction:g}")
                cols.append(f"{g['mean']:.3f} ± {g['std']:.3f} (n={g['n']})" if g else "—")
            lines.append(f"| {regime} | {percent(fraction)} | " + " | ".join(cols) + " |")
    agree = results["agreement"]
    if agree:
        line = (f"MindSpore vs torch: mean |difference of the means| "
                f"{np.mean([abs(a['mindspore_minus_torch']) for a in agree]):.3f}")
        spread = [a for a in agree if a["ratio"] is not None]
        if spread:
            worst = max(spread, key=lambda a: a["ratio"])
            line += (f"; largest difference / spread over seeds {worst['ratio']:.2f} ({worst['regime']}, "
                     f"{percent(worst['fraction'])})")
        lines += ["", line + "."]
    if results.get("recogniser_sum_acc") is not None:
        lines += ["", f"The pretrained recogniser, adding its two predictions, gets {results['recogniser_sum_acc']:.3f} "
                      "of the same test pairs right (the bar a digit adder that starts from it can aim at)."]
    for regime, sweep in results.get("sweeps", {}).items():
        tried = ", ".join(f"{lr} ({' / '.join(f'{v:.3f}' for v in acc.values())})"
                          for lr, acc in sweep["best_val_acc"].items())
        lines += ["", f"{regime}: learning rate {sweep['chosen']:g}, chosen on {sweep['framework']} seed "
                      f"{sweep['seed']}'s best validation accuracy at {' / '.join(percent(f) for f in sweep['fractions'])}: {tried}."]
    return "\n".join(lines) + "\n"


def plot_study(results: Dict, path: Path) -> None:
    """Left: test accuracy vs data fraction (log axis), a line per regime and framework (MindSpore solid, torch
    dashed; bars: std over seeds). Right: validation accuracy per epoch at the smallest fraction (mean over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .core.plots import _save

    study, groups = results["study"], results["groups"]
    fig, (ax, ax_epochs) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    smallest, top = min(study["fractions"]), 0.0
    for i, regime in enumerate(study["regimes"]):
        for fw, style in (("mindspore", "-o"), ("torch", "--s")):
            pts = [(f, groups[k]["mean"], groups[k]["std"]) for f in study["fractions"]
                   if (k := f"{fw}/{regime}/{f:g}") in groups]
            kw = dict(color=colours[i % len(colours)], label=f"{regime} ({fw})",
                      alpha=0.9 if fw == "mindspore" else 0.6)
            if pts:
                f, m, s = map(np.array, zip(*pts))
                ax.errorbar(f, m, yerr=s, fmt=style, capsize=3, **kw)
                top = max(top, float((m + s).max()))
            group = groups.get(f"{fw}/{regime}/{smallest:g}", {})
            curve, first = group.get("val_mean_per_epoch"), group.get("first_epoch", 1)
            if curve:
                ax_epochs.plot(range(first, first + len(curve)), curve, style, markersize=3, **kw)
                top = max(top, max(curve))
    ylim = (0, min(1.02, top * 1.15 + 0.02))
    ax.set(xscale="log", xlabel="fraction of the training data", ylabel="test accuracy (mean ± std over seeds)",
           ylim=ylim, title=f"{Path(study['base']).stem}: transfer vs scratch")
    ax_epochs.set(xlabel="epoch", ylabel="validation accuracy (mean over seeds)", ylim=ylim,
                  title=f"per epoch, {percent(smallest)} of the data")
    for a in (ax, ax_epochs):
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.study`` (no side effects: docs/cli.md renders it)."""
    p = argparse.ArgumentParser(prog="python -m ms_transfer.study", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="study YAML (a path, or a shipped config's name)")
    p.add_argument("--output-dir", type=Path, default=None, help="where the study lives (default: its output_dir)")
    p.add_argument("--fractions", type=float, nargs="+", help="override the data fractions")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), help="override the frameworks")
    p.add_argument("--regimes", nargs="+", help="run only these regimes")
    p.add_argument("--epochs", type=int, help="override the epochs of every cell")
    p.add_argument("--jobs", type=int, help="cells trained side by side, each in its own process (default: the "
                   "study's jobs, else 1)")
    p.add_argument("--publish", type=Path, metavar="DIR", help="also copy results.json, results.md and study.png "
                   "into DIR (e.g. docs/studies/fashion_to_mnist: what the docs show)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 when every cell ran, 2 for a bad study config, 1 when a cell failed."""
    p = build_parser()
    args = parse_args(p, argv)
    try:
        cfg = StudyConfig.load(config_path(args.config))
        overrides = [key for key in ("fractions", "seeds", "frameworks", "epochs", "jobs")
                     if getattr(args, key) is not None]
        for key in overrides:
            setattr(cfg, key, getattr(args, key))
        if overrides:
            cfg.check("the command line (" + ", ".join(f"--{key}" for key in overrides) + ")")
        if args.regimes:
            unknown = [r for r in args.regimes if r not in cfg.regimes]
            if unknown:
                raise ConfigError(f"unknown regime(s) {unknown}; the study has {list(cfg.regimes)}")
            cfg.regimes = {r: cfg.regimes[r] for r in args.regimes}
        command = " ".join(["python -m ms_transfer.study"] + [shlex.quote(a) for a in
                                                             (sys.argv[1:] if argv is None else argv)])
        study = Study(cfg, args.output_dir, command=command)
        study.run()
        if args.publish:
            publish(study.out, args.publish)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StudyError, RunDirInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
