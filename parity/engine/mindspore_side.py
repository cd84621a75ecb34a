"""The MindSpore side of a comparison: any ``mindspore.nn.Cell`` in the current mode / device (no torch here, so
that a reference bundle can be checked on a machine without it; nor any architecture: the cell is the caller's).

Every computation first reloads the port's weights. Results are numpy arrays keyed by **torch** names (through
the resolved name map) or by output position, so they compare name by name with the torch side.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops

# (importing the context applies the measured oneDNN cap, before MindSpore's first kernel)
from ms_transfer.mindspore_backend.context import release_compiled_graphs
from ms_transfer.mindspore_backend.optimizers import momentum_sgd
from ms_transfer.mindspore_backend.weights import copy_into

from .graph_taps import graph_calls, graph_taps
from .localization import CallRecorder
from .loss import CROSS_ENTROPY, flatten, output_names

Arrays = Dict[str, np.ndarray]


def flatten_outputs(out) -> List[ms.Tensor]:
    """A cell's output as a flat list of tensors."""
    return flatten(out, ms.Tensor)


class WeightsMismatch(ValueError):
    """Weights that do not fit the cell: the message names the missing, unexpected and mismatched tensors."""


def load_weights(net: nn.Cell, state: Mapping[str, np.ndarray]) -> None:
    """Copy ``state`` (MindSpore names) into every parameter of ``net``; raises :class:`WeightsMismatch` (and
    changes nothing) unless the names and shapes are exactly the cell's."""
    params = {p.name: p for p in net.get_parameters()}
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    mismatched = [f"{k} {tuple(np.shape(v))} vs the cell's {tuple(params[k].shape)}" for k, v in state.items()
                  if k in params and tuple(np.shape(v)) != tuple(params[k].shape)]
    if missing or unexpected or mismatched:
        raise WeightsMismatch(f"weights do not fit the cell: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                              f"shape-mismatched {mismatched[:4]} (pass weights named and shaped as the cell's "
                              "parameters)")
    # copied into each parameter's own memory, not swapped for a new tensor (set_data): every compiled graph that had
    # run kept the data it last ran with alive, one model's worth per graph (VGG16, 64 px, GRAPH: 3.85 GiB after the
    # eval, train and gradient graphs with set_data, 2.31 GiB with copy_; the same outputs)
    for name, value in state.items():
        copy_into(params[name], value)


class Objective(nn.Cell):
    """The network's outputs and the loss of :mod:`parity.engine.loss`, from ``(inputs, loss_args)``, two tuples."""

    def __init__(self, net: nn.Cell, loss: str) -> None:
        super().__init__(auto_prefix=False)
        self.net, self.cross_entropy = net, loss == CROSS_ENTROPY
        # torch's cross_entropy in log-space (SoftmaxCrossEntropyWithLogits returns inf once a softmax underflows)
        self.ce = nn.CrossEntropyLoss(reduction="mean")

    def construct(self, inputs, loss_args):
        out = self.net(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if self.cross_entropy:
            return outs, self.ce(outs[0], loss_args[0])
        loss = (outs[0] * loss_args[0]).mean()
        for i in range(1, len(outs)):
            loss = loss + (outs[i] * loss_args[i]).mean()
        return outs, loss


class LossOnly(nn.Cell):
    """The objective's loss alone (what the gradient is taken of)."""

    def __init__(self, objective: Objective) -> None:
        super().__init__(auto_prefix=False)
        self.objective = objective

    def construct(self, inputs, loss_args):
        return self.objective(inputs, loss_args)[1]


class ValueAndGrad(nn.Cell):
    """``(loss, gradients with respect to weights)`` of ``network(inputs, loss_args)``: ``nn.ForwardValueAndGrad``
    with a fixed signature. MindSpore 2.7.2 never frees a cell whose top-level ``construct`` takes ``*args`` once it
    has run in GRAPH mode (``ForwardValueAndGrad``'s does), so each comparison's gradient graph, and the net with it,
    stayed alive for the rest of the process (see ``ms_transfer.mindspore_backend.frozen_trunk.TrainStep``). The
    tuples come ``mutable`` (:meth:`MindSporeSide._args`)."""

    def __init__(self, network: nn.Cell, weights) -> None:
        super().__init__(auto_prefix=False)
        self.network, self.weights = network, ms.ParameterTuple(weights)
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, inputs, loss_args):
        return self.network(inputs, loss_args), self.grad(self.network, self.weights)(inputs, loss_args)


class MindSporeSide:
    """``net`` with weights ``state`` (MindSpore names); ``ms_to_torch`` renames results."""

    def __init__(self, net: nn.Cell, state: Mapping[str, np.ndarray], ms_to_torch: Mapping[str, str],
                 loss: str) -> None:
        self.net, self.state, self.ms_to_torch, self.loss = net, state, dict(ms_to_torch), loss
        self._build_cells()

    def _build_cells(self) -> None:
        self.objective = Objective(self.net, self.loss)
        self.grad_net = ValueAndGrad(LossOnly(self.objective), self.net.trainable_params())

    def release_graphs(self) -> None:
        """Drop the objective's and the gradient's compiled graphs and give their memory back (they are built again
        on first use). MindSpore keeps a compiled graph's working memory as long as its cell lives, and every check
        compiles graphs of its own anyway: ResNet50, 224 px, GRAPH mode, the port's side alone held 1.35 GiB after
        its gradient check and 2.04 GiB after the last check while its cells lived, 0.89 and 1.01 GiB released
        after each check (peak 2.46 -> 1.44 GiB). The old cells go with their last reference (the same memory without a
        ``gc.collect()``, which costs 0.1-0.2 s a call with both frameworks loaded: the CI run that collected after
        every check spent 1,603 s of CPU in the main test process, ~1,320 s before)."""
        self._build_cells()
        release_compiled_graphs()

    def reset(self) -> None:
        load_weights(self.net, self.state)

    def _torch_names(self, arrays: Mapping[str, np.ndarray]) -> Arrays:
        return {self.ms_to_torch[k]: v for k, v in arrays.items()}

    @staticmethod
    def tensor(a: np.ndarray) -> ms.Tensor:
        a = np.asarray(a)
        return ms.Tensor(a.astype(np.float32, copy=False) if np.issubdtype(a.dtype, np.floating)
                         else a.astype(np.int32, copy=False))

    @classmethod
    def shared_tensor(cls, a: np.ndarray) -> ms.Tensor:
        """A float32 C-contiguous array as a tensor sharing its memory (``Tensor.from_numpy``); else a copy as
        :meth:`tensor` makes it. For arrays nobody writes to while the tensor lives."""
        if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable:
            return ms.Tensor.from_numpy(a)
        return cls.tensor(a)

    def _args(self, inputs: Sequence[np.ndarray], loss_args: Sequence[np.ndarray]) -> Tuple[tuple, tuple]:
        """``(inputs, loss_args)`` as the tuples of tensors :class:`Objective` takes, ``mutable``: a plain tuple of
        tensors is a constant of the compiled graph, compiled again for every new tuple."""
        return (ms.mutable(tuple(self.tensor(x) for x in inputs)),
                ms.mutable(tuple(self.tensor(a) for a in loss_args)))

    def train_mode(self, cell: nn.Cell, train: bool) -> None:
        """``cell.set_train(train)`` with every ``nn.Dropout`` of the net left in eval mode (identity): see
        ``DROPOUT_NOTE`` in :mod:`parity.engine.comparison`."""
        cell.set_train(train)
        for _, child in self.net.cells_and_names():
            if isinstance(child, nn.Dropout):
                child.set_train(False)

    def eval_outputs(self, inputs: Sequence[np.ndarray]) -> Arrays:
        self.reset()
        self.net.set_train(False)
        outs = flatten_outputs(self.net(*[self.tensor(x) for x in inputs]))
        return dict(zip(output_names(len(outs)), (o.asnumpy() for o in outs)))

    def train_forward(self, inputs: Sequence[np.ndarray], loss_args: Sequence[np.ndarray]
                      ) -> Tuple[Arrays, np.ndarray, Arrays]:
        self.reset()
        self.train_mode(self.objective, True)
        outs, loss = self.objective(*self._args(inputs, loss_args))
        outs = flatten_outputs(outs)
        trainable = {p.name for p in self.net.trainable_params()}
        buffers = {p.name: p.asnumpy() for p in self.net.get_parameters()
                   if p.name not in trainable and p.name in self.ms_to_torch}
        return (dict(zip(output_names(len(outs)), (o.asnumpy() for o in outs))), loss.asnumpy(),
                self._torch_names(buffers))

    def grads(self, inputs: Sequence[np.ndarray], loss_args: Sequence[np.ndarray], bn_train: bool) -> Arrays:
        self.reset()
        self.train_mode(self.grad_net, bn_train)
        _, grads = self.grad_net(*self._args(inputs, loss_args))
        return self._torch_names({p.name: g.asnumpy() for p, g in zip(self.net.trainable_params(), grads)})

    def optimizer_steps(self, grads, lr: float, momentum: float, weight_decay: float) -> Arrays:
        """The same steps with MindSpore's momentum SGD set up as torch's (:func:`momentum_sgd`); ``grads`` as
        :meth:`parity.engine.torch_side.TorchSide.optimizer_steps` takes them."""
        self.reset()
        params = self.net.trainable_params()
        opt = momentum_sgd(params, lr, momentum, weight_decay)
        for step_grads in grads:
            # each step's gradients handed over without a copy (read-only to the optimizer): a model's worth of
            # float32 less at the port's optimizer step, its peak (ResNet50: 0.1 GB; VGG16: 0.55 GB)
            opt(tuple(self.shared_tensor(step_grads[self.ms_to_torch[p.name]]) for p in params))
        del opt
        # after - before, the before being the weights reset() loaded (no copy taken before the steps: one model's
        # worth less while they run); cast as the parameter was, should it not be float32
        updates = {}
        for p in params:
            after = p.asnumpy()
            updates[p.name] = np.subtract(after, np.asarray(self.state[p.name]).astype(after.dtype, copy=False))
        return self._torch_names(updates)

    # --- localisation (parity.engine.localization) ---------------------------------------------------------

    def trace(self, inputs: Sequence[np.ndarray], train: bool, names: Sequence[str], keep_inputs: bool = True):
        """As :meth:`parity.engine.torch_side.TorchSide.trace`, on the cells ``names``. In GRAPH mode the net runs as
        one compiled graph with those cells' outputs tapped (:mod:`parity.engine.graph_taps`; outputs only: the
        records' inputs are empty, ``keep_inputs`` must be False)."""
        self.reset()
        if ms.get_context("mode") == ms.GRAPH_MODE:
            if keep_inputs:
                raise ValueError("a GRAPH-mode trace taps layer outputs only: pass keep_inputs=False")
            taps = graph_taps(self.net, [self.tensor(x) for x in inputs], names,
                              lambda cell: self.train_mode(cell, train))
            return [(name, k, [], outs) for (name, k), outs in taps.items()]
        self.train_mode(self.net, train)
        cells = dict(self.net.cells_and_names())
        recorder, handles = CallRecorder(), []
        for name in names:
            def hook(cell, args, out, name=name):
                recorder.add(name, [a.asnumpy() for a in args if isinstance(a, ms.Tensor)] if keep_inputs else [],
                             [o.asnumpy() for o in flatten_outputs(out)])
            handles.append(cells[name].register_forward_hook(hook))
        try:
            self.net(*[self.tensor(x) for x in inputs])
        finally:
            for h in handles:
                h.remove()
        return recorder.records

    def run_cells(self, calls: Sequence[Tuple[str, Sequence[np.ndarray]]], train: bool) -> List[List[np.ndarray]]:
        """Each ``(cell name, inputs)`` called alone (single-step mode): in GRAPH mode all of them in one compiled
        graph (:func:`~parity.engine.graph_taps.graph_calls`), else one by one. A call that cannot run gives
        ``None`` (in GRAPH mode found by compiling the calls one by one when the whole graph fails)."""
        run = self.module_runner(train)
        if ms.get_context("mode") == ms.GRAPH_MODE and calls:
            cells = dict(self.net.cells_and_names())
            try:
                return graph_calls([cells[n] for n, _ in calls], [[self.tensor(a) for a in args] for _, args in calls],
                                   lambda cell: self.train_mode(cell, train))
            except (RuntimeError, ValueError, TypeError):
                pass   # one call does not compile: find it below
        results = []
        for name, args in calls:
            try:
                results.append(run(name, args))
            except (RuntimeError, ValueError, TypeError):
                results.append(None)
        return results

    def module_runner(self, train: bool):
        """``run(name, inputs) -> outputs``: one cell called alone on the given inputs (single-step mode)."""
        self.reset()
        self.train_mode(self.net, train)
        cells = dict(self.net.cells_and_names())

        def run(name: str, args: Sequence[np.ndarray]) -> List[np.ndarray]:
            return [o.asnumpy() for o in flatten_outputs(cells[name](*[self.tensor(a) for a in args]))]
        return run

    def relu_names(self) -> List[str]:
        """Names of the ``nn.ReLU`` cells."""
        return [n for n, cell in self.net.cells_and_names() if isinstance(cell, nn.ReLU)]

    def relu_masks(self, inputs: Sequence[np.ndarray], train: bool, names: Sequence[str]
                   ) -> Dict[str, List[np.ndarray]]:
        """``output > 0`` of each listed ReLU cell, per call, on one forward (run in PYNATIVE: hooks)."""
        previous = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        try:
            records = self.trace(inputs, train, names, keep_inputs=False)
        finally:
            ms.set_context(mode=previous)
        masks: Dict[str, List[np.ndarray]] = {}
        for name, _, _, outs in records:
            masks.setdefault(name, []).append(outs[0] > 0)
        return masks

    def module_params(self) -> Dict[str, List[str]]:
        """Cell name -> the full names of its parameters (recursive)."""
        return {name: [p.name for p in cell.get_parameters()] for name, cell in self.net.cells_and_names()}
