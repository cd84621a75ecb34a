"""The MindSpore port of examples/parity_own_model.py's ``TorchNet``, in a module of its own that imports no torch:
what a CI job without PyTorch imports to check the port against a reference bundle
(``parity.check_reference(DIR, MindSporeNet())``, docs/parity-in-ci.md)."""
from mindspore import nn, ops

#: torch name -> MindSpore name where they differ (the rest match by name, BN's spelling by the generic rule)
NAME_MAP = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}


class MindSporeNet(nn.Cell):
    """``TorchNet`` in MindSpore; ``eps=1e-3`` is a porting bug the checks catch (and localise to ``bn``)."""

    def __init__(self, eps=1e-5):
        super().__init__()
        # explicit padding: MindSpore's default pad_mode='same' pads bottom/right only at stride 2
        self.conv = nn.Conv2d(3, 16, 3, stride=2, pad_mode="pad", padding=1, has_bias=False)
        self.bn = nn.BatchNorm2d(16, eps=eps, momentum=0.9)   # MindSpore's 0.9 is torch's momentum 0.1
        self.classifier = nn.Dense(16, 4)                     # named differently: see NAME_MAP
        self.relu = nn.ReLU()
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x):
        return self.classifier(self.mean(self.relu(self.bn(self.conv(x))), (2, 3)))
