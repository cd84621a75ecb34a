"""The MindSpore ResNet family: structure, names, shapes and numerics against torchvision."""
import mindspore as ms
import numpy as np
import pytest
import torch

from ms_transfer.core import naming
from ms_transfer.mindspore_backend.checkpoint import load_state_into
from ms_transfer.mindspore_backend.context import set_context
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.checkpoint_io import WeightFile
from ms_transfer.models import ResidualBlock, ResidualBlockBase, create_model, list_models, make_layer
from torch_reference import build_model, numpy_state

DEPTHS = list(naming.ARCH_SPECS)
#: ResNeXt / Wide ResNet (one spec each, built by the ResNet family's builders); the 101-deep ones build 88-127 M
#: parameters per framework: `make test-slow`, recorded in the README's "Tests" section
VARIANTS = ["resnext50_32x4d", "wide_resnet50_2",
            *[pytest.param(a, marks=pytest.mark.slow) for a in ("resnext101_32x8d", "resnext101_64x4d",
                                                                 "wide_resnet101_2")]]


@pytest.mark.parametrize("arch", DEPTHS + VARIANTS)
def test_names_and_shapes_match_torchvision(arch):
    net = create_model(arch)
    tv = build_model(arch)
    ms_params = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert set(ms_params) == set(naming.name_table(arch, "ms_transfer"))
    renamed, unknown = naming.rename(ms_params, arch, "ms_transfer", "torchvision")
    assert not unknown
    tv_shapes = {k: tuple(v.shape) for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert renamed == tv_shapes
    assert type(tv).__module__ == "torchvision.models.resnet"  # torchvision's own network, not a copy


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


def test_register_model_refuses_a_second_builder_under_a_taken_name():
    from ms_transfer.models import model_builder, register_model, resnet18
    from ms_transfer.models import registry
    before = dict(registry._MODELS)

    def make_impostor():
        def resnet18(num_classes=1000, padding="torch"):  # same name, different builder
            raise AssertionError("never built")
        return resnet18
    impostor = make_impostor()
    with pytest.raises(ValueError, match="model 'resnet18' is already registered"):
        register_model(impostor)
    assert registry._MODELS == before and model_builder("resnet18") is resnet18
    assert register_model(resnet18) is resnet18 and registry._MODELS == before  # re-registering itself is fine
    assert create_model("resnet18", num_classes=3).arch == "resnet18"


def test_builders_take_only_num_classes_and_padding():
    from ms_transfer.models import resnet18, resnet50
    with pytest.raises(TypeError, match="foo"):
        resnet18(foo=1)
    with pytest.raises(TypeError, match="pretrained"):
        resnet50(pretrained=True)  # weights are the factory's job: create_model(..., pretrained=...)
    net = resnet18(num_classes=3, padding="same")
    assert net.num_classes == 3 and net.arch == "resnet18"


# --- padding="same": the MindSpore tutorial's network, reproduced in torch by torch_reference ----------------
#
# At stride 2, 'same' pads ``k - 2`` (odd: asymmetric, the extra pixel bottom/right) when the input side is
# even, and ``k - 1`` split evenly (== torch's symmetric padding) when it is odd. So 64 px (64, 32, 16, 8, 4
# into the strided layers) is asymmetric everywhere, 75 px (75, 38, 19, 10, 5) mixes both, and 97 px
# (97, 49, 25, 13, 7) is symmetric everywhere: there the 'same' network *is* the torch-padded one.

def _shared_same(arch, num_classes=10, seed=0):
    """torch 'same' model and MindSpore 'same' net with the same weights (eval mode)."""
    from ms_transfer.models import build_model as ms_build_model
    torch.manual_seed(seed)
    tv = build_model(arch, num_classes, padding="same").eval()
    state, _, _ = convert_weights(WeightFile(numpy_state(tv)), "ms_transfer")
    net = ms_build_model(arch, num_classes, padding="same")
    load_state_into(net, state)
    net.set_train(False)
    return tv, net


def _rel(got, expected):
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("size", [64, 75, 97])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_same_padding_eval_logits_match_torch_reproduction(arch, ms_mode, size, rng):
    tv, net = _shared_same(arch)
    assert net.padding == "same"
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = tv.double()(torch.from_numpy(x).double()).numpy()
    got = net(ms.Tensor(x)).asnumpy()
    # same bound as test_eval_logits_match_torchvision_any_size (~5e-7 measured)
    assert _rel(got, expected) < 1e-4


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_same_padding_is_not_torch_padding(arch, rng):
    """On the same weights the 'same' network differs from torchvision's by O(1) (0.23..0.35 relative at 64 px
    measured, >2000x the parity bound above) wherever a strided layer sees an even side, and not at all where
    every strided layer sees an odd side (97 px)."""
    set_context("pynative", "CPU")
    tv_same, net = _shared_same(arch)
    tv = build_model(arch, 10).eval()
    tv.load_state_dict(tv_same.state_dict())
    tv, tv_same = tv.double(), tv_same.double()
    for size, differs in [(64, True), (75, True), (97, False)]:
        x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            torch_padded = tv(torch.from_numpy(x).double()).numpy()
            torch_same = tv_same(torch.from_numpy(x).double()).numpy()
        ms_same = net(ms.Tensor(x)).asnumpy()
        if differs:
            assert _rel(torch_same, torch_padded) > 0.05, size
            assert _rel(ms_same, torch_padded) > 0.05, size
        else:
            assert _rel(torch_same, torch_padded) < 1e-12
            assert _rel(ms_same, torch_padded) < 1e-4


@pytest.mark.parametrize("size, k, s, expected", [
    (224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (56, 3, 2, (0, 1)), (7, 3, 2, (1, 1)),
    (97, 7, 2, (3, 3)), (49, 3, 2, (1, 1)), (56, 1, 2, (0, 0)), (57, 1, 2, (0, 0)), (56, 3, 1, (1, 1)),
])
def test_same_padding_rule(size, k, s, expected):
    """MindSpore's 'same': output ceil(size / s), total = max((out - 1) * s + k - size, 0), extra pixel after."""
    from torch_reference.models import same_padding
    assert same_padding(size, k, s) == expected


def test_same_padding_maxpool_matches_mindspore_on_negative_input(rng):
    """The max-pool pads -inf: on all-negative input a zero pad would win at the bottom/right border."""
    from mindspore import nn as ms_nn
    from torch_reference.models import SamePadding
    set_context("pynative", "CPU")
    x = -np.abs(rng.standard_normal((1, 2, 8, 8)).astype(np.float32)) - 1.0
    pool = torch.nn.MaxPool2d(3, 2, padding=0)
    pool.register_forward_pre_hook(SamePadding(3, 2, value=float("-inf")))
    expected = pool(torch.from_numpy(x)).numpy()
    got = ms_nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")(ms.Tensor(x)).asnumpy()
    assert got.shape == expected.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(got, expected)
    assert (got < 0).all()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_same_padding_keeps_torch_state_dict(arch):
    plain, same = build_model(arch), build_model(arch, padding="same")
    assert list(same.state_dict()) == list(plain.state_dict())
    assert {k: v.shape for k, v in same.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    hooked = [name for name, m in same.named_modules() if m._forward_pre_hooks]
    assert "conv1" in hooked and "maxpool" in hooked and len(hooked) == 5  # stem, pool, layer2..4 strided 3x3
    with pytest.raises(ValueError, match="padding"):
        build_model(arch, padding="valid")


def test_create_model_uses_tutorial_entry_padding(tmp_path, monkeypatch):
    """Offline: the tutorial entry's file is placed in the cache; padding="auto" then builds the 'same' net."""
    import ms_transfer.core.recipe as recipe
    from ms_transfer.core.checkpoint_io import write_weights
    from ms_transfer.core.weights import get_weights
    from ms_transfer.models import build_model as ms_build_model

    monkeypatch.setattr(recipe, "CACHE_DIR", tmp_path)
    entry = get_weights("resnet50_tutorial")
    assert entry.padding == "same" and entry.sha256 is None
    target = tmp_path / "weights" / "resnet50_tutorial" / "resnet50_224_new.ckpt"
    assert target.name == entry.filename
    source = ms_build_model("resnet50", 1000)
    write_weights(target, {p.name: p.asnumpy() for p in source.get_parameters()}, {})

    net = create_model("resnet50", num_classes=2, pretrained="resnet50_tutorial", padding="auto", verbose=False)
    assert net.padding == "same" and net.num_classes == 2
    assert net.conv1.pad_mode == "same" and net.max_pool.pad_mode.lower() == "same"
    assert net.layer2[0].conv2.pad_mode == "same" and net.layer1[0].conv2.pad_mode == "pad"
    assert any("resnet50_tutorial" in note and "same" in note for note in net.load_report.notes)
    assert set(net.load_report.missing) == {"fc.weight", "fc.bias"}  # 1000-class head dropped, 2 requested
    assert not net.load_report.unexpected and not net.load_report.mismatched
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(), source.conv1.weight.asnumpy())

    forced = create_model("resnet50", num_classes=2, pretrained="resnet50_tutorial", padding="torch", verbose=False)
    assert forced.padding == "torch" and forced.conv1.pad_mode == "pad"
    assert any("torch" in note and "configured" in note for note in forced.load_report.notes)
