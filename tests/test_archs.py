"""One spec per architecture (ms_transfer.core.archs), proven by ResNeXt and Wide ResNet: each is one
``register_arch`` call, built by the ResNet family's builder in both frameworks, and torchvision-exact in names,
conversion, arch detection, training and the feature cache. (Names and shapes against torchvision's: test_models.py;
parity: test_parity.py.)"""
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import small_config, torch_checkpoint

import ms_transfer.core.feature_cache as features_mod
from ms_transfer.core import naming, spec
from ms_transfer.core.archs import ArchSpec, ResNetLayout, get_arch, list_archs, register_arch
from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.core.convert import main as convert_main
from ms_transfer.models import list_models, model_builder
from ms_transfer.train import train as ms_train
from torch_reference import build_model
from torch_reference.train import train as torch_train

#: the torchvision variants of issue 20's proof; the 101-deep ones build 88-127 M parameters per framework:
#: `make test-slow` (results in the README's "Tests" section)
VARIANTS = ["resnext50_32x4d", "wide_resnet50_2",
            pytest.param("resnext101_32x8d", marks=pytest.mark.slow),
            pytest.param("resnext101_64x4d", marks=pytest.mark.slow),
            pytest.param("wide_resnet101_2", marks=pytest.mark.slow)]


def test_every_arch_is_one_spec_built_by_its_family_in_both_frameworks():
    assert set(list_archs()) <= set(list_models())
    assert naming.ALL_ARCHS == tuple(list_archs())
    for arch in list_archs():
        s = get_arch(arch)
        assert model_builder(arch).__name__ == arch and s.doc
        assert all(e.arch == arch for e in s.weights)
    assert [a for a in list_archs("resnet") if get_arch(a).layout.groups > 1] == [
        "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"]


def test_a_taken_name_is_an_error_and_registers_nothing():
    before_archs, before_weights = list_archs(), dict(spec.WEIGHTS)
    with pytest.raises(ValueError, match="'resnet50' is already registered"):
        register_arch(get_arch("resnet50"))
    with pytest.raises(ValueError, match="is for 'resnet50', not 'resnet50_again'"):
        dataclasses.replace(get_arch("resnet50"), name="resnet50_again")  # its weights entries name another arch
    entry = dataclasses.replace(get_arch("resnet50").weights[-1], arch="resnet50_again", name="new_entry")
    with pytest.raises(ValueError, match="already registered"):  # a new name, but a taken alias
        register_arch(dataclasses.replace(get_arch("resnet50"), name="resnet50_again", weights=(entry,)))
    with pytest.raises(ValueError, match="basic block has no groups"):
        ResNetLayout("basic", (2, 2, 2, 2), groups=32)
    with pytest.raises(ValueError, match="task must be one of"):
        ArchSpec(name="x", family="resnet", layout=None, task="segment")
    assert list_archs() == before_archs and spec.WEIGHTS == before_weights


def _shapes(arch, scheme):
    tv = {k: tuple(v.shape) for k, v in build_model(arch, 1000).state_dict().items()}
    renamed, _ = naming.rename(tv, arch, "torchvision", scheme)
    return renamed


@pytest.mark.parametrize("scheme", naming.SCHEMES)
def test_detect_arch_tells_the_variants_of_a_depth_apart(scheme):
    """ResNet-50, ResNeXt-50 32x4d and Wide ResNet-50-2 have the same tensor names; the first 3x3 conv's shape
    tells them apart (and the 101-deep ones likewise)."""
    for arch in list_archs("resnet"):
        assert naming.detect_arch(_shapes(arch, scheme)) == arch
    odd = _shapes("resnext50_32x4d", scheme)
    odd["layer1.0.conv2.weight"] = (128, 8, 3, 3)  # 16 groups: no registered variant
    with pytest.raises(ValueError, match=r"cannot detect the ResNet depth.*layer1.0.conv2 \[128, 8, 3, 3\]"):
        naming.detect_arch(odd)


@pytest.mark.parametrize("arch", VARIANTS)
def test_round_trip_pth_ckpt_safetensors_pth_is_bit_exact(tmp_path, arch):
    src, expected = torch_checkpoint(tmp_path, arch)
    assert convert_main([str(src), str(tmp_path / "w.ckpt")]) == 0  # --arch auto
    assert read_weights(tmp_path / "w.ckpt").meta["arch"] == arch
    assert convert_main([str(tmp_path / "w.ckpt"), str(tmp_path / "w.safetensors"), "--naming", "mindcv"]) == 0
    assert convert_main([str(tmp_path / "w.safetensors"), str(tmp_path / "back.pth")]) == 0
    got = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_variants_train_and_use_the_feature_cache(demo_images, tmp_path, framework):
    """ResNeXt fine-tuned end to end, then Wide ResNet with a frozen trunk: its features are computed once and
    read back from the cache by a second run (each framework through the one loop)."""
    data = demo_images(4, 2)
    run = ms_train if framework == "mindspore" else torch_train
    result = run(small_config(data, tmp_path / "rx", arch="resnext50_32x4d", strategy="finetune"))
    rows = [json.loads(line) for line in (tmp_path / "rx" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"]) and result
    ckpt = read_weights(next((tmp_path / "rx").glob("best.*")))
    assert ckpt.meta["arch"] == "resnext50_32x4d"
    assert tuple(ckpt.state[next(k for k in ckpt.state if k.endswith("layer1.0.conv2.weight"))].shape) == (
        128, 4, 3, 3)

    features_mod.CACHE_STATS.clear()
    frozen = dict(arch="wide_resnet50_2", strategy="fixed_feature", augment="none", epochs=2)
    run(small_config(data, tmp_path / "wrn", **frozen))
    assert (features_mod.CACHE_STATS["miss"], features_mod.CACHE_STATS["saved"]) == (2, 2)  # train + val
    features_mod.CACHE_STATS.clear()
    run(small_config(data, tmp_path / "wrn2", **frozen))
    assert features_mod.CACHE_STATS["hit"] == 2 and features_mod.CACHE_STATS["miss"] == 0
