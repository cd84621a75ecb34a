"""Framework-neutral initial weights for the seeds' small networks: the same starting point in both frameworks.

:func:`init_state` draws every tensor with numpy from the distributions both frameworks' modules use by default
(``torch.nn.Conv2d`` / ``nn.Linear``: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BatchNorm: weight 1,
bias 0, running mean 0, running variance 1), so a run of each framework started from :func:`save_init` is the
same model at step 0 (``python -m ms_transfer.study`` compares the frameworks' curves from there).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .archs import pair_spec, seq_spec
from .checkpoint_io import PathLike, write_weights


def _shapes(arch: str, num_classes: int) -> List[Tuple[str, str, Tuple[int, ...], int]]:
    """``(torchvision name, kind, shape, fan_in)`` of every tensor, in model order."""
    spec, pair = seq_spec(arch), pair_spec(arch)
    if spec is None and pair is None:
        raise ValueError(f"numpy initialisation covers the seeds' small networks, not {arch!r}")
    trunks = [("features", spec)] if spec else [(b, pair.branch_spec) for b in pair.branches]
    out = []
    for prefix, trunk in trunks:
        channels = trunk.in_channels
        for layer, kind, args in trunk.layers:
            name = f"{prefix}.{layer}"
            if kind == "conv":
                oc, k, _ = args
                fan_in = channels * k * k
                out += [(f"{name}.weight", "uniform", (oc, channels, k, k), fan_in),
                        (f"{name}.bias", "uniform", (oc,), fan_in)]
                channels = oc
            elif kind == "bn":
                out += [(f"{name}.weight", "ones", (channels,), 0), (f"{name}.bias", "zeros", (channels,), 0),
                        (f"{name}.running_mean", "zeros", (channels,), 0),
                        (f"{name}.running_var", "ones", (channels,), 0),
                        (f"{name}.num_batches_tracked", "count", (), 0)]
    head = spec.head_layers(num_classes) if spec else pair.head_layers(pair.outputs)
    for i, (kind, args) in enumerate(head):
        if kind == "dense":
            fan_in, fan_out = args
            out += [(f"fc.{i}.weight", "uniform", (fan_out, fan_in), fan_in),
                    (f"fc.{i}.bias", "uniform", (fan_out,), fan_in)]
    return out


def init_state(arch: str, num_classes: int, seed: int) -> "OrderedDict[str, np.ndarray]":
    """Initial weights of ``arch`` (torchvision names), drawn with ``numpy.random.RandomState(seed)``."""
    rng = np.random.RandomState(int(seed))
    state: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for name, kind, shape, fan_in in _shapes(arch, num_classes):
        if kind == "uniform":
            bound = 1.0 / np.sqrt(fan_in)
            state[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        elif kind == "count":
            state[name] = np.array(0, np.int64)
        else:
            state[name] = (np.ones if kind == "ones" else np.zeros)(shape, np.float32)
    return state


def save_init(path: PathLike, arch: str, num_classes: int, seed: int,
              overrides: Dict[str, np.ndarray] = None) -> Path:
    """Write :func:`init_state` (with ``overrides``, torchvision names, e.g. a pretrained trunk) as a weight file
    that both frameworks load as ``pretrained`` (format by extension)."""
    state = init_state(arch, num_classes, seed)
    for name, value in (overrides or {}).items():
        if name not in state or tuple(np.shape(value)) != state[name].shape:
            raise ValueError(f"override {name} {np.shape(value)} does not fit {arch}")
        state[name] = np.asarray(value, state[name].dtype)
    write_weights(path, state, {"naming": "torchvision", "arch": arch, "init_seed": int(seed)})
    return Path(path)
