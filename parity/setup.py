"""Shared starting point of a parity run: seeded torchvision weights with realistic BN statistics,
the same weights converted for MindSpore, and the same inputs."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict

import numpy as np
import torch

from ms_transfer.core.checkpoint_io import WeightFile
from ms_transfer.core.convert import convert_weights
from torch_reference.models import build_model, numpy_state

from .objective import generated_tensor


@dataclass
class Problem:
    """Weights (both namings) and one labelled batch; ``generated`` gives the generator spec (see
    :func:`parity.objective.generated_tensor`) of every weight that a reference bundle need not store."""

    arch: str
    num_classes: int
    torch_state: "OrderedDict[str, np.ndarray]"
    ms_state: "OrderedDict[str, np.ndarray]"
    x: np.ndarray
    y: np.ndarray
    generated: Dict[str, dict] = field(default_factory=dict)


def _generate_weights(model: torch.nn.Module, seed: int) -> Dict[str, dict]:
    """Conv and linear weights drawn by numpy with torchvision's own init distributions (conv: He normal, fan
    out; linear: uniform +-1/sqrt(fan in)), so a bundle regenerates them from a seed (ResNet18: 44 of its 45 MB)."""
    specs = {}
    for index, (name, module) in enumerate(model.named_modules()):
        if isinstance(module, torch.nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            specs[f"{name}.weight"] = {"dist": "normal", "scale": math.sqrt(2.0 / fan_out), "seed": [seed, index]}
        elif isinstance(module, torch.nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            specs[f"{name}.weight"] = {"dist": "uniform", "scale": bound, "seed": [seed, index]}
    state = model.state_dict()
    with torch.no_grad():
        for name, spec in specs.items():
            state[name].copy_(torch.from_numpy(generated_tensor(spec, state[name].shape)))
    return specs


def make_problem(arch: str, num_classes: int, batch: int, image_size: int, seed: int,
                 padding: str = "torch") -> Problem:
    """Seeded weights whose BN statistics and affine parameters are not their init values.

    Running statistics are calibrated on random batches (cumulative average, as torch does with
    ``momentum=None``) so eval-mode activations stay well scaled through every depth; BN affine
    parameters are then perturbed so that a swapped or dropped gamma/beta shows up in the logits.
    """
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, padding)
    generated = _generate_weights(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):  # 16 calibration images: stable statistics even where stage 4 is 1x1
            model(torch.randn(8, 3, image_size, image_size, generator=gen))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.1, generator=gen)
    tv_state = numpy_state(model)
    ms_state, _, _ = convert_weights(WeightFile(tv_state), "ms_transfer", arch=arch, src_naming="torchvision")
    rng = np.random.RandomState(seed + 2)
    x = rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    y = rng.randint(0, num_classes, size=batch).astype(np.int64)
    return Problem(arch, num_classes, tv_state, ms_state, x, y, generated)
