"""Parity of any torch / MindSpore model pair: ``parity.compare_models(torch_module, ms_cell, inputs, ...)``.

The port's weights are copied from the torch module through a name map (:mod:`parity.engine.weight_map`), then
the same computations run on three kinds of engine -- torch float64 (the reference), ``FLOOR_SAMPLES`` torch
float32 samples with weights and inputs jittered (the noise floor, see :mod:`parity.engine.tolerance`) and the
MindSpore cell -- and every result is compared with the tolerance rule of :mod:`parity.engine.tolerance`:

``eval_logits``     eval-mode outputs (every output of the model)
``train_forward``   train-mode outputs, the loss, and every float buffer after the forward (BN running statistics)
``grads_train_bn``  gradients of every parameter, train-mode BN (batch statistics)
``grads_eval_bn``   the same with the model in eval mode (running statistics, no dropout)
``optimizer_step``  ``opt_steps`` updates of momentum SGD with weight decay on shared synthetic gradients

Dropout (``DROPOUT_NOTE``): the train-mode checks run with every dropout layer as the identity, in all three
engines. The frameworks draw different random masks, so with dropout active the float32 samples would disagree by
O(1) as well and the floor would swallow any bug (measured on the Fashion-MNIST network: train-output floor 0.61, every
injected bug inside it). The eval-mode checks cover dropout's inference path; ``report.names["dropout_off"]``
lists the layers. Dropout's train-mode behaviour (drop probability, ``1 / (1 - p)`` scaling) has its own row,
``dropout (train mode)``: each port layer run alone against torch's ``p`` (:mod:`parity.engine.dropout`).

The loss is cross-entropy on the first output when ``targets`` are given, otherwise a fixed random projection of
every output (:mod:`parity.engine.loss`). Settings are one :class:`CompareOptions` (keyword arguments of
:func:`compare_models` fill it). Nothing here knows any architecture: the ResNet / VGG suite
(``python -m parity``, :mod:`parity.suite`) is one caller.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .dropout import compare_dropout, ms_dropout_stats, torch_dropout_ps
from .localization import MS_MODES
from .localization import localize as run_localize
from .loss import CROSS_ENTROPY, LOSSES, PROJECTION, projection_weights
from .memory import Spilled, as_bytes, read_fully, release_freed_memory, spill, temporary_file
from .report import ParityReport
from .sensitivity import sensitivity as measure_sensitivity
from .tolerance import FLOOR_SAMPLES, JITTER, OUTPUT_JITTER, ROUNDING_JITTER, FloorBuilder, JitteredState, \
    as_named, compare_to_floor, failed
from .weight_map import NameMap, NameMapError, NameMatch, match_names, module_pairs

#: check groups, in the order they run and print
CHECKS = ("eval_logits", "train_forward", "grads_train_bn", "grads_eval_bn", "optimizer_step")
#: forward-only groups (L2 floor from the one-ulp ``output_samples``, scale floor from the rounding samples; see
#: parity/engine/tolerance.py)
FORWARD_CHECKS = ("eval_logits", "train_forward")
#: row labels of each check group (train_forward's buffers row appears only when the model has float buffers)
LABELS = {"eval_logits": ("eval outputs",), "train_forward": ("train outputs", "train loss", "BN running stats"),
          "grads_train_bn": ("grads (train-mode BN)",), "grads_eval_bn": ("grads (eval-mode BN)",),
          "optimizer_step": ("param update",)}

Inputs = Union[np.ndarray, Sequence[np.ndarray]]


def port_weights(torch_state: Mapping[str, np.ndarray], ms_params: Mapping[str, Sequence[int]],
                 name_map: NameMap = None) -> Tuple[Dict[str, np.ndarray], NameMatch]:
    """The torch weights renamed for the MindSpore cell (``ms_params``: name -> shape). Raises
    :class:`~parity.engine.weight_map.NameMapError` naming every unmatched or shape-mismatched tensor."""
    shapes = {k: np.shape(v) for k, v in torch_state.items()}
    match = match_names(shapes, list(ms_params), name_map)
    match.raise_if_unmatched()
    bad = [f"{t} {shapes[t]} -> {m} {tuple(ms_params[m])}" for t, m in match.torch_to_ms.items()
           if tuple(shapes[t]) != tuple(ms_params[m])]
    if bad:
        raise NameMapError(f"shapes differ after the name map ({match.rule} rules): {'; '.join(bad[:4])}"
                           f"{' ...' if len(bad) > 4 else ''}. Check the name map, or the layer's layout "
                           "(torch Linear and MindSpore Dense are both (out, in); conv weights are both OIHW)")
    return {m: np.asarray(torch_state[t], np.float32) for t, m in match.torch_to_ms.items()}, match


def _as_inputs(inputs: Inputs) -> List[np.ndarray]:
    return [np.asarray(inputs)] if isinstance(inputs, np.ndarray) else [np.asarray(x) for x in inputs]


@dataclass(frozen=True)
class CompareOptions:
    """How :func:`compare_models` compares (every default in this one place).

    Attributes:
        name_map: ``None`` (the default rules: generic, then registered ones), ``{torch_name: ms_name}`` or a
            callable (see :mod:`parity.engine.weight_map`).
        loss: ``"cross_entropy"`` or ``"projection"`` (default: cross-entropy when targets are given).
        checks: the check groups to run (:data:`CHECKS`, in that order).
        ms_state: the port's weights (MindSpore names) instead of the renamed torch weights (e.g. as a converter
            wrote them); the map still decides which torch tensor each one is compared with.
        seed: seeds the floor samples' jitter, the projection loss and the optimizer check's gradients.
        lr, momentum, weight_decay, opt_steps: the optimizer check (momentum SGD on shared gradients).
        sensitivity: also measure the smallest error each check detects (:mod:`parity.engine.sensitivity`).
        localize: ``True`` always, ``"on_failure"`` when a forward check fails: find the first layer that diverges
            (accumulated and single-step; see :mod:`parity.engine.localization`).
        localize_mode: the MindSpore mode localisation runs the port in: ``"pynative"`` (hooks, layer by layer) or
            ``"graph"`` (one compiled graph with every layer's output tapped; single-step compiles each layer).
        module_map: torch module -> MindSpore cell names for parameterless layers named differently (layers with
            parameters pair through ``name_map``; same-named ones pair by name).
        mask_relus: the gradient checks' scale statistic against a reference keeping the port's ReLU masks
            (``nn.ReLU`` modules paired by name; see :mod:`parity.engine.tolerance`).
        config: describes the run in the report (a dataclass or a dict).
        log: progress messages.
    """

    name_map: NameMap = None
    loss: Optional[str] = None
    checks: Sequence[str] = CHECKS
    ms_state: Optional[Mapping[str, np.ndarray]] = None
    seed: int = 0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    opt_steps: int = 3       # >1 so that the momentum buffer is exercised
    sensitivity: bool = False
    localize: Union[bool, str] = False
    localize_mode: str = "pynative"
    module_map: Optional[Mapping[str, str]] = None
    mask_relus: bool = True
    config: Any = None
    log: Callable[[str], None] = lambda s: None

    def with_overrides(self, **overrides) -> "CompareOptions":
        """A copy with ``overrides`` (keyword arguments of :func:`compare_models`); an unknown name is an error
        that lists the known ones."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown comparison option(s) {', '.join(unknown)}; CompareOptions has "
                            f"{', '.join(f.name for f in fields(self))}")
        return replace(self, **overrides) if overrides else self


def compare_models(torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray] = None,
                   options: Optional[CompareOptions] = None, **overrides) -> ParityReport:
    """Compare a MindSpore port with its torch original; see the module docstring for the checks.

    Args:
        torch_module: the original (any ``torch.nn.Module``; its current weights are the ones compared).
        ms_cell: the port (any ``mindspore.nn.Cell`` with the same parameters); it receives the torch weights.
        inputs: one array or a sequence of arrays, one per positional input (float or integer).
        targets: integer class targets for a cross-entropy loss on the first output (default: projection loss).
        options: a :class:`CompareOptions` (default: its defaults).
        overrides: any field of :class:`CompareOptions` as a keyword (``name_map=...``, ``checks=...``), applied
            over ``options``.
    Returns:
        a :class:`~parity.engine.report.ParityReport` (``.passed``, ``.results``, ``format_table(report.results)``).
    """
    o = (options or CompareOptions()).with_overrides(**overrides)
    return _compare(torch_module, ms_cell, inputs, targets, o, [None])[0]


def compare_in_modes(torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray] = None,
                     modes: Sequence[str] = MS_MODES, options: Optional[CompareOptions] = None,
                     **overrides) -> List[ParityReport]:
    """:func:`compare_models` in each of MindSpore's execution ``modes`` (``"graph"``, ``"pynative"``): one report
    per mode, each with the rows, numbers and verdicts :func:`compare_models` gives in that mode, its localisation run
    in that mode and its ``config`` given that mode (:func:`_with_mode`); the mode found is restored afterwards.

    The torch side -- the float64 reference and every float32 floor sample -- does not depend on MindSpore's mode,
    nor do the port's ReLU masks (always taken in PYNATIVE mode, where hooks run), so each check computes them once
    for every mode instead of once per mode: they are most of a comparison's time (ResNet50, 224 px: ~90%). Their
    seconds are counted in the first mode's report."""
    import mindspore as ms

    o = (options or CompareOptions()).with_overrides(**overrides)
    unknown = [m for m in modes if m not in MS_MODES]
    if unknown or not modes:
        raise ValueError(f"modes {list(modes)}: choose one or more of {', '.join(MS_MODES)}")
    previous = ms.get_context("mode")
    try:
        return _compare(torch_module, ms_cell, inputs, targets, o, list(modes))
    finally:
        ms.set_context(mode=previous)


def _enter_mode(mode: Optional[str]) -> None:
    """MindSpore's execution mode ``mode`` (``None``: leave it as it is)."""
    if mode is not None:
        import mindspore as ms

        from ms_transfer.mindspore_backend.context import MODES   # the one name -> MindSpore constant table
        ms.set_context(mode=MODES[mode])


def _with_mode(config: Any, mode: Optional[str]) -> Any:
    """A run's ``config`` for one mode of :func:`compare_in_modes`: a dataclass with a ``mode`` field (and a
    ``localize_mode`` one) gets both replaced, a dict its ``"mode"`` key; anything else is kept as it is."""
    if mode is None:
        return config
    if isinstance(config, dict):
        return {**config, "mode": mode}
    names = {f.name for f in fields(config)} if hasattr(config, "__dataclass_fields__") else set()
    if "mode" in names:
        return replace(config, mode=mode, **({"localize_mode": mode} if "localize_mode" in names else {}))
    return config


def _compare(torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray], o: CompareOptions,
             modes: List[Optional[str]]) -> List[ParityReport]:
    """:func:`compare_models` (``modes == [None]``: the current mode) and :func:`compare_in_modes`."""
    unknown = [c for c in o.checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    t0 = time.perf_counter()
    c = prepare(torch_module, ms_cell, inputs, targets, o)
    from .torch_side import dropout_names  # torch only when comparing live (bundles are checked without it)
    names = {"rule": c.match.rule, "matched": len(c.match.torch_to_ms),
             "ignored_torch": [k for k in c.torch_state if k not in c.match.torch_to_ms],
             "dropout_off": dropout_names(torch_module)}
    runs = [(mode, ParityReport(_with_mode(o.config, mode), names=dict(names))) for mode in modes]
    runs[0][1].seconds["setup"] = time.perf_counter() - t0
    for check in o.checks:
        _run_check(c, check, o, runs)
    for mode, report in runs:
        t = time.perf_counter()
        _enter_mode(mode)
        _dropout_row(report, torch_module, ms_cell)
        _localize(c, o, report, o.localize_mode if mode is None else mode)
        report.seconds["total"] = sum(v for k, v in report.seconds.items() if not k.endswith("(mindspore)")
                                      and k not in ("dropout", "localize")) + time.perf_counter() - t
    c.ms_side.release_graphs()   # what the dropout row and localisation compiled, and the weights kept with it
    return [report for _, report in runs]


def _localize(c: "Comparison", o: CompareOptions, report: ParityReport, ms_mode: str) -> None:
    """The first diverging layer into ``report`` when ``o.localize`` asks for it (a forward check failed, or always)."""
    forward_failed = any(not r.passed for r in report.results if r.check in FORWARD_ROWS)
    if o.localize is True or (o.localize == "on_failure" and forward_failed):
        t = time.perf_counter()
        o.log("localising the first divergence ...")
        # the eval-mode forward unless only train-mode rows failed
        bn_train = not any(not r.passed for r in report.results if r.check == "eval outputs") and forward_failed
        try:
            report.localization = run_localize(c.reference, c.floors, c.rounding, c.ms_side, c.xs, c.match,
                                               bn_train=bn_train, module_map=o.module_map, seed=o.seed,
                                               ms_mode=ms_mode)
        except Exception as exc:  # a diagnosis after the verdict: it may fail, the verdict stands as computed
            report.localization_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        report.seconds["localize"] = time.perf_counter() - t


def _run_check(c: "Comparison", check: str, o: CompareOptions, runs: Sequence[Tuple[Optional[str], ParityReport]]
               ) -> None:
    """One check group: the torch reference and floor once, then the port in each run's mode, each compared into its
    run's report (and sensitivity) and dropped before the next mode runs. A function of its own so that its arrays
    (a ResNet50's float64 gradients and their masked reference: 0.4 GB) are freed before the next check starts.

    The reference comes first so that one port's results are held at a time: with both modes, the first mode's
    gradients or updates were held through the float64 reference and the second port (ResNet50, 224 px: 0.1 GB
    at the peak; BENCHMARKS.md "Parity cost")."""
    o.log(f"running {check} ...")
    t = time.perf_counter()
    masks, mask_error = None, None
    if o.mask_relus and check in MASKED_CHECKS:   # the same in every mode: taken in PYNATIVE
        try:
            masks = c.port_masks(check)
        except Exception as exc:   # a port whose forward fails: its rows fail when it runs (run_port says why)
            mask_error = exc
        c.ms_side.release_graphs()
        release_freed_memory()
    mask_seconds = time.perf_counter() - t
    t = time.perf_counter()
    # the torch working copy goes while the port runs (VGG16: 0.55-1.1 GB; a deep copy, ~0.2 s, makes it again),
    # and the references wait in a temporary file, read back for each mode's comparison: VGG16's float64 gradients
    # and their masked reference are 2.1 GiB, and the port's backward beside them had become the comparison's peak
    # (6.04 GiB; BENCHMARKS.md "Parity cost")
    waiting, floors = c.stored_floors(check, masks)
    probes = c.error_probes(check, waiting.load()[0], o.seed) if o.sensitivity and check in FORWARD_CHECKS else {}
    c.reference.working.release()
    release_freed_memory()
    shared = time.perf_counter() - t
    for i, (mode, report) in enumerate(runs):
        t = time.perf_counter()
        _enter_mode(mode)
        ms, error = run_port(c.runners[check], c.ms_side, c.xs)
        c.ms_side.release_graphs()
        release_freed_memory()
        if ms is not None and mask_error is not None:
            raise mask_error   # the port runs, yet its masks could not be taken: the engine's failure, not the port's
        report.seconds[f"{check} (mindspore)"] = time.perf_counter() - t + (mask_seconds if i == 0 else 0.0)
        t = time.perf_counter()
        ref, scale_ref = waiting.load()
        for name in ref:
            if ms is None:
                report.results.append(failed(name, error))
                continue
            sref = None if scale_ref is None else scale_ref[name]
            report.results.append(compare_to_floor(name, ms[name], ref[name], floors[name], scale_ref=sref))
            if o.sensitivity:
                report.sensitivity.append(measure_sensitivity(name, ms[name], ref[name], floors[name], sref,
                                                              *probes.get(name, ())))
        del ms, ref, scale_ref
        release_freed_memory()
        report.seconds[check] = (report.seconds[f"{check} (mindspore)"] + (shared if i == 0 else 0.0)
                                 + time.perf_counter() - t)


def _dropout_row(report: ParityReport, torch_module, ms_cell) -> None:
    """The dropout check's row (:mod:`parity.engine.dropout`), when either model has dropout layers."""
    t = time.perf_counter()
    torch_ps, ms_stats = torch_dropout_ps(torch_module), ms_dropout_stats(ms_cell)
    if torch_ps or ms_stats:
        report.results.append(compare_dropout(torch_ps, ms_stats))
        report.seconds["dropout"] = time.perf_counter() - t


@dataclass
class Comparison:
    """What every check of one comparison runs on: the engines (torch float64 reference, float32 floor, rounding
    and output samples with their jittered inputs, the MindSpore side), the inputs, the loss arguments and the
    optimizer check's gradients. Built by :func:`prepare`; reference bundles store what it computes."""

    match: NameMatch
    torch_state: Dict[str, np.ndarray]
    ms_state: Dict[str, np.ndarray]
    trainable: List[str]              # torch names of the trainable parameters, in the module's order
    reference: Any
    floors: List[Tuple[Any, List[np.ndarray]]]
    rounding: List[Tuple[Any, List[np.ndarray]]]
    ms_side: Any
    xs: List[np.ndarray]
    loss: str
    loss_args: List[np.ndarray]
    step_grads: "SyntheticGrads"
    runners: Dict[str, Callable]
    #: the forward checks' samples, jittered by OUTPUT_JITTER (see parity/engine/tolerance.py)
    output_samples: List[Tuple[Any, List[np.ndarray]]] = field(default_factory=list)

    def _reference(self, check: str, run: Optional[Callable] = None):
        """The float64 reference rows of ``check`` (``run``: another runner, the masked one)."""
        rows = (run or self.runners[check])(self.reference, self.xs)
        # each float64 computation frees its activations before the next one starts: trimmed between them too, not
        # only after each sample (ResNet50, 224 px, GRAPH: peak 3.21 -> 2.96 GiB, the same time; BENCHMARKS.md)
        release_freed_memory()
        return rows

    def _floor_samples(self, check: str) -> Iterator[Dict[str, Any]]:
        """The floor samples' rows, one at a time: the forward checks take their L2 floor from the one-ulp output
        samples, the others from the floor samples (see :mod:`parity.engine.tolerance`)."""
        for engine, x in (self.output_samples if check in FORWARD_CHECKS else self.floors):
            yield self.runners[check](engine, x)

    def _rounding_samples(self, run: Callable) -> Iterator[Dict[str, Any]]:
        """The rounding samples' rows, one at a time (the scale statistic's samples where it has its own)."""
        for engine, x in self.rounding:
            yield run(engine, x)

    def _masked(self, check: str, masks: Optional[Mapping[str, Sequence[np.ndarray]]]) -> Optional[Callable]:
        """The runner keeping the port's ReLU ``masks`` when ``check`` is a gradient check given some, else None."""
        return masked_runner(check, self.loss_args, masks) if masks and check in MASKED_CHECKS else None

    def reference_rows(self, check: str, masks: Optional[Mapping[str, Sequence[np.ndarray]]] = None):
        """``(reference rows, floor-sample rows, scale-sample rows, scale reference rows or None)`` of one check
        group, every sample kept. The scale statistic has samples of its own (the rounding samples) in the forward
        checks and, against a reference keeping the port's ReLU ``masks``, in the gradient checks; the other checks
        measure it on the floor samples (see :mod:`parity.engine.tolerance`)."""
        masked = self._masked(check, masks)
        ref = self._reference(check)
        floor = list(self._floor_samples(check))
        if masked is None and check not in FORWARD_CHECKS:
            return ref, floor, floor, None
        scale_ref = None if masked is None else self._reference(check, masked)
        return ref, floor, list(self._rounding_samples(masked or self.runners[check])), scale_ref

    def reference_floors(self, check: str, masks: Optional[Mapping[str, Sequence[np.ndarray]]] = None):
        """``(reference rows, {row: Floor}, scale reference rows or None)``, as :meth:`reference_rows` measures
        them, each sample folded into its row's :class:`~parity.engine.tolerance.FloorBuilder` as soon as it is
        computed, so at most one sample is held at a time (what a 133M-parameter VGG needs; the floors are the same
        numbers)."""
        stored, floors = self.stored_floors(check, masks)
        ref, scale_ref = stored.load()
        return ref, floors, scale_ref

    def stored_floors(self, check: str, masks: Optional[Mapping[str, Sequence[np.ndarray]]] = None
                      ) -> Tuple[Spilled, Dict[str, Any]]:
        """:meth:`reference_floors` with the references left in a temporary file
        (:func:`~parity.engine.memory.spill`; ``load()`` gives ``(reference rows, scale reference rows or None)``),
        for a caller that runs the port before it compares: the port needs nothing of them.

        Each float64 reference goes to the file as soon as it is computed (gradients as backward computes them,
        :meth:`TorchSide.gradients_to_file`) and is mapped back while its samples are measured: with masks, the
        unmasked reference waits there while the masked one is computed (VGG16's float64 gradients are 1.03 GiB, and
        the masked reference's computation -- the float64 working copy and its gradients -- beside them had been the
        peak of the whole comparison: 6.89 GiB; BENCHMARKS.md "Parity cost").
        Both references come before the float32 samples, so the float64 working copy is made once per check and
        dropped before them."""
        masked = self._masked(check, masks)
        separate = masked is not None or check in FORWARD_CHECKS
        with self.reference.gradients_to_file():   # each gradient goes to the file as backward computes it
            stored_ref = spill(self._reference(check))
            stored_scale = None if masked is None else spill(self._reference(check, masked))
        # the float64 working copy goes before the samples' float32 copy is made (its gradients went to the file
        # as backward computed them): VGG16's 2.1 GiB had sat beside the reference mapped back (5.87 GiB, the peak)
        self.reference.working.release()
        release_freed_memory()

        def fold(builders, samples, add):
            for rows in samples:
                for row, builder in builders.items():
                    add(builder, rows[row])
                del rows
                release_freed_memory()   # what the sample's computation freed (parity/engine/memory.py)

        ref = stored_ref.load()
        builders = {row: FloorBuilder(ref[row], resolution=row in OUTPUT_ROWS) for row in ref}
        fold(builders, self._floor_samples(check), lambda b, a: b.add(a, scale=not separate))
        if masked is not None:
            for builder in builders.values():
                builder.drop_reference()
            del ref   # unmapped: the masked reference's samples need nothing of it
            scale_ref = stored_scale.load()
            for row, builder in builders.items():
                builder.scale_against(scale_ref[row])
            fold(builders, self._rounding_samples(masked), FloorBuilder.add_scale)
        elif separate:
            fold(builders, self._rounding_samples(self.runners[check]), FloorBuilder.add_scale)
        floors = {row: b.floor() for row, b in builders.items()}
        return spill((stored_ref, stored_scale)), floors

    def error_probes(self, check: str, ref: Mapping[str, Any], seed: int) -> Dict[str, Tuple[Any, Tuple[str, Any]]]:
        """A forward check's rows -> ``(the unjittered float32 torch model's arrays, (layer, the change an error in
        that layer's output makes))``, for :mod:`parity.engine.sensitivity`; ``{}`` for the other checks."""
        if check not in FORWARD_CHECKS:
            return {}
        from .torch_side import LayerErrorSide, TorchSide, middle_layer

        module = self.reference.module
        plain = self.runners[check](TorchSide(module, self.torch_state, "float32", self.loss, self.reference.working),
                                    self.xs)
        layer = middle_layer(module)
        # 1e-6 of the layer's output: linear in float64 (what the port's perturbed arrays are built from)
        bumped = self.runners[check](LayerErrorSide(self.reference, layer, 1e-6, seed), self.xs)
        return {row: (plain[row], (layer, {n: np.asarray(b, np.float64) - as_named(ref[row])[n]
                                           for n, b in as_named(bumped[row]).items()})) for row in ref}

    def port_masks(self, check: str) -> Optional[Dict[str, List[np.ndarray]]]:
        """The port's ReLU masks for a gradient check (torch module name -> one mask per call), or None (not a
        gradient check, or no ReLUs matched)."""
        if check not in MASKED_CHECKS:
            return None
        pairs = module_pairs(self.reference.module_params(), self.ms_side.module_params(), self.match)
        ms_relus = set(self.ms_side.relu_names())
        relus = {t: m for t, m in pairs.items() if t in set(self.reference.relu_names()) and m in ms_relus}
        if not relus:
            return None
        ms_masks = self.ms_side.relu_masks(self.xs, check == "grads_train_bn", list(relus.values()))
        return {t: ms_masks[m] for t, m in relus.items() if m in ms_masks} or None


def prepare(torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray] = None,
            options: Optional[CompareOptions] = None, *, grads_generator: str = "sfc64", **overrides) -> Comparison:
    """Match names, port the weights and build the engines (arguments as :func:`compare_models`;
    ``grads_generator``: the optimizer check's, see :class:`SyntheticGrads`)."""
    o = (options or CompareOptions()).with_overrides(**overrides)
    loss = o.loss or (CROSS_ENTROPY if targets is not None else PROJECTION)
    if loss not in LOSSES or (loss == CROSS_ENTROPY) != (targets is not None):
        raise ValueError(f"loss={loss!r} with targets={'given' if targets is not None else 'None'}: "
                         f"cross_entropy needs integer targets, projection takes none")
    from .mindspore_side import MindSporeSide
    from .torch_side import TorchSide, WorkingCopy, numpy_state

    xs = _as_inputs(inputs)
    # views of the module's tensors, not copies: every engine computes on its own working copy and leaves the module
    # as it was, so they stay the module's weights (a VGG16's 0.55 GB less from set-up to the end)
    torch_state = {k: (v.astype(np.float32, copy=False) if np.issubdtype(v.dtype, np.floating) else v)
                   for k, v in numpy_state(torch_module, copy=False).items()}
    ms_params = {p.name: p.shape for p in ms_cell.get_parameters()}
    ported, match = port_weights(torch_state, ms_params, o.name_map)
    trainable = {p.name for p in ms_cell.trainable_params()}
    torch_trainable = [k for k, _ in torch_module.named_parameters()]
    wrong = sorted(t for t, m in match.torch_to_ms.items() if (t in torch_trainable) != (m in trainable))
    if wrong:
        raise NameMapError(f"a parameter on one side is a buffer / frozen on the other: {wrong[:5]} (compare a "
                           "trainable torch parameter with a trainable MindSpore one)")
    working = WorkingCopy(torch_module)   # one copy of the module for every engine below
    reference = TorchSide(torch_module, torch_state, "float64", loss, working)
    floors, rounding, outputs = [], [], []
    for i in range(FLOOR_SAMPLES):
        jittered = JitteredState(torch_state, o.seed + 100 + i, JITTER)
        for engines, amount in ((floors, JITTER), (rounding, ROUNDING_JITTER), (outputs, OUTPUT_JITTER)):
            state = jittered.with_amount(amount)
            engines.append((TorchSide(torch_module, state, "float32", loss, working), state.jitter_after(xs)))
    ms_state = dict(o.ms_state if o.ms_state is not None else ported)
    ms_side = MindSporeSide(ms_cell, ms_state, match.ms_to_torch, loss)
    if loss == CROSS_ENTROPY:
        loss_args = [np.asarray(targets)]
    else:
        loss_args = projection_weights([out.shape for out in reference.eval_outputs(xs).values()], o.seed)
    step_grads = synthetic_grads({k: torch_state[k] for k in torch_trainable}, o.opt_steps, o.seed, grads_generator)
    return Comparison(match, torch_state, ms_state, torch_trainable, reference, floors, rounding, ms_side, xs, loss,
                      loss_args, step_grads, make_runners(loss_args, step_grads, o.lr, o.momentum, o.weight_decay),
                      outputs)


#: gradient checks whose scale statistic uses the port's ReLU masks (see :mod:`parity.engine.tolerance`)
MASKED_CHECKS = ("grads_train_bn", "grads_eval_bn")


def masked_runner(check: str, loss_args: Sequence[np.ndarray], masks: Mapping[str, Sequence[np.ndarray]]
                  ) -> Callable:
    """A gradient check's runner for torch sides whose ReLUs keep the port's masks."""
    label = LABELS[check][0]
    return lambda side, xs: {label: side.grads(xs, loss_args, bn_train=check == "grads_train_bn", masks=masks)}


#: the generators of :class:`SyntheticGrads`: SFC64's float32 normals (the default) took 0.21 s for ResNet50's 25.6M
#: parameters where ``RandomState``'s float64 ones (MT19937: the reference bundles', a stream numpy keeps stable)
#: took 1.30 s, for each of the check's steps (AMD EPYC)
GRADS_GENERATORS = ("sfc64", "mt19937")


class SyntheticGrads:
    """Seeded gradients (0.1 x each parameter's RMS) fed identically to both optimizers, ``steps`` of them.

    The optimizer is checked on shared gradients so that its update rule (learning rate, momentum convention,
    which tensors get weight decay) is compared at float32 rounding precision, instead of drowning in the ~2%
    train-mode gradient noise; the gradients themselves have their own checks. Plain numpy, in ``params``' order,
    so a reference bundle regenerates them without storing them.

    Not held in memory (issue 22): a VGG16's three steps are 1.5 GiB of float32 that a comparison held from its
    set-up to its end, most of its set-up's memory beside the models. Drawing them again on every pass instead cost
    ~0.47 s per pass at ResNet50's 25.6M parameters (``RandomState.standard_normal``; a comparison passes over them 7
    times: 9.5 of its 44 s), so the first use draws them once, one tensor at a time, into an unnamed temporary file,
    and every pass reads them back: the same float32 numbers, at page-cache speed, without the memory; and an
    optimizer that steps each parameter (or each slice of one) on its own reads just that (:meth:`steps_of`). If
    the file cannot be written (a full disk), every pass draws again.

    ``generator`` (one of :data:`GRADS_GENERATORS`): ``"sfc64"``, float32 normals from numpy's SFC64 generator,
    for a comparison that draws and uses them in one process; ``"mt19937"``, float64 ``RandomState`` normals rounded
    to float32, for reference bundles, which regenerate them where they are checked, maybe under another numpy:
    ``RandomState``'s streams are frozen (NEP 19), ``Generator``'s methods may change between numpy versions.
    """

    def __init__(self, params: Mapping[str, np.ndarray], steps: int, seed: int, generator: str = "sfc64") -> None:
        if generator not in GRADS_GENERATORS:
            raise ValueError(f"generator={generator!r}: one of {', '.join(GRADS_GENERATORS)}")
        self.generator = generator
        self.names = list(params)
        self.shapes = {k: np.shape(v) for k, v in params.items()}
        # each tensor's RMS is measured when its gradients are first drawn, not here: a comparison without the
        # optimizer check never needs them, and measuring them all up front was a float64 square of each tensor at
        # set-up (VGG11-BN's classifier.0: 0.77 GiB beside the models)
        self._params, self._rms = params, {}
        self.steps, self.seed = steps, seed
        # where each parameter's float32 gradient starts within a step in the file, and a step's length
        sizes = [4 * int(np.prod(self.shapes[k], dtype=np.int64)) for k in self.names]
        self._offsets = dict(zip(self.names, np.cumsum([0] + sizes[:-1]).tolist()))
        self._step_bytes = sum(sizes)
        self._spill: Optional[IO[bytes]] = None   # the steps, once written
        self._tried = False                        # the first use tried to write them

    def __len__(self) -> int:
        return self.steps

    def _rng(self):
        """A fresh generator at the first step's first draw."""
        if self.generator == "sfc64":
            return np.random.Generator(np.random.SFC64(self.seed + 3))
        return np.random.RandomState(self.seed + 3)

    def rms(self, name: str) -> float:
        """The root mean square of parameter ``name`` (1.0 for an all-zero one): its gradients' scale."""
        if name not in self._rms:
            squares = np.array(self._params[name], np.float64)   # always a copy: squared in place below
            np.square(squares, out=squares)   # the numbers of ``v ** 2``, without a second float64 array
            self._rms[name] = float(np.sqrt(np.mean(squares))) or 1.0
        return self._rms[name]

    def _draw(self, rng, name: str) -> np.ndarray:
        if self.generator == "sfc64":
            a = rng.standard_normal(self.shapes[name], dtype=np.float32)
            a *= np.float32(0.1 * self.rms(name))
            return a
        return (0.1 * self.rms(name) * rng.standard_normal(self.shapes[name])).astype(np.float32)

    def _write(self) -> None:
        """On first use: every step into the file, drawn one tensor at a time (the same random sequence as a whole
        step drawn at once: the same order of draws)."""
        if self._tried:
            return
        spill = temporary_file()
        try:
            if spill is not None:
                rng = self._rng()
                for _ in range(self.steps):
                    for k in self.names:
                        spill.write(as_bytes(self._draw(rng, k)))
                spill.flush()
        except OSError:   # a full disk: this object draws on every pass
            spill.close()
            spill = None
        except BaseException:   # interrupted: nothing kept, the next use tries again
            spill.close()
            raise
        self._tried = True
        if spill is not None:
            self._spill = spill
            weakref.finalize(self, spill.close)   # closed with this object, not left to the collector

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        self._write()
        if self._spill is not None:
            yield from self._read(self._spill.fileno())
            return
        rng = self._rng()
        for _ in range(self.steps):
            yield {k: self._draw(rng, k) for k in self.names}

    def readable_per_tensor(self) -> bool:
        """Whether :meth:`steps_of` can read one parameter's steps on their own: the file was written (on the first
        call of this or of iteration, which draws and writes every step: VGG16's 1.5 GiB, ~12 s)."""
        self._write()
        return self._spill is not None

    def steps_of(self, name: str, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
        """Parameter ``name``'s gradient of each step, in step order, read from the file one at a time (only when
        :meth:`readable_per_tensor`); with ``start``/``stop``, elements ``[start, stop)`` of the flattened gradient
        only: an optimizer that updates each parameter, or each slice of one, on its own holds that much gradient
        and momentum instead of a model's worth."""
        if not self.readable_per_tensor():
            raise RuntimeError("the steps could not be written to a file (a full disk?): iterate over the object")
        size = int(np.prod(self.shapes[name], dtype=np.int64))
        stop = size if stop is None else min(stop, size)
        whole = start == 0 and stop == size
        for step in range(self.steps):
            a = np.empty(self.shapes[name] if whole else (max(stop - start, 0),), np.float32)
            read_fully(self._spill.fileno(), a, step * self._step_bytes + self._offsets[name] + 4 * start)
            yield a

    def _read(self, fd: int) -> Iterator[Dict[str, np.ndarray]]:
        offset = 0
        for _ in range(self.steps):
            step = {}
            for k in self.names:
                step[k] = a = np.empty(self.shapes[k], np.float32)
                offset += read_fully(fd, a, offset)
            yield step


def synthetic_grads(params: Mapping[str, np.ndarray], steps: int, seed: int,
                    generator: str = "sfc64") -> SyntheticGrads:
    """The optimizer check's gradients (:class:`SyntheticGrads`)."""
    return SyntheticGrads(params, steps, seed, generator)


#: rows of the forward checks (localisation follows the forward)
FORWARD_ROWS = LABELS["eval_logits"] + LABELS["train_forward"]
#: the model's outputs: their rule's absolute term is the resolution term (see parity/engine/tolerance.py)
OUTPUT_ROWS = ("eval outputs", "train outputs")


def make_runners(loss_args: Sequence[np.ndarray], step_grads: "SyntheticGrads", lr: float,
                 momentum: float, weight_decay: float) -> Dict[str, Callable]:
    """check group -> ``run(side, inputs) -> {row label: arrays}``, the same for every engine (either side)."""
    def train_forward(side, xs):
        outs, loss_value, buffers = side.train_forward(xs, loss_args)
        rows = {"train outputs": outs, "train loss": loss_value}
        if buffers:
            rows["BN running stats"] = buffers
        return rows

    return {
        "eval_logits": lambda side, xs: {"eval outputs": side.eval_outputs(xs)},
        "train_forward": train_forward,
        "grads_train_bn": lambda side, xs: {"grads (train-mode BN)": side.grads(xs, loss_args, bn_train=True)},
        "grads_eval_bn": lambda side, xs: {"grads (eval-mode BN)": side.grads(xs, loss_args, bn_train=False)},
        "optimizer_step": lambda side, xs: {f"param update, {len(step_grads)} steps": side.optimizer_steps(
            step_grads, lr=lr, momentum=momentum, weight_decay=weight_decay)},
    }


def run_port(runner: Callable, side, xs) -> Tuple[Optional[dict], str]:
    """Run one check on the port; a broken port may not even run: ``(None, reason)`` then."""
    try:
        return runner(side, xs), ""
    except Exception as exc:  # whatever a port's construct raises (AttributeError, IndexError, ...) fails it
        return None, f"MindSpore failed: {str(exc).splitlines()[0][:200]}"
