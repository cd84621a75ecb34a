"""One place to prepare MindSpore: the oneDNN ISA cap, the execution mode and the device.

MindSpore 2.10's bundled oneDNN (v3.10.1) serves plain-NCHW convolutions on CPUs that report AVX-512 with a
reference kernel (measured here, any AVX512_* level: ~1 GFLOP/s vs ~60-110 GFLOP/s at AVX2 for a 3x3 conv, i.e.
~100x slower training, on Intel Xeon and AMD EPYC alike). Capping oneDNN at AVX2 restores full speed and is a
no-op on AVX2-only machines. oneDNN reads the variable lazily, at its first kernel, so :func:`apply_onednn_cap`
runs when this module is imported (every MindSpore-side module of this package imports it before building a
cell or a dataset) and again in :func:`set_context`; a value the user exported wins. torch-only processes never
import this module, so torch keeps its own (fast) AVX-512 kernels and never has to undo anything.
"""
from __future__ import annotations

import os

ONEDNN_ISA_VAR = "ONEDNN_MAX_CPU_ISA"


def apply_onednn_cap() -> None:
    """Cap MindSpore's oneDNN at AVX2 unless the user chose an ISA (see the module docstring)."""
    os.environ.setdefault(ONEDNN_ISA_VAR, "AVX2")


apply_onednn_cap()

import mindspore as ms  # noqa: E402  (after the cap: nothing may run a oneDNN kernel before it)

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}
DEVICES = ("CPU", "GPU", "Ascend")


def set_context(mode: str = "graph", device: str = "CPU") -> None:
    """Select GRAPH (static graph, compiled once) or PYNATIVE (eager) execution on ``device``."""
    apply_onednn_cap()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    ms.set_context(mode=MODES[mode])
    try:
        ms.set_device(device)
    except RuntimeError as exc:
        # MindSpore refuses set_device once a kernel has run ("The runtime has been initialized ...") even for the
        # device already in use, e.g. CPU after a model was built and run without set_context: only the mode
        # changes then. Another device really cannot be had any more.
        # (also "The 'mindspore.set_device' can not be modified." once the communication is initialised, msrun)
        refused = "runtime has been initialized" in str(exc) or "can not be modified" in str(exc)
        if not refused or ms.get_context("device_target") != device:
            raise

