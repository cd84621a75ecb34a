"""One place to choose MindSpore's execution mode and device."""
from __future__ import annotations

import mindspore as ms

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}
DEVICES = ("CPU", "GPU", "Ascend")


def set_context(mode: str = "graph", device: str = "CPU") -> None:
    """Select GRAPH (static graph, compiled once) or PYNATIVE (eager) execution on ``device``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    ms.set_context(mode=MODES[mode])
    ms.set_device(device)
