"""The MindSpore ResNet family: structure, names, shapes and numerics against torchvision."""
import mindspore as ms
import numpy as np
import pytest
import torch

from ms_transfer.core import naming
from ms_transfer.checkpoint import load_state_into
from ms_transfer.context import set_context
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.checkpoint_io import WeightFile
from ms_transfer.models import ResidualBlock, ResidualBlockBase, create_model, list_models, make_layer
from torch_reference import build_model, numpy_state

DEPTHS = list(naming.ARCH_SPECS)


@pytest.mark.parametrize("arch", DEPTHS)
def test_names_and_shapes_match_torchvision(arch):
    net = create_model(arch)
    tv = build_model(arch)
    ms_params = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert set(ms_params) == set(naming.name_table(arch, "ms_transfer"))
    renamed, unknown = naming.rename(ms_params, arch, "ms_transfer", "torchvision")
    assert not unknown
    tv_shapes = {k: tuple(v.shape) for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert renamed == tv_shapes


def test_tutorial_checkpoint_names():
    """The names of the tutorial's resnet50_224_new.ckpt."""
    names = {p.name for p in create_model("resnet50").get_parameters()}
    for name in ["conv1.weight", "norm.gamma", "norm.beta", "norm.moving_mean", "norm.moving_variance",
                 "layer1.0.conv3.weight", "layer1.0.norm3.moving_variance", "layer1.0.down_sample.0.weight",
                 "layer4.0.down_sample.1.gamma", "layer3.5.norm2.beta", "fc.weight", "fc.bias"]:
        assert name in names


def test_basic_block_has_two_norms_and_correct_widths():
    layer = make_layer(64, ResidualBlockBase, 128, 2, stride=2)
    block = layer[0]
    assert block.conv2.in_channels == 128 and block.norm1 is not block.norm2
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


def test_bottleneck_stride_on_3x3():
    block = make_layer(256, ResidualBlock, 128, 1, stride=2)[0]
    assert block.conv2.kernel_size == (3, 3) and block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)
    assert (block.conv2.pad_mode, block.conv2.padding) == ("pad", 1)


def _shared(arch, num_classes=10, seed=0):
    torch.manual_seed(seed)
    tv = build_model(arch, num_classes).eval()
    state, _, _ = convert_weights(WeightFile(numpy_state(tv)), "ms_transfer")
    net = create_model(arch, num_classes=num_classes)
    load_state_into(net, state)
    net.set_train(False)
    return tv, net


@pytest.mark.parametrize("size", [64, 97])
def test_eval_logits_match_torchvision_any_size(ms_mode, size, rng):
    """Odd sizes exercise the explicit padding and the global pooling (no fixed AvgPool2d(7))."""
    tv, net = _shared("resnet18")
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = tv.double()(torch.from_numpy(x).double()).numpy()
    got = net(ms.Tensor(x)).asnumpy()
    # float32 vs float64 eval logits: ~1e-6 relative measured; 1e-4 is 100x that and far below the
    # O(1) error of a padding / pooling mistake.
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_features_head_split_and_reset_classifier(rng):
    set_context("pynative", "CPU")
    net = create_model("resnet50", num_classes=7)
    net.set_train(False)
    x = ms.Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    feats = net.forward_features(x)
    assert feats.shape == (2, 2048)
    np.testing.assert_array_equal(net.forward_head(feats).asnumpy(), net(x).asnumpy())
    net.reset_classifier(2)
    assert net(x).shape == (2, 2) and net.num_classes == 2
    assert [p.name for p in net.get_parameters()][-2:] == ["fc.weight", "fc.bias"]
    with pytest.raises(ValueError, match="num_classes"):
        net.reset_classifier(0)


def test_registry():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        create_model("resnet51")


def test_bn_momentum_is_torch_equivalent():
    net = create_model("resnet18")
    bn = net.norm
    # MindSpore keeps 1 - momentum internally; the *user-facing* momentum must be 0.9 == torch's 0.1.
    assert abs((1.0 - bn.momentum) - 0.9) < 1e-12 and bn.eps == 1e-5
