"""The dropout check: each dropout layer of the port, run alone in train mode, against torch's definition.

The numerical checks of :mod:`parity.engine.comparison` run with dropout as the identity (``DROPOUT_NOTE``):
the frameworks draw different random masks, so an active dropout would put O(1) noise in both the port and the
float32 floor and hide every bug. What that leaves unchecked -- the drop probability and the ``1 / (1 - p)``
scaling of the kept elements -- is checked here, statistically, layer by layer:

* the k-th dropout cell of the port (``mindspore.nn.Dropout``, in ``cells_and_names`` order) is paired with the
  k-th dropout of the torch model (``named_modules`` order; a recurrent module's ``dropout=`` counts, see
  :func:`torch_dropout_ps`); different counts fail the check;
* each port cell runs in train mode on ``SAMPLES`` = 2^20 ones: its drop rate ``r`` (share of zeros) must lie
  within ``SIGMAS`` = 6 binomial standard deviations ``sqrt(p (1 - p) / n)`` of torch's ``p`` (2^20 draws:
  sd <= 4.9e-4, so 6 sd <= 2.9e-3). Measured on MindSpore 2.10 CPU, 40 runs each at p = 0.5 and 0.2: the rates'
  z-scores spread with sd 1.28 and 1.13 (1 for exact Bernoulli draws), largest |z| 2.95; 6 binomial sd are >= 4.7
  of the measured spread (false alarm per layer ~3e-6). Every kept element must
  equal ``1 / (1 - p)`` to within ``K`` float32 ulps (both frameworks compute ``x * (1 / (1 - p))`` or
  ``x / (1 - p)`` in float32: at most one rounding apart).

The classic MindSpore mistake, ``nn.Dropout(0.2)`` meaning ``keep_prob=0.2`` (its deprecated first argument)
where torch's ``nn.Dropout(0.2)`` drops 20%, gives ``r = 0.8`` and kept values 5 instead of 1.25: a ratio of
~1500 sd. At ``p = 0.5`` the two readings coincide and there is nothing to detect.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .report import CheckResult
from .tolerance import FP32_UNIT_ROUNDOFF, K, failed

SAMPLES = 1 << 20
SIGMAS = 6.0
LABEL = "dropout (train mode)"
_ULP = 2 * FP32_UNIT_ROUNDOFF   # float32 spacing at 1.0


def torch_dropout_ps(module) -> List[Tuple[str, float]]:
    """``(name, p)`` of every torch dropout, in module order: dropout modules, and the ``dropout=`` argument of each
    recurrent module (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``), which MindSpore's recurrent cells hold as an inner
    ``nn.Dropout`` cell (``dropout_op``) at the same place in the cell order: so a ported LSTM is no false alarm,
    and its inter-layer dropout is checked like any other."""
    from .torch_side import has_dropout
    return [(n, float(m.p)) if hasattr(m, "p") else (f"{n} (dropout=)", float(m.dropout))
            for n, m in module.named_modules() if has_dropout(m)]


def ms_dropout_stats(cell, samples: int = SAMPLES) -> List[Tuple[str, float, float]]:
    """``(name, drop rate, largest kept value)`` of every ``nn.Dropout`` cell of ``cell``, each run alone in train
    mode on ``samples`` ones (its training flag is restored afterwards)."""
    import mindspore as ms
    from mindspore import nn

    ones = ms.Tensor(np.ones(samples, np.float32))
    stats = []
    for name, child in cell.cells_and_names():
        if isinstance(child, nn.Dropout):
            was = child.training
            child.set_train(True)
            out = child(ones).asnumpy()
            child.set_train(was)
            kept = out[out != 0]
            stats.append((name, float(np.mean(out == 0)), float(kept.max()) if kept.size else 0.0,
                          float(kept.min()) if kept.size else 0.0))
    return [(n, r, hi if abs(hi - 1) >= abs(lo - 1) else lo) for n, r, hi, lo in stats]


def compare_dropout(torch_ps: Sequence[Tuple[str, float]], ms_stats: Sequence[Tuple[str, float, float]],
                    samples: int = SAMPLES) -> CheckResult:
    """The row of the parity table for the dropout layers (see the module docstring)."""
    if len(torch_ps) != len(ms_stats):
        return failed(LABEL, f"torch has {len(torch_ps)} dropout layers ({', '.join(n for n, _ in torch_ps)}), "
                             f"the port {len(ms_stats)} ({', '.join(n for n, *_ in ms_stats)})")
    worst = (0.0, 0.0, 0.0, 0.0, "")
    for (t_name, p), (m_name, rate, kept) in zip(torch_ps, ms_stats):
        sd = max(np.sqrt(p * (1.0 - p) / samples), 1.0 / samples)   # p = 0: not a single element may drop
        expected = 1.0 / (1.0 - p)
        scale_err = abs(kept - expected) / expected if kept else 0.0
        ratio = abs(rate - p) / sd
        if (ratio, scale_err) > worst[:2]:
            worst = (ratio, scale_err, abs(rate - p), sd, f"{m_name} (torch {t_name}: p={p:g}, port drops {rate:.4f}, "
                                                     f"keeps x{kept:.4g})")
    ratio, scale_err, abs_err, sd, where = worst
    scale_ratio = scale_err / _ULP
    passed = bool(ratio <= SIGMAS and scale_ratio <= K)
    return CheckResult(LABEL, abs_err, float("nan"), float(sd), float(ratio), SIGMAS, passed,
                       where if not passed else "", float(scale_err), _ULP, float(scale_ratio))
