"""Check your own MindSpore port against its PyTorch original with the calibrated parity checks.

    python examples/parity_own_model.py            # exits 0: the port passes every check
    python examples/parity_own_model.py --bug      # exits 1: BN eps 1e-3 in the port, localised to "bn"

Both models are written independently here, as you would have them; only the MindSpore side gets the weights
(copied from torch through the name map: identical names, plus BN's gamma/beta/moving_* spelling).
"""
import sys

import numpy as np
import torch
from mindspore import nn, ops

import parity
from ms_transfer.mindspore_backend.context import set_context


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


class MindSporeNet(nn.Cell):
    def __init__(self, eps=1e-5):
        super().__init__()
        # explicit padding: MindSpore's default pad_mode='same' pads bottom/right only at stride 2
        self.conv = nn.Conv2d(3, 16, 3, stride=2, pad_mode="pad", padding=1, has_bias=False)
        self.bn = nn.BatchNorm2d(16, eps=eps, momentum=0.9)   # MindSpore's 0.9 is torch's momentum 0.1
        self.classifier = nn.Dense(16, 4)                     # named differently: see name_map below
        self.relu = nn.ReLU()
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x):
        return self.classifier(self.mean(self.relu(self.bn(self.conv(x))), (2, 3)))


#: torch name -> MindSpore name where they differ (the rest match by name, BN's spelling by the generic rule)
NAME_MAP = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}


def main(bug: bool = False) -> int:
    set_context("pynative")          # or "graph"
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    images = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = rng.randint(0, 4, size=4)
    report = parity.compare_models(
        TorchNet(), MindSporeNet(eps=1e-3 if bug else 1e-5), images, labels,
        name_map=NAME_MAP,
        localize="on_failure")
    print(parity.format_table(report.results))
    for loc in report.localization:
        print(loc.describe())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main(bug="--bug" in sys.argv))
