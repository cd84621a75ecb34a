"""Detection power: the smallest error each check catches, measured on the run at hand.

For every check of a parity run, the port's own arrays are perturbed after the fact and re-compared against the
same reference and float32 samples: a *uniform* scale ``1 + eps`` of every tensor (a loss scale or a mean over
the wrong count left in on one side: every gradient off by the same factor) and a *single-tensor* scale of one
tensor in the middle of the network (a bug confined to one layer). The smallest ``eps`` that makes the check
fail is found by bisection on a log scale between ``EPS_MIN`` and ``EPS_MAX``. ``python -m parity
--sensitivity`` prints the table; the README records it for ResNet18.

The forward checks also get an error *confined to one layer's output* (:class:`parity.engine.torch_side.LayerErrorSide`:
a fixed random direction added to one layer's output, propagated through the rest of the float64 model), reported
as the smallest relative L2 error it causes in the check's arrays that the check detects, next to the unjittered
float32 torch model's own error against float64 -- the physical limit: a check can only be asked to see errors a
few times larger than that (the issue's target: 10x, on the uniform and the one-layer error).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .tolerance import Floor, as_named, compare_to_floor

EPS_MIN, EPS_MAX = 1e-9, 1.0
#: bisection steps on log10(eps): 20 steps narrow the 9-decade interval to ~1e-5 decades (0.002% in eps)
STEPS = 20

Arrays = Dict[str, np.ndarray]


@dataclass
class Sensitivity:
    """Smallest detected relative error of one check (``inf``: not detected up to ``EPS_MAX``)."""

    check: str
    uniform: float          # every tensor scaled by 1 + eps
    single: float           # one tensor scaled by 1 + eps
    single_tensor: str      # which one
    layer: float = float("nan")     # an error in one layer's output: the relative L2 error it causes here
    layer_name: str = ""            # which layer (torch name)
    float32: float = float("nan")   # the unjittered float32 torch model's own relative L2 error

    def as_dict(self) -> dict:
        return asdict(self)


def smallest_detected(fails: Callable[[float], bool]) -> float:
    """Smallest ``eps`` in ``[EPS_MIN, EPS_MAX]`` with ``fails(eps)`` (assumed monotone), else ``inf``."""
    if not fails(EPS_MAX):
        return float("inf")
    if fails(EPS_MIN):
        return EPS_MIN
    lo, hi = np.log10(EPS_MIN), np.log10(EPS_MAX)
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fails(10 ** mid) else (mid, hi)
    return float(10 ** hi)


def sensitivity(check: str, ms, ref, floor: Floor, scale_ref=None, float32=None,
                layer: Optional[Tuple[str, Arrays]] = None) -> Sensitivity:
    """Detection power of ``check`` for this run's port output ``ms`` against ``ref`` and its measured ``floor``
    (see the module docstring; ``scale_ref`` as for :func:`parity.engine.tolerance.compare_to_floor`).
    ``float32``: the unjittered float32 torch model's arrays; ``layer``: ``(name, change of the arrays)`` that an
    error in that layer's output makes (any size: only its direction is used)."""
    ms_d = as_named(ms)
    names = [n for n in as_named(ref) if np.any(as_named(ref)[n])]
    middle = names[len(names) // 2]

    def scaled(eps: float, only: str = "") -> Arrays:
        return {n: (a * (1.0 + eps) if (not only or n == only) else a) for n, a in ms_d.items()}

    def fails(arrays: Arrays) -> bool:
        return not compare_to_floor(check, arrays, ref, floor, details=False, scale_ref=scale_ref).passed

    uniform = smallest_detected(lambda eps: fails(scaled(eps)))
    single = smallest_detected(lambda eps: fails(scaled(eps, middle)))
    result = Sensitivity(check, uniform, single, middle)
    if float32 is not None:
        result.float32 = relative_error(as_named(float32), as_named(ref))
    if layer is not None:
        result.layer_name, change = layer[0], as_named(layer[1])
        size = _norm(change) / _norm(as_named(ref))
        if size > 0:   # scaled so that t adds a relative L2 error of exactly t
            result.layer = smallest_detected(
                lambda t: fails({n: a + (t / size) * change[n] for n, a in ms_d.items()}))
    return result


def relative_error(a: Arrays, ref: Arrays) -> float:
    """Relative L2 distance of ``a`` from ``ref``, all tensors pooled."""
    diff = _norm({n: np.asarray(a[n], np.float64) - r for n, r in ref.items()})
    return diff / _norm(ref) if _norm(ref) > 0 else diff


def _norm(arrays: Arrays) -> float:
    return float(np.sqrt(sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in arrays.values())))


def format_sensitivity(rows: List[Sensitivity]) -> str:
    """Fixed-width table of :class:`Sensitivity` rows."""
    width = max([28] + [len(r.check) for r in rows])
    header = (f"{'check':<{width}} {'uniform eps':>12} {'one-tensor eps':>14} {'one layer':>10} {'float32':>9}"
              "  tensor / layer")
    lines = ["smallest relative error each check detects (scale 1+eps applied to the port's output; one layer: "
             "the relative L2 error an error in one layer's output causes; float32: the float32 torch model's own "
             "error, the physical limit):", header, "-" * len(header)]
    for r in rows:
        where = r.single_tensor or "(the only one)"
        if r.layer_name:
            where += f" / {r.layer_name}"
        lines.append(f"{r.check:<{width}} {r.uniform:>12.2e} {r.single:>14.2e} {_num(r.layer):>10} "
                     f"{_num(r.float32):>9}  {where}")
    return "\n".join(lines)


def _num(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.2e}"

