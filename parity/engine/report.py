"""What a comparison reports: one :class:`CheckResult` row per compared quantity, the :class:`ParityReport` of a
run (JSON-ready) and the fixed-width table ``python -m parity`` prints. The rule that decides a row is
:mod:`parity.engine.tolerance`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Dict, List

import numpy as np


@dataclass
class CheckResult:
    """One row of the parity table."""

    check: str
    max_abs: float        # max |MindSpore - reference| over all elements
    rel_l2: float         # ||MindSpore - reference|| / ||reference||, all tensors pooled
    floor: float          # same metric for the worst torch float32 sample
    ratio: float          # worst tensor's err_t / effective floor (see module docstring)
    tolerance: float      # the ratio must stay <= this (K)
    passed: bool
    worst: str = ""       # tensor with the largest ratio
    scale: float = float("nan")        # median over tensors of the least-squares relative scale error
    scale_floor: float = float("nan")  # the same for the worst float32 sample
    scale_ratio: float = float("nan")  # |scale| / (scale_floor + ABS_TERM / K); must stay <= K
    cosine: float = float("nan")       # cosine similarity of the worst tensor (1 = same direction)
    allclose: float = float("nan")     # share of elements within allclose(rtol=atol=1e-4), tensors pooled

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParityReport:
    """Results of one comparison, JSON-ready with :meth:`as_dict`. ``config`` describes the run (a dataclass or
    a dict), ``names`` how the two models' tensors were matched, ``localization`` where a failing port diverges
    (``localization_error``: why it could not be found)."""

    config: Any = None
    results: List[CheckResult] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    sensitivity: List[Any] = field(default_factory=list)
    names: Dict[str, Any] = field(default_factory=dict)
    localization: List[Any] = field(default_factory=list)
    localization_error: str = ""   # localisation stopped (a diagnosis after the verdict; the verdict stands)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict:
        config = asdict(self.config) if is_dataclass(self.config) else self.config
        return {"config": config, "passed": self.passed, "results": [r.as_dict() for r in self.results],
                "seconds": self.seconds, "names": self.names,
                "sensitivity": [r.as_dict() for r in self.sensitivity],
                "localization": [r.as_dict() for r in self.localization],
                "localization_error": self.localization_error}


def format_table(results: List[CheckResult]) -> str:
    """Fixed-width table: check, max abs error, relative L2, floor, ratio, scale error and its ratio, cosine of
    the worst tensor, allclose(1e-4) share, pass/fail."""
    width = max([28] + [len(r.check) for r in results])
    header = (f"{'check':<{width}} {'max abs err':>11} {'rel L2 err':>10} {'noise floor':>11} {'ratio':>8} "
              f"{'scale err':>10} {'s.ratio':>8} {'cosine':>10} {'allclose':>8}  result")
    lines = [header, "-" * len(header)]
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        worst = f"  (worst: {r.worst})" if r.worst else ""
        lines.append(f"{r.check:<{width}} {_cell(r.max_abs, '11.3e')} {_cell(r.rel_l2, '10.3e')} "
                     f"{_cell(r.floor, '11.3e')} {_cell(r.ratio, '8.2f')} {_cell(r.scale, '10.2e')} "
                     f"{_cell(r.scale_ratio, '8.2f')} {_cell(r.cosine, '10.7f')} {_cell(r.allclose, '8.2%')}  "
                     f"{verdict}{worst}")
    return "\n".join(lines)


def _cell(value: float, spec: str) -> str:
    """One number of the table; a dash where a row has no such number (NaN: the reported-only columns of bundle
    checks, the dropout row's relative error), an infinite error stays visible as ``inf``."""
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if np.isnan(value) else f"{value:>{spec}}"
