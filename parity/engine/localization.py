"""Where does a port go wrong: the first layer, in execution order, whose output leaves its own noise floor.

Both models run one forward with hooks on every pair of matching layers (a torch module and the MindSpore cell
holding the same parameters, or a parameterless one of the same name; see
:func:`parity.engine.weight_map.module_pairs`). Each layer output is compared with the float64 reference under the
rule of :mod:`parity.engine.tolerance`, its floor
measured on the float32 samples at the same layer (the scale statistic's on the 4-ulp rounding samples, as for
the forward checks). Two modes, as PaDiff has them:

``accumulated``  each framework runs its own forward: the first failing layer is where the outputs part ways
                 (error carried in from upstream included).
``single-step``  every MindSpore layer is called alone on the *reference's* input to that layer (and the float32
                 samples likewise): a layer fails only for its own error, so a layer computing the wrong thing is
                 told apart from one that merely receives a wrong input.

Layers are ordered by when their call finishes (a block after its children), so the first failure is the
innermost layer at fault; a block fails alone when its children are clean but its own code (a residual add,
a missing activation between children) is wrong.

The port runs in one of two MindSpore modes (``ms_mode``), the torch side being the same:

``pynative``  hooks on the cells, layer by layer (MindSpore runs hooks only in PYNATIVE mode);
``graph``     the whole port compiled as ONE graph with every paired layer's output tapped
              (:mod:`parity.engine.graph_taps`): what runs is what GRAPH mode compiles and fuses; single-step
              mode compiles one graph of every layer called alone on the reference's input to it.

Layers that cannot be paired (a torch module or a MindSpore cell with no counterpart, e.g. the ``rnn`` and
``dropout_op`` cells MindSpore's ``nn.LSTM`` holds) and layers called on one side only are listed in the report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .loss import output_names
from .tolerance import JITTER, ROUNDING_JITTER, Floor, compare_to_floor, jitter_fn
from .weight_map import NameMatch, module_pairs

MODES = ("accumulated", "single-step")
#: MindSpore's execution modes, the port's run in either (see the module docstring); also what
#: :func:`~parity.engine.comparison.compare_in_modes` takes
MS_MODES = ("graph", "pynative")
#: clean layers listed before the first failing one (all are counted)
CLEAN_SHOWN = 3
#: unpaired / one-sided layers listed in the report (all are counted)
UNPAIRED_SHOWN = 6


@dataclass
class Localization:
    """The first diverging layer of one mode (``first`` is ``None`` when every compared layer is clean)."""

    mode: str
    bn_train: bool
    first: Optional[str] = None        # torch module name ("" is the model's own forward), with the call index
    first_ms: Optional[str] = None     # the MindSpore cell
    ratio: float = 0.0                 # its error / noise floor (see parity.engine.tolerance; fails above K)
    clean_before: int = 0              # layers compared before it, all clean
    clean_tail: List[str] = field(default_factory=list)  # the last few of them
    compared: int = 0                  # layers compared in all
    ms_mode: str = "pynative"          # how the port ran (MS_MODES)
    unpaired_torch: List[str] = field(default_factory=list)  # torch modules with no MindSpore counterpart
    unpaired_ms: List[str] = field(default_factory=list)     # MindSpore cells with no torch counterpart
    one_sided: List[str] = field(default_factory=list)       # paired layers called on one side only (not compared)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        where = "eval-mode" if not self.bn_train else "train-mode"
        ran = ("GRAPH: one compiled graph, layer outputs tapped" if self.ms_mode == "graph" else "PYNATIVE: hooks")
        if self.mode == "single-step" and self.ms_mode == "graph":
            ran = "GRAPH: each layer on the reference input, all in one compiled graph"
        if self.first is None:
            line = (f"{self.mode:<12} ({where} forward, {ran}): all {self.compared} compared layers within their "
                    "noise floor")
        else:
            tail = f" (... {', '.join(self.clean_tail)})" if self.clean_tail else ""
            line = (f"{self.mode:<12} ({where} forward, {ran}): first divergence at {_label(self.first)} "
                    f"[MindSpore: {_label(self.first_ms)}], ratio {self.ratio:.3g}; "
                    f"{self.clean_before} layers before it clean{tail}")
        notes = [f"{what}: {_head(names)}" for what, names in
                 (("not paired, torch", self.unpaired_torch), ("not paired, MindSpore", self.unpaired_ms),
                  ("called on one side only", self.one_sided)) if names]
        return line + "".join(f"\n{'':<14}{note}" for note in notes)


class CallRecorder:
    """What a localisation forward's hooks record: ``(layer name, call index, inputs, outputs)`` in the order the
    calls finished (a layer used twice, like torchvision's ``relu``, gets call indices 0 and 1)."""

    def __init__(self) -> None:
        self.records: List[Tuple[str, int, List[np.ndarray], List[np.ndarray]]] = []
        self._calls: Dict[str, int] = {}

    def add(self, name: str, inputs: List[np.ndarray], outputs: List[np.ndarray]) -> None:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        self.records.append((name, k, inputs, outputs))


def _head(names: Sequence[str]) -> str:
    more = f" ... (+{len(names) - UNPAIRED_SHOWN} more)" if len(names) > UNPAIRED_SHOWN else ""
    return ", ".join(_label(n) for n in names[:UNPAIRED_SHOWN]) + more


def _label(name: Optional[str]) -> str:
    return "(the model's own forward)" if name in ("", "#0") else str(name)


def _key(name: str, call: int) -> str:
    return f"{name}#{call}" if call else name


def localize(reference, floors: Sequence[Tuple[object, Sequence[np.ndarray]]],
             rounding: Sequence[Tuple[object, Sequence[np.ndarray]]], ms_side, xs: Sequence[np.ndarray],
             match: NameMatch, bn_train: bool = False, module_map: Optional[Mapping[str, str]] = None,
             modes: Sequence[str] = MODES, seed: int = 0, ms_mode: str = "pynative") -> List[Localization]:
    """First diverging layer in each of ``modes``, the port run in MindSpore mode ``ms_mode`` (:data:`MS_MODES`; the
    context's mode is restored afterwards); ``reference`` / ``floors`` / ``rounding`` / ``ms_side`` are the
    engines of :func:`~parity.engine.comparison.compare_models` (``(float32 torch side, its jittered inputs)`` pairs:
    128-ulp samples for the error floor, 4-ulp rounding samples for the scale statistic, as for its forward
    checks)."""
    import mindspore as ms

    from ms_transfer.mindspore_backend.context import MODES as MS_MODE_CONSTANTS   # the one name -> constant table
    if ms_mode not in MS_MODES:
        raise ValueError(f"unknown MindSpore mode {ms_mode!r} for localisation; choose from {', '.join(MS_MODES)}")
    torch_modules, ms_cells = reference.module_params(), ms_side.module_params()
    pairs = module_pairs(torch_modules, ms_cells, match, module_map)
    torch_of = {m: t for t, m in pairs.items()}
    names = list(pairs)
    unpaired = ([n for n in torch_modules if n not in pairs], [n for n in ms_cells if n not in torch_of])
    previous = ms.get_context("mode")
    ms.set_context(mode=MS_MODE_CONSTANTS[ms_mode])
    try:
        ref = reference.trace(xs, bn_train, names)
        results = []
        for mode in modes:
            if mode == "accumulated":
                ms_out = {(torch_of[n], k): outs
                          for n, k, _, outs in ms_side.trace(xs, bn_train, list(torch_of), False)}
                samples, scale_samples = ([{(n, k): outs for n, k, _, outs in side.trace(x, bn_train, names, False)}
                                           for side, x in engines] for engines in (floors, rounding))
            elif mode == "single-step":
                # a cell that cannot even run on the reference input has failed (None)
                ms_out = dict(zip([(n, k) for n, k, _, _ in ref],
                                  ms_side.run_cells([(pairs[n], ins) for n, _, ins, _ in ref], bn_train)))
                samples, scale_samples = ([_single_steps(side, ref, bn_train, jitter_fn(seed + 200 + i, amount))
                                           for i, (side, _) in enumerate(engines)]
                                          for engines, amount in ((floors, JITTER), (rounding, ROUNDING_JITTER)))
            else:
                raise ValueError(f"unknown localisation mode {mode!r}; choose from {', '.join(MODES)}")
            loc = _first_divergence(mode, bn_train, ref, ms_out, samples, scale_samples, pairs)
            called = {(n, k) for n, k, _, _ in ref}
            loc.one_sided += [_key(pairs[n], k) + " (MindSpore)" for n, k in ms_out if (n, k) not in called]
            loc.ms_mode, (loc.unpaired_torch, loc.unpaired_ms) = ms_mode, unpaired
            results.append(loc)
        return results
    finally:
        ms.set_context(mode=previous)
        ms_side.reset()


def _single_steps(side, ref, bn_train: bool, jitter) -> Dict[Tuple[str, int], List[np.ndarray]]:
    """Every layer of a float32 sample called alone on the reference's (jittered) input to it."""
    run = side.module_runner(bn_train)
    # float inputs in the sample's precision, jittered; integer inputs (token ids) as they are
    return {(n, k): run(n, [jitter(a.astype(np.float32)) if np.issubdtype(a.dtype, np.floating) else a for a in ins])
            for n, k, ins, _ in ref}


def _first_divergence(mode: str, bn_train: bool, ref, ms_out: Mapping, samples: Sequence[Mapping],
                      scale_samples: Sequence[Mapping], pairs: Mapping[str, str]) -> Localization:
    loc = Localization(mode, bn_train)
    clean: List[str] = []
    for n, k, _, outs in ref:
        if (n, k) not in ms_out or any((n, k) not in s for s in list(samples) + list(scale_samples)):
            loc.one_sided.append(_key(n, k))
            continue   # called on one side only (e.g. an activation the port fuses or forgets): its block decides
        mine = ms_out[(n, k)]
        ref_d = dict(zip(output_names(len(outs)), outs))
        if mine is None or len(mine) != len(outs):
            result = None
        else:
            floor = Floor.measure(ref_d, [dict(zip(output_names(len(s[(n, k)])), s[(n, k)])) for s in samples],
                                  [dict(zip(output_names(len(s[(n, k)])), s[(n, k)])) for s in scale_samples])
            result = compare_to_floor(_key(n, k), dict(zip(output_names(len(mine)), mine)), ref_d, floor,
                                      details=False)
        loc.compared += 1
        if result is None or not result.passed:
            loc.first, loc.first_ms = _key(n, k), _key(pairs[n], k)
            loc.ratio = float("inf") if result is None else max(result.ratio, result.scale_ratio)
            loc.clean_before, loc.clean_tail = len(clean), clean[-CLEAN_SHOWN:]
            return loc
        clean.append(_key(n, k))
    return loc


def format_localization(locs: Sequence[Localization]) -> str:
    """One line per mode."""
    return "\n".join(["where the port diverges:"] + ["  " + loc.describe() for loc in locs])
