"""MindSpore train steps of a net whose trunk is frozen: the trunk runs forward only (no gradient graph through
it, inference-mode BatchNorm) and only the head takes a train step on the pooled features.

The head module (``net.fc``; a VGG's ``net.classifier``, see ``head_module``) is the net's own cell, so its
Parameters are shared and checkpoints saved from ``net`` are right. It is exact (measured:
bit-identical): the full-net train cell computes the same features (its frozen BatchNorms use their moving
statistics too) and the same ``fc`` gradient. The loop (:mod:`ms_transfer.core.loop`) uses it through the
MindSpore backend, and caches the features it extracts (:mod:`ms_transfer.core.feature_cache`).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)
from ..core.archs import head_module, task_of
from ..core.tasks import NO_FAST_PATH
from .parallel import grad_reducer, is_data_parallel

__all__ = ["FrozenTrunkStep", "PairTrainStep", "TrainStep", "frozen_trunk_reason", "head_name", "is_head"]


class TrainStep(nn.TrainOneStepCell):
    """``nn.TrainOneStepCell`` for a network of one input and its labels, ``step(x, labels)``: the loss, returned
    as computed before one optimizer step (the ranks' gradients averaged under data parallelism, as the parent does).
    :class:`PairTrainStep` takes two inputs.

    Why not the parent as it is: its ``construct(self, *inputs)`` takes varargs, and MindSpore 2.7.2 never frees a
    cell whose top-level ``construct`` takes ``*args`` once it has run in GRAPH mode. Every train step built stayed
    alive with its network and compiled graph. Measured: six ``train()`` calls of ResNet18 at 32 px in one process
    left 444 cells alive and grew the process by 0.2 GiB per call. A fixed signature is freed like any other cell
    (``tests/test_backend_protocol.py`` checks it). The network it differentiates must not take ``*args`` either
    (:class:`~ms_transfer.mindspore_backend.backend.WithLoss`), nor may a shared helper method. Not one tuple of
    inputs instead: a tuple of tensors at the top level is compiled again for every new tuple (2.5 s per step of
    ResNet18 at 32 px).

    The loss and the gradients come from one ``ops.value_and_grad``, one forward pass: the parent's two calls (the
    loss, then ``GradOperation`` over the same network) updated every BatchNorm's statistics twice per step once the
    two were written differently (MindSpore merges the forwards only when they match).
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer) -> None:
        super().__init__(network, optimizer)
        self.value_and_grad = ops.value_and_grad(self.network, None, self.weights)

    def construct(self, x, labels):
        loss, grads = self.value_and_grad(x, labels)
        return ops.depend(loss, self.optimizer(self.grad_reducer(grads)))


class PairTrainStep(TrainStep):
    """:class:`TrainStep` for a network of two inputs (the digit adder's pair of images): ``step(x1, x2, labels)``."""

    def construct(self, x1, x2, labels):   # written out, not a shared helper of *inputs: that is kept alive too
        loss, grads = self.value_and_grad(x1, x2, labels)
        return ops.depend(loss, self.optimizer(self.grad_reducer(grads)))


def head_name(net: nn.Cell) -> str:
    """The name of ``net``'s head module, from its ``arch`` (:func:`~ms_transfer.core.archs.head_module`: VGG's is
    ``classifier``; ``fc`` otherwise, also for a net without ``arch``)."""
    return head_module(getattr(net, "arch", None))


def is_head(name: str, head: str = "fc") -> bool:
    """Whether a parameter or cell name belongs to the head module ``head``."""
    return name == head or name.startswith(head + ".")


def frozen_trunk_reason(net: nn.Cell) -> Optional[str]:
    """Why ``net`` cannot train as "trunk inference + head step" (``None``: it can).

    Needs a net with ``forward_features`` and a head module (:func:`head_name`) that holds every trainable
    parameter, and whose trunk BatchNorms run in inference mode (``use_batch_statistics=False``, what
    :func:`ms_transfer.mindspore_backend.optim.apply_freeze` sets for a frozen BatchNorm). A BatchNorm that computes
    batch statistics would make the full-net train step differ from pure inference, so it disqualifies the net.
    """
    if task_of(getattr(net, "arch", None) or "") != "classify":
        return NO_FAST_PATH
    head = head_name(net)
    if not (hasattr(net, "forward_features") and isinstance(getattr(net, head, None), nn.Cell)):
        return f"{type(net).__name__} has no forward_features/{head} (an ms_transfer model is needed)"
    trainable = [p.name for p in net.trainable_params()]
    outside = [n for n in trainable if not is_head(n, head)]
    if outside:
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        return f"parameters outside {head} are trainable ({', '.join(outside[:3])}{more})"
    if not trainable:
        return f"no {head} parameter is trainable"
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and not is_head(name, head) and cell.use_batch_statistics is not False:
            return (f"BatchNorm {name!r} is not in inference mode (use_batch_statistics="
                    f"{cell.use_batch_statistics!r})")
    return None


def _pynative() -> bool:
    return ms.get_context("mode") == ms.PYNATIVE_MODE


class _Trunk(nn.Cell):
    """``net.forward_features`` as its own cell (compiled on its own in GRAPH mode, never differentiated)."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # keep the net's parameter names (fc.weight, not net.fc.weight)
        self.net = net

    def construct(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)


class _HeadWithLoss(nn.Cell):
    """``loss_fn(head(features), labels)``; holds the net's own head cell, so its Parameters are shared."""

    def __init__(self, fc: nn.Cell, loss_fn: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.fc = fc
        self.loss_fn = loss_fn

    def construct(self, features: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(self.fc(features), labels)


class _FusedStep(nn.Cell):
    """Trunk forward, then a head train step, in one graph; returns ``(loss, features)``.

    Only the head is differentiated (``GradOperation`` over :class:`_HeadWithLoss`, whose input is the trunk's
    output), so no gradient graph reaches the trunk. One graph rather than trunk and head cells back to back:
    MindSpore 2.10 on CPU ran the trunk's forward faster inside a graph that also holds a ``GradOperation``
    than as a forward-only graph (measured, ResNet18 at 64 px, batch 8: 207 vs 132 img/s; equal at ResNet50,
    224 px), and it is one launch instead of two. Same update as ``nn.TrainOneStepCell`` (no loss scaling).
    """

    def __init__(self, net: nn.Cell, head: _HeadWithLoss, optimizer: nn.Optimizer) -> None:
        super().__init__(auto_prefix=False)
        self.net, self.head, self.optimizer = net, head, optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True)
        # data parallel (msrun): the ranks' head gradients are averaged, as nn.TrainOneStepCell does by itself
        self.reduce = is_data_parallel()
        self.reducer = grad_reducer(self.weights)

    def construct(self, x: Tensor, labels: Tensor):
        features = self.net.forward_features(x)
        loss = self.head(features, labels)
        grads = self.grad(self.head, self.weights)(features, labels)
        if self.reduce:
            grads = self.reducer(grads)
        self.optimizer(grads)
        return loss, features


class FrozenTrunkStep:
    """Train steps of a net whose trunk is frozen: trunk forward only, then a head-only train step.

    ``net`` is an ms_transfer model frozen so that only its head (``fc.*``; VGG: ``classifier.*``) trains (e.g.
    after ``apply_freeze(net, *strategy_patterns("fixed_feature", arch=net.arch))``), ``optimizer`` updates the
    head's parameters and ``loss_fn`` maps ``(logits, labels)`` to a scalar
    (``ms_transfer.mindspore_backend.backend.make_loss()``). Equal (measured: bit-identical) to
    ``nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), optimizer)`` on the same net, without a gradient graph through
    the trunk. Works in GRAPH and PYNATIVE mode. Raises
    ``ValueError`` naming the offending parameters or BatchNorm otherwise.

    ``step(x, y)`` (and ``__call__``) is one compiled graph: trunk forward + head step; ``extract`` runs the trunk
    alone (an inference graph) and ``head_step`` the head alone, for training from cached features.
    """

    def __init__(self, net: nn.Cell, optimizer: nn.Optimizer, loss_fn: nn.Cell) -> None:
        reason = frozen_trunk_reason(net)
        if reason:
            raise ValueError(f"FrozenTrunkStep needs a net whose only trainable parameters are its head's and "
                             f"whose frozen BatchNorms run in inference mode, but {reason}. Freeze it with "
                             "ms_transfer.mindspore_backend.optim.apply_freeze("
                             "net, *strategy_patterns('fixed_feature', arch=net.arch)), "
                             "or use nn.TrainOneStepCell for a trainable trunk.")
        head_cell = getattr(net, head_name(net))
        heads = {id(p) for p in head_cell.get_parameters()}
        foreign = [p.name for p in optimizer.parameters if id(p) not in heads]
        if foreign:
            raise ValueError(f"FrozenTrunkStep: the optimizer updates parameters that are not the head's "
                             f"(net.{head_name(net)}: {', '.join(foreign[:3])}); build it over "
                             "net.trainable_params() after freezing")
        self.net = net
        was_training = net.training
        self.trunk = _Trunk(net).set_train(False)  # 'predict' phase: an inference graph, no grad bookkeeping
        head = _HeadWithLoss(head_cell, loss_fn)
        self.head = TrainStep(head, optimizer).set_train(True)
        self.fused = _FusedStep(net, head, optimizer).set_train(True)
        # set_train recurses into net; give the caller its flags back (with every trunk BatchNorm in inference
        # mode, checked above, the flags do not change what the trunk computes)
        net.set_train(was_training)
        # PYNATIVE would run these cells op by op and rebuild the head's backward every call (measured: 38 ms per
        # head step vs 3.5 ms as a graph); ms.jit compiles them there as GRAPH mode does (same results).
        self._jit_trunk, self._jit_head, self._jit_fused = ms.jit(self.trunk), ms.jit(self.head), ms.jit(self.fused)

    def ready(self) -> Optional[str]:
        """``None`` while the net still qualifies, else the reason (freezing changed after construction)."""
        return frozen_trunk_reason(self.net)

    def extract(self, x: Union[Tensor, np.ndarray]) -> Tensor:
        """Pooled trunk features ``(N, num_features)`` of a batch of images, as inference."""
        x = x if isinstance(x, Tensor) else Tensor(np.ascontiguousarray(x, np.float32))
        return (self._jit_trunk if _pynative() else self.trunk)(x)

    def head_step(self, features: Union[Tensor, np.ndarray], labels: Union[Tensor, np.ndarray]) -> Tensor:
        """One optimizer step of the head on trunk features; returns the loss computed before the update."""
        if not isinstance(features, Tensor):
            features = Tensor(np.ascontiguousarray(features, np.float32))
        if not isinstance(labels, Tensor):
            labels = Tensor(np.asarray(labels, np.int32))
        return (self._jit_head if _pynative() else self.head)(features, labels)

    def step(self, x: Union[Tensor, np.ndarray], y: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
        """Trunk forward on ``x``, then one head step on ``(features, y)``; returns ``(loss, features)``."""
        x = x if isinstance(x, Tensor) else Tensor(np.ascontiguousarray(x, np.float32))
        y = y if isinstance(y, Tensor) else Tensor(np.asarray(y, np.int32))
        return (self._jit_fused if _pynative() else self.fused)(x, y)

    def __call__(self, x: Union[Tensor, np.ndarray], y: Union[Tensor, np.ndarray]) -> Tensor:
        """:meth:`step` returning only the loss (computed before the update)."""
        return self.step(x, y)[0]
