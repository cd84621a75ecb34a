"""The torch side of a comparison: any ``torch.nn.Module`` in float64 (the reference) or float32 (the floor).

Every computation starts from the module with the side's weights freshly loaded (parameters, buffers, no gradients,
no hooks left by an earlier computation), so the checks are independent of each other. The module is copied once
per check (:class:`WorkingCopy`; dropped while the port runs) and that copy is shared by every side of a
comparison: deep-copying it for each computation was ~23% of a comparison's time (ResNet18, 64 px; issue 22).
Results are numpy arrays keyed by torch names (parameters and buffers) or by output position.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from torch_reference import require_torch

from .localization import CallRecorder
from .loss import CROSS_ENTROPY, flatten, output_names
from .memory import Spilled, spill_each

torch = require_torch("comparing a port with its torch original (parity.compare_models, parity.save_reference)")
# after the error naming what needed torch; re-exported (the own-model examples import it from here)
from torch_reference.state import numpy_state  # noqa: E402,F401

Arrays = Dict[str, np.ndarray]
#: elements of a parameter stepped together by :meth:`TorchSide.optimizer_steps` (a multiple of every SIMD width:
#: each slice runs the same vector loops as the whole tensor would); 4M: 32 MB of float64 per slice
STEP_SLICE = 1 << 22
_NUMPY = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}   # a side's dtype in numpy


def flatten_outputs(out) -> List[torch.Tensor]:
    """A module's output as a flat list of tensors."""
    return flatten(out, torch.Tensor)


def _owned(outs: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """``outs`` as numpy arrays of their own: an output may be a view of a weight (a module returning a parameter
    or a slice of one), which the next computation on the shared working copy overwrites."""
    return [o.detach().numpy().copy() for o in outs]


def _write_each_gradient(model: torch.nn.Module, written: Spilled) -> list:
    """Hooks (their handles, to remove) putting each parameter's gradient into ``written`` and dropping it as soon as
    backward has it: after the autograd engine has summed every use of the parameter, one call per backward."""
    def write(p: torch.Tensor, name: str) -> None:
        written.put(name, p.grad.numpy())
        p.grad = None
    return [p.register_post_accumulate_grad_hook(lambda p, name=name: write(p, name))
            for name, p in model.named_parameters() if p.requires_grad]


@contextmanager
def _forced_masks(model: torch.nn.Module, masks: Optional[Mapping[str, Sequence[np.ndarray]]]) -> Iterator[None]:
    """Within the block, each listed ReLU outputs ``input * mask`` for its k-th call (calls beyond the list run as
    is); the ReLUs are restored afterwards (the model is a shared working copy)."""
    modules = dict(model.named_modules())
    handles, inplace = [], {}
    for name, per_call in (masks or {}).items():
        module = modules[name]
        inplace[name] = module.inplace
        module.inplace = False   # the pre-activation must survive the call
        calls = [0]

        def hook(mod, args, out, per_call=per_call, calls=calls):
            k = calls[0]
            calls[0] += 1
            if k < len(per_call) and tuple(per_call[k].shape) == tuple(args[0].shape):
                # the mask as bool: autograd keeps it (1 byte an element) for the backward rather than a float64
                # copy (8); the product is the same (bool promotes to exactly 0.0 / 1.0)
                return args[0] * torch.from_numpy(per_call[k])
            return out
        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for name, value in inplace.items():
            modules[name].inplace = value


def has_dropout(m: torch.nn.Module) -> bool:
    """A dropout module, or a recurrent one (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: its ``dropout=`` argument drops
    between layers in train mode, and train mode changes nothing else in it; MindSpore's recurrent cells hold that
    dropout as an inner ``nn.Dropout`` cell)."""
    return isinstance(m, (torch.nn.modules.dropout._DropoutNd, torch.nn.RNNBase))


def without_dropout(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every dropout layer (:func:`has_dropout`) in eval mode (identity); see ``DROPOUT_NOTE`` in
    :mod:`parity.engine.comparison`."""
    for m in module.modules():
        if has_dropout(m):
            m.eval()
    return module


def dropout_names(module: torch.nn.Module) -> List[str]:
    """Names of the modules with dropout (:func:`has_dropout`)."""
    return [n for n, m in module.named_modules() if has_dropout(m)]


class WorkingCopy:
    """One copy of ``module``, made on first use and shared by every :class:`TorchSide` given this object: a side
    loads its own weights into it for each computation instead of deep-copying the module, and casts it when its
    dtype differs from the last computation's (about twice per check: the float64 reference, then the float32
    samples). One copy rather than one per dtype: the process never holds a float64 and a float32 copy at once, as
    a deep copy per computation never did. A model a side returns is valid until the next computation of any side
    sharing the copy (computations run one at a time)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self._copy: Optional[torch.nn.Module] = None
        self._dtype: Optional[torch.dtype] = None

    def get(self, dtype: torch.dtype) -> torch.nn.Module:
        """The copy in ``dtype`` (float tensors cast, integer buffers kept) without gradients, with whatever weights
        it last held."""
        if self._copy is None:
            self._copy = self._empty_copy(dtype)
        for p in self._copy.parameters():
            # dropped, not zeroed or cast: an earlier computation returned them as numpy views (a cast would swap
            # their storage under those arrays), and a backward would add to them
            p.grad = None
        if dtype != self._dtype:
            self._copy.to(dtype)
            self._dtype = dtype
        return self._copy

    def _empty_copy(self, dtype: torch.dtype) -> torch.nn.Module:
        """A deep copy of the module whose float state-dict tensors are new and empty, in ``dtype``: every side loads
        all of them before it computes (:meth:`TorchSide.model`), so the module's values were copied only to be
        overwritten, and then cast (VGG11-BN: its float32 weights copied beside the float64 cast, the VGG bugs
        test's peak). Anything else (integer buffers, buffers outside the state dict) is deep-copied as before and
        cast by :meth:`get`."""
        memo: Dict[int, Any] = {}
        for t in self.module.state_dict(keep_vars=True).values():
            if t.is_floating_point() and id(t) not in memo:
                empty = torch.empty(t.shape, dtype=dtype)
                memo[id(t)] = (torch.nn.Parameter(empty, requires_grad=t.requires_grad)
                               if isinstance(t, torch.nn.Parameter) else empty)
        return copy.deepcopy(self.module, memo)

    def release(self) -> None:
        """Drop the copy (made again on next use): while the port runs, nothing of the torch side computes."""
        self._copy, self._dtype = None, None


class TorchSide:
    """``module`` with ``state`` (torch names, numpy) in ``dtype``; ``loss`` is ``"cross_entropy"`` (mean, on the
    first output, integer targets) or ``"projection"`` (sum over outputs of ``mean(output * weight)``). Sides given
    the same ``working`` copy (made from ``module``) share it; by default a side has its own."""

    def __init__(self, module: torch.nn.Module, state: Mapping[str, np.ndarray], dtype: str, loss: str,
                 working: Optional[WorkingCopy] = None) -> None:
        if working is not None and working.module is not module:
            raise ValueError("the working copy was made from another module than this side's")
        self.module, self.state, self.loss = module, state, loss
        self.working = working or WorkingCopy(module)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self._grads_to_file = False   # see gradients_to_file

    def model(self, train: bool = False) -> torch.nn.Module:
        """The working copy in this side's dtype with this side's weights loaded (every parameter and buffer, no
        gradient), in train or eval mode (dropout always off, :func:`without_dropout`)."""
        m = self.working.get(self.dtype)
        current = m.state_dict()
        if set(current) != set(self.state):
            raise KeyError(f"state and module differ: {sorted(set(current) ^ set(self.state))[:4]}")
        # tensor by tensor: no second copy of the whole state (a VGG's is 0.5-1 GB). numpy's copy, not torch's
        # copy_: on a loaded 2-core machine torch's threaded copy of ResNet50's weights took 0.05-2.2 s, numpy's
        # 0.03-0.05 s (the same values: float32 -> float32 / float64 is exact)
        for k, v in self.state.items():
            np.copyto(current[k].numpy(), v)
        return without_dropout(m.train(train))

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        """``a`` as a tensor of its own memory: floats in this side's dtype, integers as int64."""
        a = np.asarray(a)
        if a.dtype.kind == "f" and a.dtype != _NUMPY[self.dtype] and a.flags.writeable and a.flags.c_contiguous:
            # the cast is the copy: no float32 copy first (VGG16's classifier weight's gradient in the float64
            # optimizer reference: 0.4 GB less at that check's peak)
            return torch.from_numpy(a).to(self.dtype)
        t = torch.from_numpy(np.array(a))
        return t.to(self.dtype) if t.is_floating_point() else t.long()

    def _loss(self, outs: Sequence[torch.Tensor], loss_args: Sequence[np.ndarray]) -> torch.Tensor:
        if self.loss == CROSS_ENTROPY:
            return torch.nn.functional.cross_entropy(outs[0], self.tensor(loss_args[0]))
        return sum((o * self.tensor(w)).mean() for o, w in zip(outs, loss_args))

    def eval_outputs(self, inputs: Sequence[np.ndarray]) -> Arrays:
        m = self.model(train=False)
        with torch.no_grad():
            outs = flatten_outputs(m(*[self.tensor(x) for x in inputs]))
        return dict(zip(output_names(len(outs)), _owned(outs)))

    def train_forward(self, inputs: Sequence[np.ndarray], loss_args: Sequence[np.ndarray]
                      ) -> Tuple[Arrays, np.ndarray, Arrays]:
        """Train-mode outputs, the loss, and every float buffer after the forward (BN running statistics)."""
        m = self.model(train=True)
        with torch.no_grad():
            outs = flatten_outputs(m(*[self.tensor(x) for x in inputs]))
            loss = self._loss(outs, loss_args)
        buffers = {k: v.numpy().copy() for k, v in m.named_buffers() if v.is_floating_point()}
        return dict(zip(output_names(len(outs)), _owned(outs))), loss.numpy(), buffers

    def grads(self, inputs: Sequence[np.ndarray], loss_args: Sequence[np.ndarray], bn_train: bool,
              masks: Optional[Mapping[str, Sequence[np.ndarray]]] = None) -> Union[Arrays, Spilled]:
        """Gradients of every parameter (within :meth:`gradients_to_file`: a :class:`~parity.engine.memory.Spilled` of
        them, written as backward computes them); with ``masks`` (ReLU module name -> the port's mask of each call),
        those ReLUs keep exactly the port's zero / non-zero decisions (see :mod:`parity.engine.tolerance`)."""
        m = self.model(train=bn_train)
        written = spill_each() if self._grads_to_file else None
        handles = [] if written is None else _write_each_gradient(m, written)
        try:
            with _forced_masks(m, masks):
                self._loss(flatten_outputs(m(*[self.tensor(x) for x in inputs])), loss_args).backward()
        finally:
            for h in handles:
                h.remove()
        if written is None:
            return {k: p.grad.numpy() for k, p in m.named_parameters() if p.grad is not None}
        written.order([name for name, _ in m.named_parameters()])   # backward computed them last layer first
        return written

    @contextmanager
    def gradients_to_file(self) -> Iterator[None]:
        """Within: :meth:`grads` writes each gradient to a temporary file as soon as backward has computed it, frees
        it, and returns the :class:`~parity.engine.memory.Spilled` of them all (``load()`` gives the same arrays).
        The whole model's gradients are never held: VGG16's float64 classifier gradient (0.8 GB) had sat beside
        the activations of the convolutions' backward, the peak of its comparison (BENCHMARKS.md "Parity cost")."""
        self._grads_to_file = True
        try:
            yield
        finally:
            self._grads_to_file = False

    def relu_names(self) -> List[str]:
        """Names of the ``nn.ReLU`` modules (the activations whose masks can be shared)."""
        return [n for n, mod in self.module.named_modules() if isinstance(mod, torch.nn.ReLU)]

    def optimizer_steps(self, grads, lr: float, momentum: float, weight_decay: float) -> Arrays:
        """One step of torch SGD (momentum, weight decay) per element of ``grads`` (``{torch name: gradient}`` each:
        a list, or :class:`~parity.engine.comparison.SyntheticGrads`, which names them in ``names``): the updates.

        Each parameter's steps run on a tensor of its own, made from this side's weights, not on the model: SGD
        updates every element on its own, so a parameter stepped alone, or in slices (:data:`STEP_SLICE` elements at
        a time), takes the same float operations on each element. With gradients readable per tensor, each slice
        goes through all its steps before the next: one slice's momentum and gradient at a time instead of a
        model's worth of each (VGG16's float64 reference had been the peak of its comparison: 9.4 -> 7.9 GiB,
        BENCHMARKS.md "Parity cost")."""
        wanted = set(grads.names if hasattr(grads, "names") else grads[0])
        dtype = _NUMPY[self.dtype]
        updates: Arrays = {}
        if getattr(grads, "readable_per_tensor", lambda: False)():
            for k, w in self.state.items():   # one pass (a floor sample's jittered weights are drawn as they come)
                if k not in wanted:
                    continue
                flat = np.asarray(w).reshape(-1)
                out = np.empty(flat.shape, dtype)
                for start in range(0, max(flat.size, 1), STEP_SLICE):
                    stop = min(start + STEP_SLICE, flat.size)
                    before = torch.tensor(flat[start:stop], dtype=self.dtype)   # a copy, cast (exact)
                    p = before.clone().requires_grad_()
                    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
                    for g in grads.steps_of(k, start, stop):
                        p.grad = self.tensor(g.reshape(-1))
                        opt.step()
                        p.grad = None
                    del opt
                    torch.sub(p.detach(), before, out=torch.from_numpy(out[start:stop]))   # after - before
                updates[k] = out.reshape(np.shape(w))
            return updates
        # step by step (steps given as a list, or no file to read them from): every parameter at once
        params = {k: torch.tensor(np.asarray(w), dtype=self.dtype, requires_grad=True)
                  for k, w in self.state.items() if k in wanted}
        before = {k: p.detach().clone() for k, p in params.items()}
        opts = {k: torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
                for k, p in params.items()}
        for step_grads in grads:
            for k, p in params.items():
                p.grad = self.tensor(step_grads[k])
                opts[k].step()
                p.grad = None
        del opts   # their momentum buffers (a model's worth) go before the updates are formed
        return {k: torch.sub(p.detach(), before[k], out=before[k]).numpy() for k, p in params.items()}

    # --- localisation (parity.engine.localization) -----------------------------------------------------------

    def trace(self, inputs: Sequence[np.ndarray], train: bool, names: Sequence[str], keep_inputs: bool = True):
        """One forward with hooks on the modules ``names``: ``[(name, call index, inputs, outputs)]`` as
        :class:`~parity.engine.localization.CallRecorder` keeps them (call order; a module used twice appears twice)."""
        m = self.model(train=train)
        modules = dict(m.named_modules())
        recorder, handles = CallRecorder(), []
        for name in names:
            def hook(mod, args, out, name=name):
                recorder.add(name, [a.detach().numpy().copy() for a in args if isinstance(a, torch.Tensor)]
                             if keep_inputs else [], [o.detach().numpy().copy() for o in flatten_outputs(out)])
            handles.append(modules[name].register_forward_hook(hook))
        try:
            with torch.no_grad():
                m(*[self.tensor(x) for x in inputs])
        finally:
            for h in handles:
                h.remove()
        return recorder.records

    def module_runner(self, train: bool):
        """``run(name, inputs) -> outputs``: one module of this side's model, called alone (single-step mode; valid
        until the next computation on the same working copy)."""
        modules = dict(self.model(train=train).named_modules())

        def run(name: str, args: Sequence[np.ndarray]) -> List[np.ndarray]:
            with torch.no_grad():
                return _owned(flatten_outputs(modules[name](*[self.tensor(a) for a in args])))
        return run

    def module_params(self) -> Dict[str, List[str]]:
        """Module name -> the full names of its parameters and buffers (recursive)."""
        return {name: [f"{name}.{k}" if name else k for k in mod.state_dict()]
                for name, mod in self.module.named_modules()}


def middle_layer(module: torch.nn.Module) -> str:
    """The middle one, in registration order, of the modules that hold parameters themselves (the layer
    :mod:`parity.engine.sensitivity` puts its one-layer error in)."""
    layers = [n for n, m in module.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    if not layers:
        raise ValueError("the model has no layer with parameters to put a one-layer error in")
    return layers[len(layers) // 2]


class LayerErrorSide(TorchSide):
    """``side`` with an error confined to one layer's output: on its first call, module ``layer`` adds to each
    tensor it outputs ``size`` times that tensor's norm in a fixed random direction (seeded). What an error of a
    given size in one layer does to the outputs, for :mod:`parity.engine.sensitivity`. Its working copy is its own
    (the error's hook stays on it between computations; each computation replaces it)."""

    def __init__(self, side: TorchSide, layer: str, size: float, seed: int) -> None:
        super().__init__(side.module, side.state, "float64" if side.dtype == torch.float64 else "float32", side.loss)
        self.layer, self.size, self.seed = layer, size, seed
        self._handle = None

    def model(self, train: bool = False) -> torch.nn.Module:
        m = super().model(train)
        if self._handle is not None:
            self._handle.remove()
        calls = [0]
        rng = np.random.RandomState(self.seed)

        def bump(out):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                noise = torch.from_numpy(rng.standard_normal(tuple(out.shape))).to(out.dtype)
                return out + self.size * out.norm() / noise.norm() * noise
            if type(out) in (tuple, list):   # an LSTM's (output, (h, c))
                return type(out)(bump(o) for o in out)
            return out

        def hook(mod, args, out):
            calls[0] += 1
            return bump(out) if calls[0] == 1 else out
        self._handle = dict(m.named_modules())[self.layer].register_forward_hook(hook)
        return m
