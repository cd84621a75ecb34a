"""Every layer's output of a MindSpore cell, from ONE compiled GRAPH-mode forward (localisation in GRAPH mode).

MindSpore runs cell hooks only in PYNATIVE mode, so localisation there sees the layers run one by one, never what
GRAPH mode compiles and fuses. Here the whole port runs as one graph with the chosen layers' outputs tapped:

1. a PYNATIVE forward with hooks records, for each chosen cell, how often it is called and the shapes and nesting
   of its outputs (a cell may be called several times, with outputs of different shapes);
2. each chosen cell is swapped, in its parent (``Cell.insert_child_to_cell``: parameters and their names are
   untouched), for a :class:`Tap` that calls it and writes its flattened outputs into row ``k`` of a float32
   buffer ``Parameter`` (``k``: a call counter ``Parameter``). MindSpore's auto-monad keeps these side effects in
   program order, so call ``k`` of the cell lands in row ``k``;
3. a fresh wrapper cell (so that a graph compiled earlier for the net is not reused) runs the net in GRAPH mode,
   the buffers are read back and the original cells put back, whatever happens.

The net's own computations are unchanged: the taps only read their outputs. ``tests/test_parity_graph_localize.py``
checks that the final outputs with and without taps agree (ResNet50 and the transformer block).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, nn, ops

Path = Tuple[int, ...]
#: (cell name, call index) -> the call's flattened outputs
Taps = Dict[Tuple[str, int], List[np.ndarray]]


def output_paths(out, prefix: Path = ()) -> List[Path]:
    """Index paths of the tensors in a (nested) output, in :func:`parity.engine.loss.flatten` order."""
    if isinstance(out, (tuple, list)):
        return [p for i, o in enumerate(out) for p in output_paths(o, prefix + (i,))]
    return [prefix]


class Tap(nn.Cell):
    """``inner``, whose output tensors (at ``paths``) are also written to one buffer row per call.

    Args:
        inner: the cell tapped (kept as is: ``auto_prefix=False`` leaves its parameter names alone).
        paths: index paths of its output tensors (:func:`output_paths`).
        sizes: per call, per path, the number of elements (rows are padded to the largest).
    """

    def __init__(self, inner: nn.Cell, paths: Sequence[Path], sizes: Sequence[Sequence[int]]) -> None:
        super().__init__(auto_prefix=False)
        self.inner = inner
        self.paths = tuple(tuple(p) for p in paths)
        widths = [max(call[j] for call in sizes) for j in range(len(paths))]
        self.bufs = ParameterTuple(Parameter(ms.Tensor(np.zeros((len(sizes), w), np.float32)), name=f"_tap_{id(self)}_{j}",
                                             requires_grad=False) for j, w in enumerate(widths))
        self.widths = tuple(widths)
        self.count = Parameter(ms.Tensor(np.zeros(1, np.int32)), name=f"_tap_{id(self)}_count", requires_grad=False)

    def construct(self, *args):
        out = self.inner(*args)
        k = self.count * 1   # this call's row (read before the counter moves on)
        for j, path in enumerate(self.paths):
            t = out
            for i in path:
                t = t[i]
            flat = t.reshape(-1).astype(ms.float32)
            pad = self.widths[j] - flat.shape[0]
            if pad > 0:
                flat = ops.concat((flat, ops.zeros(pad, ms.float32)))
            ops.scatter_update(self.bufs[j], k, flat.reshape(1, -1))
        ops.assign_add(self.count, ops.ones(1, ms.int32))
        return out

    def rows(self, shapes: Sequence[Sequence[Tuple[int, ...]]]) -> List[List[np.ndarray]]:
        """Per call, its outputs cut from the buffers and reshaped to ``shapes[call][path]``."""
        bufs = [b.asnumpy() for b in self.bufs]
        return [[bufs[j][k, :int(np.prod(s))].reshape(s) for j, s in enumerate(call)] for k, call in enumerate(shapes)]


class _Forward(nn.Cell):
    """A fresh top-level cell around the net: its graph is compiled anew, with the taps in it."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, xs):
        # a tuple, not *xs: MindSpore 2.7.2 never frees a top-level cell whose construct takes *args once it has run
        # in GRAPH mode, and with it the net (see ms_transfer.mindspore_backend.frozen_trunk.TrainStep)
        return self.net(*xs)


def graph_taps(net: nn.Cell, inputs: Sequence[ms.Tensor], names: Sequence[str], set_train) -> Taps:
    """Outputs of every call of the cells ``names`` (``""`` is the net itself) in one GRAPH-mode forward of ``net``.

    ``set_train(cell)`` puts a cell in the wanted train / eval state (dropout off, see
    :mod:`parity.engine.comparison`). The MindSpore mode is GRAPH on return, whatever it was."""
    cells = dict(net.cells_and_names())
    structure: Dict[str, Tuple[List[Path], List[List[Tuple[int, ...]]]]] = {}
    ms.set_context(mode=ms.PYNATIVE_MODE)
    handles = []
    try:
        for name in names:
            if name == "":
                continue

            def hook(cell, args, out, name=name):
                paths = output_paths(out)
                shapes = structure.setdefault(name, (paths, []))[1]
                shapes.append([tuple(_at(out, p).shape) for p in paths])
            handles.append(cells[name].register_forward_hook(hook))
        set_train(net)
        net(*inputs)
    finally:
        for h in handles:
            h.remove()
        ms.set_context(mode=ms.GRAPH_MODE)
    taps, swapped = {}, []
    try:
        for name, (paths, shapes) in structure.items():
            parent_name, _, attr = name.rpartition(".")
            parent = cells[parent_name]
            tap = Tap(cells[name], paths, [[int(np.prod(s)) for s in call] for call in shapes])
            _swap(parent, attr, tap)
            swapped.append((parent, attr, cells[name]))
            taps[name] = (tap, shapes)
        forward = _Forward(net)
        set_train(forward)
        out = forward(ms.mutable(tuple(inputs)))   # mutable: a plain tuple is compiled as a constant
        result: Taps = {}
        for name, (tap, shapes) in taps.items():
            for k, outs in enumerate(tap.rows(shapes)):
                result[(name, k)] = outs
        if "" in names:
            result[("", 0)] = [_at(out, p).asnumpy() for p in output_paths(out)]
        return result
    finally:
        for parent, attr, cell in reversed(swapped):
            _swap(parent, attr, cell)


def _at(out, path: Path):
    for i in path:
        out = out[i]
    return out


def _swap(parent: nn.Cell, attr: str, cell: nn.Cell) -> None:
    """Replace the child ``attr`` of ``parent`` (containers keep a list of their cells: refreshed too)."""
    parent.insert_child_to_cell(attr, cell)
    if isinstance(parent, (nn.SequentialCell, nn.CellList)):
        parent.cell_list = list(parent._cells.values())


class _Calls(nn.Cell):
    """Each of ``cells`` called on its own slice of the inputs, all in one graph (single-step localisation)."""

    def __init__(self, cells: Sequence[nn.Cell], arity: Sequence[int]) -> None:
        super().__init__(auto_prefix=False)
        for i, cell in enumerate(cells):   # registered without renaming their parameters
            self.insert_child_to_cell(f"call{i}", cell)
        self.cell_list = list(cells)
        self.starts = tuple(int(s) for s in np.cumsum([0] + list(arity[:-1])))
        self.arity = tuple(arity)

    def construct(self, xs):   # a tuple, not *xs: see _Forward
        outs = ()
        for cell, start, n in zip(self.cell_list, self.starts, self.arity):
            outs = outs + (cell(*xs[start:start + n]),)
        return outs


def graph_calls(cells: Sequence[nn.Cell], args: Sequence[Sequence[ms.Tensor]], set_train) -> List[List[np.ndarray]]:
    """``cells[i](*args[i])`` for every i, compiled as ONE graph (GRAPH mode): each call's flattened outputs.
    ``set_train(cell)`` as for :func:`graph_taps`. The cells' parameters and names are untouched."""
    calls = _Calls(cells, [len(a) for a in args])
    set_train(calls)
    outs = calls(ms.mutable(tuple(t for a in args for t in a)))
    return [[_at(out, p).asnumpy() for p in output_paths(out)] for out in outs]
