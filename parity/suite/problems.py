"""A problem of the suite, the shared starting point of a parity run: seeded torchvision weights with realistic BN
statistics, the same weights converted for MindSpore, and the same inputs."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np
from torch_reference._torch import torch

from ms_transfer.core.archs import input_spec, task_of
from ms_transfer.core.checkpoint_io import WeightFile
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.tasks import is_pair_task, num_outputs
from torch_reference.models import build_model, numpy_state

from ..engine.bundle import generated_tensor


@dataclass
class Problem:
    """Weights (both namings) and one labelled batch; ``generated`` gives the generator spec (see
    :func:`parity.engine.bundle.generated_tensor`) of every weight that a reference bundle need not store."""

    arch: str
    num_classes: int
    torch_state: "OrderedDict[str, np.ndarray]"
    ms_state: "OrderedDict[str, np.ndarray]"
    x: Union[np.ndarray, List[np.ndarray]]   # a list for a two-input network (the digit adder)
    y: Optional[np.ndarray]                  # None: the objective is the seeded projection (the adder's regression)
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
    num_classes = num_outputs(arch, num_classes)
    channels, _ = input_spec(arch)
    inputs = 2 if is_pair_task(task_of(arch)) else 1
    model = build_model(arch, num_classes, padding)
    generated = _generate_weights(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]   # torch's 0.1, or the Keras seed's 0.01
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):  # 16 calibration images: stable statistics even where stage 4 is 1x1
            model(*[torch.randn(8, channels, image_size, image_size, generator=gen) for _ in range(inputs)])
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.1, generator=gen)
    tv_state = numpy_state(model)
    ms_state, _, _ = convert_weights(WeightFile(tv_state), "ms_transfer", arch=arch, src_naming="torchvision")
    rng = np.random.RandomState(seed + 2)
    xs = [rng.standard_normal((batch, channels, image_size, image_size)).astype(np.float32) for _ in range(inputs)]
    y = rng.randint(0, num_classes, size=batch).astype(np.int64) if inputs == 1 else None
    return Problem(arch, num_classes, tv_state, ms_state, xs[0] if inputs == 1 else xs, y, generated)
