"""One place to prepare MindSpore: the oneDNN ISA cap, the execution mode and the device.

MindSpore 2.9/2.10's bundled oneDNN (v3.10.1) serves plain-NCHW convolutions on CPUs that report AVX-512 with a
reference kernel (measured here, any AVX512_* level: ~1 GFLOP/s vs ~60-110 GFLOP/s at AVX2 for a 3x3 conv, i.e.
~100x slower training, on Intel Xeon and AMD EPYC alike); MindSpore 2.7.2's oneDNN v2.2.0 does not. Whether to cap
is decided by :mod:`ms_transfer.mindspore_backend.onednn` from the bundled oneDNN version, the CPU and a cached measured
probe; a value the user exported wins. A cap is written under both of its spellings (``ONEDNN_MAX_CPU_ISA``,
``DNNL_MAX_CPU_ISA``: oneDNN 2.2 reads only the second, see :data:`ms_transfer.mindspore_backend.onednn.ISA_VARS`).

On the CPU, operators run synchronously in the calling thread (:func:`synchronous_cpu_dispatch`,
``mindspore.runtime.launch_blocking``): MindSpore's default asynchronous dispatch hands each PYNATIVE operator to
queue threads that the caller then waits for by spinning (``AsyncRQueue::Wait`` and ``sched_yield``: 13 % of the
test suite's CPU time in a ``perf`` profile). On 2 cores that spinning takes the cores the kernels need. Measured
(AMD EPYC, 2 cores, MindSpore 2.7.2, 40 PYNATIVE training steps of ResNet18 at 32 px, batch 4): 7.1 s alone
becomes 5.0-5.5 s; two such processes side by side, 12.4 s each becomes 6.3-6.9 s; ResNet50 at 224 px, batch 8:
11.6 -> 10.4 s for 5 steps. GRAPH mode is unchanged or faster (2.2-2.9 s -> 2.0 s). It must be set before the
process's first kernel (set after warm-up steps it changed little), so it is applied at import, like the cap.

This is the only module of the project that changes the environment at import. oneDNN reads the variable lazily,
at its first kernel, not when MindSpore is imported (checked by tests/test_imports.py), so importing this module
applies the cap (:func:`apply_onednn_cap`, at the bottom) whatever was imported before it, and
:func:`set_context` applies it again. Who imports it: ``ms_transfer.models`` (its package ``__init__``, hence
every model module and ``from ms_transfer.models import create_model``) and each MindSpore-side module outside
that package, so a library user gets the decision before any cell runs. torch-only processes never import this
module, so torch keeps its own (fast) AVX-512 kernels and never has to undo anything.
"""
from __future__ import annotations

import contextlib
import gc
import os
from typing import Iterator

import mindspore as ms

from ..core import flags
from . import onednn

ONEDNN_ISA_VAR = onednn.ISA_VAR
ONEDNN_ISA_VARS = onednn.ISA_VARS
#: the ISA the user exported under either spelling before this package touched them (theirs always wins)
USER_ISA = onednn.user_isa()
#: the decision applied in this process (see :mod:`ms_transfer.mindspore_backend.onednn`)
DECISION: "onednn.Decision | None" = None


def apply_onednn_cap(decision: "onednn.Decision | None" = None) -> "onednn.Decision":
    """Apply ``decision`` (default: :func:`ms_transfer.mindspore_backend.onednn.decide`) under both spellings of the
    cap. The user's own ISA is never changed: it is only copied to the spelling they left unset, so that it holds
    whichever spelling the bundled oneDNN reads (2.2 reads only ``DNNL_``)."""
    global DECISION
    DECISION = decision or onednn.decide(USER_ISA)
    if USER_ISA:
        for var, isa in onednn.cap_environ(USER_ISA).items():
            os.environ.setdefault(var, isa)
        return DECISION
    if DECISION.isa:
        os.environ.update(onednn.cap_environ(DECISION.isa))
    else:
        for var in ONEDNN_ISA_VARS:   # a measured "no cap" replaces a cap applied earlier in this process
            os.environ.pop(var, None)
    return DECISION


def synchronous_cpu_dispatch() -> bool:
    """Run MindSpore's operators synchronously when its device is the CPU (see the module docstring); another
    device keeps MindSpore's asynchronous dispatch, which overlaps the host's Python with the device's kernels.
    Returns whether it applied (it cannot be undone in a process)."""
    if ms.get_context("device_target") != "CPU":
        return False
    ms.runtime.launch_blocking()
    return True


def prepare_onednn(probe: bool = True, log=print) -> "onednn.Decision":
    """Before MindSpore's first kernel in a training / bench process: the measured decision (probed once per
    machine and MindSpore version, then cached; ``probe=False``: the cached one or the rule), applied, and logged
    with the convolution path it selects."""
    decision = apply_onednn_cap(onednn.ensure_probed(USER_ISA, log) if probe else onednn.decide(USER_ISA))
    log(decision.describe())
    return decision


MODES = dict(zip(flags.MODES, (ms.GRAPH_MODE, ms.PYNATIVE_MODE)))
DEVICES = flags.DEVICES


def set_context(mode: str = "graph", device: str = "CPU") -> None:
    """Select GRAPH (static graph, compiled once) or PYNATIVE (eager) execution on ``device``."""
    apply_onednn_cap(DECISION)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    ms.set_context(mode=MODES[mode])
    try:
        ms.set_device(device)
    except RuntimeError as exc:
        if "Unsupported device target" in str(exc):   # a build or machine without that device: bad input
            raise flags.ConfigError(f"device {device}: this MindSpore cannot run on it ({str(exc).splitlines()[0][:200]}); "
                              "use --device CPU here, or check the port on a machine that has it with a reference "
                              "bundle (python -m parity --check-reference DIR --device ...)") from None
        # MindSpore refuses set_device once a kernel has run ("The runtime has been initialized ...") even for the
        # device already in use, e.g. CPU after a model was built and run without set_context: only the mode
        # changes then. Another device really cannot be had any more.
        # (also "The 'mindspore.set_device' can not be modified." once the communication is initialised, msrun)
        refused = "runtime has been initialized" in str(exc) or "can not be modified" in str(exc)
        if not refused or ms.get_context("device_target") != device:
            raise
    synchronous_cpu_dispatch()   # (already applied at import when the build's device is the CPU)


def freeze_imported_objects() -> None:
    """Leave the objects that exist now -- in a process that has just done its imports: modules, classes and
    functions that live as long as it does -- out of Python's cyclic garbage collector (``gc.freeze``).

    MindSpore runs a full ``gc.collect()`` before it compiles each graph (``_CellGraphExecutor.compile``,
    ``mindspore/common/api.py``), and a full collection scans every tracked object: ~456k once MindSpore and torch
    are imported, 0.2 s per collection (AMD EPYC), more as a process grows. Measured: the parity and VGG tests
    spent 16.6 s of CPU in the 55 collections of their graphs, 1.5 s with the imports frozen; the default
    ``python -m parity`` 1.15 s in its 5, 0.9 s (its models and MindSpore's parse of their cells come after the
    freeze). Garbage that exists already is collected first (frozen, it would never be freed); objects made later
    are collected as before.

    Call it once, where a process starts its work, not from library code: an object alive when it is frozen and
    later dropped inside a reference cycle is never freed. Callers: ``python -m parity``, the training CLI's run
    (:meth:`MindSporeBackend.setup`, one run per process) and the test session (``tests/conftest.py``)."""
    gc.collect()
    gc.freeze()


def release_compiled_graphs() -> None:
    """Give back the memory MindSpore keeps for the graphs it compiled (``mindspore.ms_memory_recycle``): a cell
    that is used again compiles again. Call it where a piece of work is done with its cells: the end of a training
    run (:func:`ms_transfer.train.train`), each parity check (``parity.engine.mindspore_side``). Measured (MindSpore
    2.7.2, AMD EPYC): six PYNATIVE ``train()`` runs of ResNet18 at 32 px in one process, no cell left alive, grew it
    by 0.14 GiB each (0.86 -> 1.59 GiB) and stayed flat with this after each (0.77 -> 0.79 GiB); a pytest worker
    kept every run's. Then the parameters the graph executors still hold are let go of (:func:`_drop_kept_weights`).

    ``ms_memory_recycle`` iterates over every cell's compile cache, and a cell deleted inside that loop (its
    ``Cell.__del__`` pops its entry) stops it: "dictionary changed size during iteration". A cycle collection can
    delete cells there, so the collector is held off; another thread dropping the last reference to a cell can too
    (seen under a profiler whose sampling thread read the main thread's frames), so a stopped loop is run again:
    the caches it cleared stay cleared, and the dict is stable once the cell is gone."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        for attempt in range(3):
            try:
                ms.ms_memory_recycle()
                break
            except RuntimeError as exc:
                if "changed size during iteration" not in str(exc) or attempt == 2:
                    raise
    finally:
        if collecting:
            gc.enable()
    _drop_kept_weights()


def _drop_kept_weights() -> None:
    """Let go of the parameters MindSpore's graph executors keep after a compile. Before compiling a cell, each
    executor is handed the cell's ``parameters_dict()`` (``set_weights_values``, in ``mindspore.common.api``) and
    keeps it until its next compile, so the last network trained or evaluated stayed alive, weights, optimizer
    moments and all, after the run had dropped every cell (MindSpore 2.7.2: GRAPH mode the cell executor's, PYNATIVE
    the jit executor's; ``ms_memory_recycle`` leaves them). Measured: a VGG16 run of the cats-vs-dogs config left
    its 38 parameters, 0.50 GiB, alive in the process, and another run 0.50 GiB more. An empty dict replaces them;
    the next compile hands over its own as before. Private API: skipped where a version has no such method."""
    from mindspore.common.api import _cell_graph_executor

    executors = [getattr(_cell_graph_executor, "_graph_executor", None)]
    try:
        from mindspore._c_expression import JitExecutor_
        executors.append(JitExecutor_.get_instance())
    except (ImportError, AttributeError):
        pass
    for executor in executors:
        setter = getattr(executor, "set_weights_values", None)
        if setter is None:
            continue
        try:
            setter({})
        except (TypeError, RuntimeError):   # another version's signature: what it keeps stays, as before
            pass


@contextlib.contextmanager
def pynative() -> Iterator[None]:
    """Run the block in PYNATIVE mode (Cell hooks run only there), then restore the mode it found."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


# At import, before any kernel of this process: see the module docstring.
apply_onednn_cap()
synchronous_cpu_dispatch()
