"""The same five computations on each side of the comparison.

An engine starts every computation from the same initial weights, so the checks are independent of
each other. All results are numpy arrays keyed by **torchvision names**, so that both sides (and the
float64 reference) are compared name by name.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import mindspore as ms
import numpy as np
import torch
from mindspore import nn

from ms_transfer.core import naming
from ms_transfer.checkpoint import load_state_into
from ms_transfer.optim import momentum_sgd
from ms_transfer.backend import make_loss
from torch_reference.models import build_model, load_numpy_state

Arrays = Dict[str, np.ndarray]


class TorchEngine:
    """torchvision ResNet in float32 (the floor) or float64 (the reference)."""

    def __init__(self, arch: str, num_classes: int, state: Mapping[str, np.ndarray], dtype: str,
                 padding: str = "torch") -> None:
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.arch, self.num_classes, self.state, self.padding = arch, num_classes, state, padding

    def _model(self):
        model = build_model(self.arch, self.num_classes, self.padding).to(self.dtype)
        load_numpy_state(model, self.state)
        return model

    def _inputs(self, x: np.ndarray, y: np.ndarray):
        return torch.from_numpy(x).to(self.dtype), torch.from_numpy(y.astype(np.int64))

    def eval_logits(self, x: np.ndarray) -> np.ndarray:
        model = self._model().eval()
        with torch.no_grad():
            return model(torch.from_numpy(x).to(self.dtype)).numpy()

    def train_forward(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Arrays]:
        model = self._model().train()
        xt, yt = self._inputs(x, y)
        with torch.no_grad():
            logits = model(xt)
            loss = torch.nn.functional.cross_entropy(logits, yt)
        stats = {k: v.numpy() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
        return logits.numpy(), loss.numpy(), stats

    def grads(self, x: np.ndarray, y: np.ndarray, bn_train: bool) -> Arrays:
        model = self._model().train(bn_train)
        xt, yt = self._inputs(x, y)
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        return {k: p.grad.numpy() for k, p in model.named_parameters()}

    def optimizer_steps(self, grads: Sequence[Mapping[str, np.ndarray]], lr: float, momentum: float,
                        weight_decay: float) -> Arrays:
        model = self._model()
        params = dict(model.named_parameters())
        before = {k: p.detach().clone() for k, p in params.items()}
        opt = torch.optim.SGD(params.values(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        for step_grads in grads:
            for k, p in params.items():
                p.grad = torch.from_numpy(step_grads[k]).to(self.dtype)
            opt.step()
        return {k: (p.detach() - before[k]).numpy() for k, p in params.items()}


class MindSporeEngine:
    """A MindSpore ResNet (possibly with an injected bug) in the current mode / device."""

    def __init__(self, net, state: Mapping[str, np.ndarray], arch: str) -> None:
        self.net, self.state, self.arch = net, state, arch
        self.logits_and_loss = LogitsAndLoss(net)
        self.loss_net = nn.WithLossCell(net, make_loss())
        self.grad_net = nn.ForwardValueAndGrad(self.loss_net, weights=net.trainable_params(), get_by_list=True)

    def _reset(self) -> None:
        load_state_into(self.net, self.state, strict=True)

    def _tv(self, arrays: Mapping[str, np.ndarray]) -> Arrays:
        renamed, unknown = naming.rename(arrays, self.arch, "ms_transfer", "torchvision")
        assert not unknown, unknown
        return renamed

    @staticmethod
    def _inputs(x: np.ndarray, y: np.ndarray):
        return ms.Tensor(x.astype(np.float32)), ms.Tensor(y.astype(np.int32))

    def eval_logits(self, x: np.ndarray) -> np.ndarray:
        self._reset()
        self.net.set_train(False)
        return self.net(ms.Tensor(x.astype(np.float32))).asnumpy()

    def train_forward(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Arrays]:
        self._reset()
        self.logits_and_loss.set_train(True)
        logits, loss = self.logits_and_loss(*self._inputs(x, y))
        stats = {p.name: p.asnumpy() for p in self.net.get_parameters()
                 if p.name.endswith(("moving_mean", "moving_variance"))}
        return logits.asnumpy(), loss.asnumpy(), self._tv(stats)

    def grads(self, x: np.ndarray, y: np.ndarray, bn_train: bool) -> Arrays:
        self._reset()
        self.grad_net.set_train(bn_train)
        _, grads = self.grad_net(*self._inputs(x, y))
        return self._tv({p.name: g.asnumpy() for p, g in zip(self.net.trainable_params(), grads)})

    def optimizer_steps(self, grads: Sequence[Mapping[str, np.ndarray]], lr: float, momentum: float,
                        weight_decay: float) -> Arrays:
        self._reset()
        params = self.net.trainable_params()
        tv_names = naming.name_map(self.arch, "ms_transfer", "torchvision")
        before = {p.name: p.asnumpy().copy() for p in params}
        opt = momentum_sgd(params, lr, momentum, weight_decay)
        for step_grads in grads:
            opt(tuple(ms.Tensor(step_grads[tv_names[p.name]].astype(np.float32)) for p in params))
        return self._tv({p.name: p.asnumpy() - before[p.name] for p in params})


class LogitsAndLoss(nn.Cell):
    """Network + mean cross-entropy, returning both (the train-mode forward check needs the logits)."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = make_loss()

    def construct(self, x, y):
        logits = self.net(x)
        return logits, self.loss_fn(logits, y)
