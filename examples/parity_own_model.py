"""Check your own MindSpore port against its PyTorch original with the calibrated parity checks.

    python examples/parity_own_model.py            # exits 0: the port passes every check
    python examples/parity_own_model.py --bug      # exits 1: BN eps 1e-3 in the port, localised to "bn"

Both models are written independently, as you would have them: ``TorchNet`` here, its port ``MindSporeNet`` in
examples/parity_own_model_ms.py (a module without torch, so that a CI job without PyTorch can import it). Only the
MindSpore side gets the weights (copied from torch through the name map: identical names, plus BN's
gamma/beta/moving_* spelling).
"""
import sys

import numpy as np
import torch

import parity
from ms_transfer.mindspore_backend.context import set_context

try:   # run as a script: python examples/parity_own_model.py (examples/ is on sys.path)
    from parity_own_model_ms import NAME_MAP, MindSporeNet
except ModuleNotFoundError as exc:   # imported from the checkout's root: examples.parity_own_model
    if exc.name != "parity_own_model_ms":
        raise
    from examples.parity_own_model_ms import NAME_MAP, MindSporeNet

__all__ = ["TorchNet", "MindSporeNet", "NAME_MAP", "main"]


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def main(bug: bool = False) -> int:
    set_context("pynative")          # or "graph"
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    images = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = rng.randint(0, 4, size=4)
    report = parity.compare_models(
        TorchNet(), MindSporeNet(eps=1e-3 if bug else 1e-5), images, labels, name_map=NAME_MAP,
        localize="on_failure")
    print(parity.format_table(report.results))
    for loc in report.localization:
        print(loc.describe())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main(bug="--bug" in sys.argv))
