"""MindSpore optimizers with torch's semantics (no freezing here: :mod:`.optim`; parity's engine uses these).

MindSpore's optimizers skip weight decay on every parameter whose name contains ``gamma`` or ``beta``
(all BatchNorm affine parameters) when ``weight_decay`` is a plain float; ``torch.optim.SGD`` decays
every parameter. Passing the parameters as one group with its own ``weight_decay`` makes MindSpore decay
them all, which the parity suite's optimizer check verifies.

``nn.Adam`` is not ``torch.optim.Adam``: its kernel computes ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m /
(sqrt(v) + eps)`` (TensorFlow's form), where torch adds ``eps`` to the *bias-corrected* ``sqrt(v / (1 - b2^t))``.
The same update only when ``eps`` is negligible: at step 1 MindSpore's effective eps is 1/sqrt(1 - 0.999) = 31.6x
torch's, and the cats-vs-dogs regime (Adam on VGG16's class layer) failed the training-step parity check by a
systematic update scale of ~7e-4 (ratio 176 against the bound 4). :class:`TorchAdam` is torch's rule.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)

__all__ = ["momentum_sgd", "TorchAdam", "build_optimizer"]


def momentum_sgd(params: Iterable[Parameter], lr: float, momentum: float, weight_decay: float = 0.0) -> nn.Momentum:
    """``nn.Momentum`` equivalent to ``torch.optim.SGD(params, lr, momentum, weight_decay=weight_decay)``."""
    return nn.Momentum([{"params": list(params), "weight_decay": weight_decay}], learning_rate=lr,
                       momentum=momentum)


_torch_adam = ops.MultitypeFuncGraph("torch_adam")


@_torch_adam.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                      "Tensor", "Tensor", "Tensor")
def _torch_adam_update(beta1, one_minus_beta1, beta2, one_minus_beta2, eps, correction1, correction2_sqrt, lr, param,
                       exp_avg, exp_avg_sq, gradient):
    """One parameter's ``torch.optim.Adam`` step."""
    exp_avg_new = beta1 * exp_avg + one_minus_beta1 * gradient
    exp_avg_sq_new = beta2 * exp_avg_sq + one_minus_beta2 * gradient * gradient
    denom = ops.sqrt(exp_avg_sq_new) / correction2_sqrt + eps
    ops.assign(exp_avg, exp_avg_new)
    ops.assign(exp_avg_sq, exp_avg_sq_new)
    return ops.assign(param, param - (lr / correction1) * exp_avg_new / denom)


class TorchAdam(nn.Optimizer):
    """``torch.optim.Adam`` (not AMSGrad) in MindSpore: ``g += wd * p``; ``m = b1 m + (1 - b1) g``;
    ``v = b2 v + (1 - b2) g^2``; ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    The bias corrections of steps 1..``steps`` are computed in float64 (as torch does, from the step count) and
    kept as float32 tables indexed by ``global_step``, like the per-step learning rates: a float32 running power
    of ``b2 = 0.999`` would put a relative error of 1.3e-5 into ``1 - b2^t``. Groups, per-step LRs and weight
    decay work as in every ``nn.Optimizer``; ``steps`` must cover the run (the stage's length).
    """

    def __init__(self, params, learning_rate, steps: int, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate, params, weight_decay)
        f32 = lambda v: Tensor(np.float32(v))  # noqa: E731  (constants rounded once, from float64)
        self.beta1, self.one_minus_beta1, self.beta2 = f32(beta1), f32(1.0 - beta1), f32(beta2)
        self.one_minus_beta2, self.eps = f32(1.0 - beta2), f32(eps)
        t = np.arange(1, max(int(steps), 1) + 1, dtype=np.float64)
        self.correction1 = Tensor((1.0 - beta1 ** t).astype(np.float32))
        self.correction2_sqrt = Tensor(np.sqrt(1.0 - beta2 ** t).astype(np.float32))
        self.exp_avg = self._parameters.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self._parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.hyper_map = ops.HyperMap()

    def construct(self, gradients):
        gradients = self.decay_weight(gradients)
        lr = self.get_lr()
        step = self.global_step
        correction1 = self.correction1[step].reshape(())
        correction2_sqrt = self.correction2_sqrt[step].reshape(())
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        update = ops.partial(_torch_adam, self.beta1, self.one_minus_beta1, self.beta2, self.one_minus_beta2,
                             self.eps, correction1, correction2_sqrt)
        if self.is_group_lr:
            return self.hyper_map(update, lr, self._parameters, self.exp_avg, self.exp_avg_sq, gradients)
        return self.hyper_map(ops.partial(update, lr), self._parameters, self.exp_avg, self.exp_avg_sq, gradients)


def build_optimizer(name: str, groups: Sequence[Tuple[float, List[Parameter]]], lr_per_step: Sequence[float],
                    momentum: float, weight_decay: float) -> nn.Optimizer:
    """MindSpore optimizer with torch semantics from ``[(lr multiplier, params)]`` and a per-step base LR.

    Every parameter is decayed (torch) and each group's LR is ``multiplier * lr_per_step[step]``; the
    optimizer's ``global_step`` indexes the list, so a restored optimizer continues its schedule.
    """
    base = [float(v) for v in lr_per_step]
    param_groups = [{"params": ps, "lr": [m * v for v in base], "weight_decay": weight_decay} for m, ps in groups]
    if name == "momentum":
        return nn.Momentum(param_groups, learning_rate=base, momentum=momentum)
    if name == "sgd":
        return nn.SGD(param_groups, learning_rate=base, momentum=momentum)
    if name == "adam":
        return TorchAdam(param_groups, learning_rate=base, steps=len(base))
    raise ValueError(f"unknown optimizer {name!r}; use momentum, sgd or adam")
