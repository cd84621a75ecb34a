"""One run of the model suite (``python -m parity``): torchvision vs this project's MindSpore ResNet / VGG / seed
network, through the engine's any-model API :func:`parity.engine.comparison.compare_models`; ``--train-steps`` runs
both trainers (:mod:`parity.suite.training`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

from ms_transfer.mindspore_backend.context import set_context
from ms_transfer.models import build_model

from ..engine.comparison import CHECKS, CompareOptions, compare_in_modes, compare_models
from ..engine.report import CheckResult, ParityReport
from ..engine.tolerance import FLOOR_SAMPLES, compare, failed, jitter_fn
from .bugs import inject
from .training import TRAIN_BUGS, check_names, fixed_batches, mindspore_training, regime_config, regimes_for, \
    torch_training

if TYPE_CHECKING:
    from .problems import Problem


#: the engine's defaults, which the suite's share
_ENGINE = CompareOptions()


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
    lr: float = _ENGINE.lr
    momentum: float = _ENGINE.momentum
    weight_decay: float = _ENGINE.weight_decay
    opt_steps: int = _ENGINE.opt_steps
    inject: Optional[str] = None
    train_steps: int = 0     # >0: training-step parity (parity.suite.training) instead of the checks above
    sensitivity: bool = False  # also measure the smallest error each check detects (parity.engine.sensitivity)
    localize: Union[bool, str] = False  # True / "on_failure" (the CLI's default): first diverging layer
    localize_mode: str = "pynative"     # the MindSpore mode localisation runs the port in (the CLI: the run's mode)
    regimes: Optional[Sequence[str]] = None   # None: every regime that fits the arch (parity.suite.training)
    dropout: Optional[float] = None  # a VGG's classifier dropout (None: its default 0.5)


def run_parity(cfg: ParityConfig, log: Callable[[str], None] = lambda s: None) -> ParityReport:
    """Build torchvision's model and the MindSpore port on shared weights and compare them with
    :func:`parity.engine.comparison.compare_models` (the suite is one user of the any-model API)."""
    return _run(cfg, None, log)[0]


def run_parity_in_modes(cfg: ParityConfig, modes: Sequence[str], log: Callable[[str], None] = lambda s: None
                        ) -> List[ParityReport]:
    """:func:`run_parity` in each of ``modes`` (``cfg.mode`` and ``cfg.localize_mode`` replaced by each): one report per
    mode, the same as :func:`run_parity` gives in that mode, the torch side computed once for all of them
    (:func:`parity.engine.comparison.compare_in_modes`; ``python -m parity --mode both``). Training-step parity runs
    each mode on its own."""
    if cfg.train_steps:
        return [run_parity(replace(cfg, mode=mode, localize_mode=mode), log) for mode in modes]
    return _run(replace(cfg, mode=modes[0], localize_mode=modes[0]), list(modes), log)


def _run(cfg: ParityConfig, modes: Optional[List[str]], log: Callable[[str], None]) -> List[ParityReport]:
    """:func:`run_parity` (``modes`` None: ``cfg.mode`` alone, localised in ``cfg.localize_mode``) and
    :func:`run_parity_in_modes`."""
    unknown = [c for c in cfg.checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    if cfg.inject and (cfg.inject in TRAIN_BUGS) != (cfg.train_steps > 0):
        raise ValueError(f"bug {cfg.inject!r} is a {'training' if cfg.inject in TRAIN_BUGS else 'porting'} bug: "
                         f"{'add' if cfg.inject in TRAIN_BUGS else 'drop'} --train-steps")
    from .problems import make_problem   # torch: imported only when a comparison runs

    set_context(cfg.mode, cfg.device)
    t0 = time.perf_counter()
    problem = make_problem(cfg.arch, cfg.num_classes, cfg.batch, cfg.image_size, cfg.seed, cfg.padding)
    if cfg.train_steps:
        report = ParityReport(cfg)
        _run_training(cfg, problem, report, log)
        report.seconds["total"] = time.perf_counter() - t0
        return [report]
    torch_model, net = _model_pair(cfg, problem)
    ms_state = dict(problem.ms_state)
    if cfg.inject:
        inject(cfg.inject, net, ms_state)
    options = compare_options(cfg, log).with_overrides(ms_state=ms_state, sensitivity=cfg.sensitivity,
                                                       localize=cfg.localize, localize_mode=cfg.localize_mode)
    if modes is None:
        return [compare_models(torch_model, net, problem.x, problem.y, options)]
    return compare_in_modes(torch_model, net, problem.x, problem.y, modes, options)


def compare_options(cfg: ParityConfig, log: Callable[[str], None]) -> CompareOptions:
    """The engine's options of a suite run (what a bundle of it stores too)."""
    return CompareOptions(checks=cfg.checks, seed=cfg.seed, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, opt_steps=cfg.opt_steps, config=cfg, log=log)


def _model_pair(cfg: ParityConfig, problem: "Problem"):
    """torchvision's model with the problem's weights, and a fresh MindSpore port (weights come from the API)."""
    from torch_reference.models import build_model as build_torch_model, load_numpy_state

    extra = {} if cfg.dropout is None else {"dropout": cfg.dropout}
    torch_model = build_torch_model(cfg.arch, problem.num_classes, cfg.padding, **extra)
    # the model's tensors are the problem's arrays (which the port's state also views): one set of weights for the
    # three, none of which a comparison changes (VGG16: 0.55 GB less for the whole run)
    load_numpy_state(torch_model, problem.torch_state, share=True)
    return torch_model, build_model(cfg.arch, problem.num_classes, cfg.padding, **extra)


def _run_training(cfg: ParityConfig, problem: Problem, report: ParityReport, log: Callable[[str], None]) -> None:
    """Training-step parity for each regime (see :mod:`parity.suite.training`)."""
    for regime in cfg.regimes or regimes_for(cfg.arch):
        t = time.perf_counter()
        log(f"training {cfg.train_steps} steps: {regime} ...")
        reference = training_reference(cfg, problem, regime)
        t_ms = time.perf_counter()
        report.results += training_rows(cfg, problem, reference, cfg.inject)
        report.seconds[f"train {regime} (mindspore)"] = time.perf_counter() - t_ms
        report.seconds[f"train {regime}"] = time.perf_counter() - t


def training_reference(cfg: ParityConfig, problem: Problem, regime: str):
    """One regime's torch side: ``(regime, its config, batches, float64 reference, float32 floor samples)``."""
    batches = fixed_batches(problem, cfg.train_steps, cfg.seed)
    rcfg = regime_config(regime, cfg.arch, cfg.batch, cfg.image_size, cfg.seed, cfg.padding)
    ref = torch_training(rcfg, problem.torch_state, batches, cfg.num_classes, "float64")
    samples = []
    for i in range(FLOOR_SAMPLES):
        jitter = jitter_fn(cfg.seed + 100 + i)
        state = {k: jitter(v) for k, v in problem.torch_state.items()}
        samples.append(torch_training(rcfg, state, [(jitter(x), y) for x, y in batches], cfg.num_classes, "float32"))
    return regime, rcfg, batches, ref, samples


def training_rows(cfg: ParityConfig, problem: Problem, reference, inject: Optional[str] = None) -> List[CheckResult]:
    """The MindSpore trainer (with the training bug ``inject``) against one regime's :func:`training_reference`
    (several ports can share one reference)."""
    regime, rcfg, batches, ref, samples = reference
    try:
        ms, error = mindspore_training(rcfg, problem.ms_state, batches, cfg.num_classes, inject), ""
    except (RuntimeError, ValueError, TypeError) as exc:
        ms, error = None, f"MindSpore failed: {str(exc).splitlines()[0][:200]}"
    rows = []
    for key, label in check_names(regime, cfg.train_steps).items():
        if not ref[key]:   # no BatchNorm (a plain VGG): no statistics to compare
            continue
        rows.append(failed(label, error) if ms is None
                    else compare(label, ms[key], ref[key], [s[key] for s in samples]))
    return rows


def save_suite_reference(cfg: ParityConfig, directory, log: Callable[[str], None] = lambda s: None):
    """``python -m parity --save-reference DIR``: a reference bundle of this suite's problem (see parity.engine.bundle);
    the conv and linear weights are regenerated from the seed by the checker, not stored."""
    from ..engine.bundle import save_reference
    from .problems import make_problem

    set_context("pynative", "CPU")   # nothing MindSpore runs: the cell only names the parameters
    problem = make_problem(cfg.arch, cfg.num_classes, cfg.batch, cfg.image_size, cfg.seed, cfg.padding)
    torch_model, net = _model_pair(cfg, problem)
    return save_reference(directory, torch_model, net, problem.x, problem.y, compare_options(cfg, log),
                          model={"arch": cfg.arch, "num_classes": cfg.num_classes, "padding": cfg.padding},
                          generated=problem.generated)
