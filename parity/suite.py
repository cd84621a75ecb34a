"""Run the parity checks: torchvision (float64 reference, float32 floor) vs the MindSpore port."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ms_transfer.context import set_context
from ms_transfer.models import build_model

from .bugs import inject
from .compare import FLOOR_SAMPLES, JITTER, ROUNDING_JITTER, CheckResult, compare, failed
from .engines import MindSporeEngine, TorchEngine
from .sensitivity import Sensitivity, sensitivity
from .setup import Problem, make_problem
from .training import REGIMES, TRAIN_BUGS, check_names, fixed_batches, mindspore_training, regime_config, \
    torch_training

#: check groups, in the order they run and print
CHECKS = ("eval_logits", "train_forward", "grads_train_bn", "grads_eval_bn", "optimizer_step")
#: forward-only groups (their scale statistic is calibrated on rounding samples, see parity/compare.py)
FORWARD_CHECKS = ("eval_logits", "train_forward")


@dataclass
class ParityConfig:
    """Everything that defines one parity run."""

    arch: str = "resnet50"
    padding: str = "torch"   # "same": the MindSpore tutorial's network on both sides
    mode: str = "graph"
    device: str = "CPU"
    batch: int = 2
    image_size: int = 224
    seed: int = 0
    num_classes: int = 1000
    checks: Sequence[str] = CHECKS
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    opt_steps: int = 3       # >1 so that the momentum buffer is exercised
    inject: Optional[str] = None
    train_steps: int = 0     # >0: training-step parity (parity.training) instead of the checks above
    sensitivity: bool = False  # also measure the smallest error each check detects (parity.sensitivity)
    regimes: Sequence[str] = tuple(REGIMES)


@dataclass
class ParityReport:
    """Results of one run, JSON-ready with :meth:`as_dict`."""

    config: ParityConfig
    results: List[CheckResult] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    sensitivity: List[Sensitivity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), "passed": self.passed,
                "results": [r.as_dict() for r in self.results], "seconds": self.seconds,
                "sensitivity": [r.as_dict() for r in self.sensitivity]}


def _jitter_fn(seed: int, amount: float = JITTER) -> Callable[[np.ndarray], np.ndarray]:
    """Scales every float32 array by ``1 + amount * U(-1, 1)`` (other dtypes pass through)."""
    rng = np.random.RandomState(seed)

    def jitter(a: np.ndarray) -> np.ndarray:
        if a.dtype != np.float32:
            return a
        return (a * (1.0 + amount * rng.uniform(-1.0, 1.0, a.shape))).astype(np.float32)
    return jitter


def _jittered(problem: Problem, seed: int, amount: float = JITTER) -> Problem:
    """The same problem with every float32 weight and input scaled by ``1 + amount * U(-1, 1)``."""
    jitter = _jitter_fn(seed, amount)
    state = type(problem.torch_state)((k, jitter(v)) for k, v in problem.torch_state.items())
    return Problem(problem.arch, problem.num_classes, state, problem.ms_state, jitter(problem.x), problem.y)


def _synthetic_grads(problem: Problem, steps: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """Seeded gradients (0.1 x each parameter's RMS) fed identically to both optimizers.

    The optimizer is checked on shared gradients so that its update rule (learning rate, momentum
    convention, which tensors get weight decay) is compared at float32 rounding precision, instead of
    drowning in the ~2% train-mode gradient noise; the gradients themselves have their own checks.
    """
    rng = np.random.RandomState(seed + 3)
    params = [k for k in problem.torch_state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    rms = {k: float(np.sqrt(np.mean(problem.torch_state[k].astype(np.float64) ** 2))) or 1.0 for k in params}
    return [{k: (0.1 * rms[k] * rng.standard_normal(problem.torch_state[k].shape)).astype(np.float32)
             for k in params} for _ in range(steps)]


def run_parity(cfg: ParityConfig, log: Callable[[str], None] = lambda s: None) -> ParityReport:
    """Build both models on shared weights, run the requested checks, compare against the noise floor."""
    unknown = [c for c in cfg.checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    if cfg.inject and (cfg.inject in TRAIN_BUGS) != (cfg.train_steps > 0):
        raise ValueError(f"bug {cfg.inject!r} is a {'training' if cfg.inject in TRAIN_BUGS else 'porting'} bug: "
                         f"{'add' if cfg.inject in TRAIN_BUGS else 'drop'} --train-steps")
    set_context(cfg.mode, cfg.device)
    report = ParityReport(cfg)
    t0 = time.perf_counter()
    problem = make_problem(cfg.arch, cfg.num_classes, cfg.batch, cfg.image_size, cfg.seed, cfg.padding)
    if cfg.train_steps:
        _run_training(cfg, problem, report, log)
        report.seconds["total"] = time.perf_counter() - t0
        return report
    reference = TorchEngine(cfg.arch, cfg.num_classes, problem.torch_state, "float64", cfg.padding)
    floors, rounding = [], []
    for i in range(FLOOR_SAMPLES):
        for engines, amount in ((floors, JITTER), (rounding, ROUNDING_JITTER)):
            p = _jittered(problem, cfg.seed + 100 + i, amount)
            engines.append((TorchEngine(cfg.arch, cfg.num_classes, p.torch_state, "float32", cfg.padding), p.x))
    net = build_model(cfg.arch, cfg.num_classes, cfg.padding)
    ms_state = dict(problem.ms_state)
    if cfg.inject:
        inject(cfg.inject, net, ms_state)
    ms_engine = MindSporeEngine(net, ms_state, cfg.arch)
    report.seconds["setup"] = time.perf_counter() - t0
    y = problem.y
    opt = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step_grads = _synthetic_grads(problem, cfg.opt_steps, cfg.seed)

    runners = {
        "eval_logits": lambda e, x: {"eval logits": e.eval_logits(x)},
        "train_forward": lambda e, x: dict(zip(("train logits", "train loss", "BN running stats"),
                                               e.train_forward(x, y))),
        "grads_train_bn": lambda e, x: {"grads (train-mode BN)": e.grads(x, y, bn_train=True)},
        "grads_eval_bn": lambda e, x: {"grads (eval-mode BN)": e.grads(x, y, bn_train=False)},
        "optimizer_step": lambda e, x: {f"param update, {cfg.opt_steps} steps": e.optimizer_steps(step_grads, **opt)},
    }
    for check in cfg.checks:
        t = time.perf_counter()
        log(f"running {check} ...")
        ref = runners[check](reference, problem.x)
        samples = [runners[check](engine, x) for engine, x in floors]
        # forward checks: the scale statistic's floor from rounding samples (see parity/compare.py)
        scale_samples = [runners[check](engine, x) for engine, x in rounding] if check in FORWARD_CHECKS else samples
        t_ms = time.perf_counter()
        try:
            ms = runners[check](ms_engine, problem.x)
        except (RuntimeError, ValueError, TypeError) as exc:  # a broken port may not even run
            ms = None
            error = f"MindSpore failed: {str(exc).splitlines()[0][:200]}"
        report.seconds[f"{check} (mindspore)"] = time.perf_counter() - t_ms
        for name in ref:
            if ms is None:
                report.results.append(failed(name, error))
            else:
                args = (ms[name], ref[name], [s[name] for s in samples], [s[name] for s in scale_samples])
                report.results.append(compare(name, *args))
                if cfg.sensitivity:
                    report.sensitivity.append(sensitivity(name, *args))
        report.seconds[check] = time.perf_counter() - t
    report.seconds["total"] = time.perf_counter() - t0
    return report


def _run_training(cfg: ParityConfig, problem: Problem, report: ParityReport, log: Callable[[str], None]) -> None:
    """Training-step parity for each regime (see :mod:`parity.training`)."""
    batches = fixed_batches(problem, cfg.train_steps, cfg.seed)
    for regime in cfg.regimes:
        t = time.perf_counter()
        log(f"training {cfg.train_steps} steps: {regime} ...")
        rcfg = regime_config(regime, cfg.arch, cfg.batch, cfg.image_size, cfg.seed, cfg.padding)
        ref = torch_training(rcfg, problem.torch_state, batches, cfg.num_classes, "float64")
        samples = []
        for i in range(FLOOR_SAMPLES):
            jitter = _jitter_fn(cfg.seed + 100 + i)
            state = {k: jitter(v) for k, v in problem.torch_state.items()}
            samples.append(torch_training(rcfg, state, [(jitter(x), y) for x, y in batches], cfg.num_classes,
                                          "float32"))
        t_ms = time.perf_counter()
        try:
            ms = mindspore_training(rcfg, problem.ms_state, batches, cfg.num_classes, cfg.inject)
        except (RuntimeError, ValueError, TypeError) as exc:
            ms, error = None, f"MindSpore failed: {str(exc).splitlines()[0][:200]}"
        report.seconds[f"train {regime} (mindspore)"] = time.perf_counter() - t_ms
        for key, label in check_names(regime, cfg.train_steps).items():
            if ms is None:
                report.results.append(failed(label, error))
            else:
                report.results.append(compare(label, ms[key], ref[key], [s[key] for s in samples]))
        report.seconds[f"train {regime}"] = time.perf_counter() - t
