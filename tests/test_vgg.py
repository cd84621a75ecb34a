"""The VGG family (cats vs dogs with VGG16): torchvision's VGG in MindSpore, the naming table, conversion, parity
(with the dropout check and the VGG-specific injected bugs), the cats-vs-dogs regime and config in both frameworks.

Every VGG has a 25088 x 4096 classifier layer (133-144M parameters, 0.5 GB in float32) whatever the input size,
so the parity engine's float32 floor samples make a full comparison cost ~3.5 min per depth and mode: CI runs
VGG11-BN's eval-mode comparison once against four ports (correct + three bugs); every depth in both modes and
VGG16 at 224 px are ``slow`` (``make test-slow``; results recorded in the README).
"""
import gc
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from ms_transfer.core import naming
from ms_transfer.core.archs import VGG_SPECS, head_module
from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.core.config import ConfigError, TrainConfig
from ms_transfer.core.convert import main as convert_main
from ms_transfer.core.data import CenterCrop
from ms_transfer.core.freeze import strategy_patterns
from ms_transfer.core.recipe import plan_stages
from ms_transfer.models import build_model, list_models
from torch_reference.models import build_model as build_torch

VGGS = list(VGG_SPECS)


def _meta_torch(arch, **kwargs):
    """torchvision's model without allocating or initialising its 0.5 GB of weights (names and shapes only)."""
    with torch.device("meta"):
        return build_torch(arch, 10, **kwargs)


@pytest.fixture(scope="module")
def ms_vgg11_bn():
    return build_model("vgg11_bn", 10)


# --- names, detection, presets --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", VGGS)
def test_naming_table_is_torchvisions_and_detects_every_depth(arch):
    shapes = {k: tuple(v.shape) for k, v in _meta_torch(arch).state_dict().items()}
    names = [k for k in shapes if not k.endswith("num_batches_tracked")]
    assert names == list(naming.name_table(arch, "torchvision"))
    assert naming.detect_arch(shapes) == arch
    without_head = {k: v for k, v in shapes.items() if not k.startswith("classifier.6.")}
    assert naming.detect_arch(without_head) == arch
    ms_names = naming.name_table(arch, "ms_transfer")
    assert naming.detect_arch({k: () for k in ms_names}) == arch
    assert naming.head_names("ms_transfer", arch) == ("classifier.6.weight", "classifier.6.bias")
    # mindcv's VGG convention: torchvision's module paths with MindSpore's BatchNorm tensor names
    assert set(ms_names) == set(naming.name_table(arch, "mindcv"))
    if arch.endswith("_bn"):
        assert "features.1.gamma" in ms_names and "features.1.moving_variance" in ms_names


def test_ms_model_has_torchvisions_structure_init_and_api(ms_vgg11_bn):
    net = ms_vgg11_bn
    assert {"vgg11", "vgg11_bn", "vgg16", "vgg19_bn"} <= set(list_models())
    from ms_transfer.mindspore_backend.frozen_trunk import head_name
    assert head_name(net) == head_module("vgg11_bn") == "classifier" and head_name(build_model("resnet18", 2)) == "fc"
    assert sorted(p.name for p in net.get_parameters()) == sorted(naming.name_table("vgg11_bn", "ms_transfer"))
    p = {q.name: q.asnumpy() for q in net.get_parameters()}
    # torchvision's init: Kaiming normal (fan_out, ReLU gain) convs, zero biases, N(0, 0.01) linears. The sample
    # std of n normal draws has relative sd 1/sqrt(2n): 1.7% for the first conv's 1728 weights, so 10% is ~6 sd.
    for name, fan_out in (("features.0.weight", 64 * 9), ("features.4.weight", 128 * 9)):
        assert abs(p[name].std() / np.sqrt(2.0 / fan_out) - 1) < 0.10, name
    assert abs(p["classifier.0.weight"].std() / 0.01 - 1) < 0.01   # 102.8M draws
    assert not any(p[k].any() for k in p if k.endswith(".bias") or k.endswith(".beta"))
    assert all((p[k] == 1).all() for k in p if k.endswith(".gamma"))
    import mindspore as ms
    for size in (32, 64):
        x = ms.Tensor(np.zeros((2, 3, size, size), np.float32))
        assert net.forward_features(x).shape == (2, 25088)
    with pytest.raises(ValueError, match="only torch-style"):
        build_model("vgg11", 10, padding="same")


def test_reset_classifier_replaces_only_the_class_layer():
    net = build_model("vgg11", 10)
    hidden = net.classifier[3].weight.asnumpy().copy()
    net.reset_classifier(3)
    names = [q.name for q in net.get_parameters()]
    assert names[-2:] == ["classifier.6.weight", "classifier.6.bias"] and len(names) == len(set(names))
    assert net.classifier[6].weight.shape == (3, 4096) and net.num_classes == 3
    assert np.array_equal(net.classifier[3].weight.asnumpy(), hidden)


def test_freezing_presets_and_config_for_vgg():
    assert strategy_patterns("fixed_feature", arch="vgg16") == (["*"], ["classifier.*"])
    assert strategy_patterns("fixed_feature") == (["*"], ["fc.*"])
    head, main = plan_stages(TrainConfig(arch="vgg16", head_epochs=1, epochs=2).validate())
    assert head.unfreeze == ["classifier.*"] and main.name == "finetune"
    with pytest.raises(ConfigError, match="features.0"):
        TrainConfig(arch="vgg16", strategy="partial").validate()
    with pytest.raises(ConfigError, match="vgg16 downsamples by 32"):
        TrainConfig(arch="vgg16", image_size=16).validate()


# --- the pooling and the transform -----------------------------------------------------------------------------

def test_adaptive_pool_follows_torchs_bin_rule_at_any_size():
    """MindSpore's AdaptiveAvgPool2d((7, 7)) against torch's at sizes below, at and above 7 (bins overlap wherever
    7 does not divide n); the injected floor-ended rule differs exactly where bins overlap. PYNATIVE: the bin rule is
    the kernel's, and the mode had been whichever the test before left set (GRAPH compiled 16 one-layer graphs, 24 of
    the test's 25 s); the VGG parity tests run the pool in GRAPH mode where its bins overlap (64 px: 2 x 2 maps)."""
    import mindspore as ms
    from mindspore import nn

    from ms_transfer.mindspore_backend.context import set_context
    from parity.suite.bugs import _FloorBinPool
    set_context("pynative", "CPU")
    rng = np.random.RandomState(0)
    for n in (1, 2, 3, 5, 7, 9, 14, 15):
        x = rng.standard_normal((2, 4, n, n + 1)).astype(np.float32)
        ref = torch.nn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(x).double()).numpy()
        got = nn.AdaptiveAvgPool2d((7, 7))(ms.Tensor(x)).asnumpy()
        # a mean of <= 9 float32 values: a few ulps of the inputs' magnitude (|x| < 5)
        assert np.abs(got - ref).max() < 1e-6 * 8, n
        square = np.ascontiguousarray(x[..., :n])
        wrong = _FloorBinPool(7)(ms.Tensor(square)).asnumpy()
        ref = torch.nn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(square).double()).numpy()
        assert (np.abs(wrong - ref).max() > 1e-3) == (n not in (1, 7, 14)), n


@pytest.mark.parametrize("size", [(300, 200), (225, 224), (100, 250), (150, 150), (223, 301)])
def test_center_crop_is_torchvisions(size):
    """``resize: center`` (the cats-vs-dogs article's CenterCrop(224)): the MindSpore pipeline's numpy crop equals torchvision's
    CenterCrop, including its zero padding of images smaller than the crop and its rounding of odd offsets."""
    from PIL import Image
    rng = np.random.RandomState(sum(size))
    image = rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    expected = np.asarray(torchvision.transforms.CenterCrop(224)(Image.fromarray(image)))
    assert np.array_equal(CenterCrop(224)(image), expected)


def test_transform_defaults_to_the_weights_entrys_eval_transform():
    """``normalize`` / ``resize`` default to ``auto``: the pretrained entry's eval transform (ResNet V2: resize 232;
    VGG: 256, ImageNet mean/std), else torchvision's ImageNet recipe; explicit keys win; the cats-vs-dogs config sets its
    own (center crop, mean = std = 0.5)."""
    from ms_transfer.core.config import resolve_config
    from ms_transfer.core.data import Preprocess
    from torch_reference.data import val_transforms

    def pre(**kw):
        return Preprocess.from_config(TrainConfig(**kw).validate())
    assert (pre(pretrained="resnet50_imagenet1k_v2").eval_resize_size, pre().eval_resize_size) == (232, 256)
    assert pre(pretrained="ResNet50_Weights.IMAGENET1K_V2", image_size=112).eval_resize_size == 116
    v = pre(arch="vgg16", pretrained="vgg16_imagenet1k_v1")
    assert (v.normalize, v.resize, v.eval_resize_size) == ("imagenet", "crop", 256)
    assert pre(pretrained="resnet50_imagenet1k_v2", resize="crop").eval_resize_size == 256
    resize = val_transforms(pre(pretrained="resnet50_imagenet1k_v2")).transforms[0]
    assert isinstance(resize, torchvision.transforms.Resize) and resize.size == 232
    seed = Preprocess.from_config(resolve_config(["--config", "cats_dogs_vgg16"]))
    assert (seed.normalize, seed.resize, seed.mean) == ("half", "center", (0.5, 0.5, 0.5))


# --- conversion --------------------------------------------------------------------------------------------

def _round_trip(tmp_path, arch):
    torch.manual_seed(0)
    model = build_torch(arch, 1000)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    torch.save(model.state_dict(), tmp_path / "a.pth")
    del model
    # the expected and final tensors are read mapped (file pages, not the process's own memory): the three conversions
    # run without VGG11-BN's 0.53 GB held beside them
    expected = torch.load(tmp_path / "a.pth", weights_only=True, mmap=True)
    assert convert_main([str(tmp_path / "a.pth"), str(tmp_path / "b.ckpt")]) == 0
    assert set(read_weights(tmp_path / "b.ckpt").state) == set(naming.name_table(arch, "ms_transfer"))
    assert convert_main([str(tmp_path / "b.ckpt"), str(tmp_path / "c.safetensors"), "--naming", "mindcv"]) == 0
    assert convert_main([str(tmp_path / "c.safetensors"), str(tmp_path / "d.pth")]) == 0
    got = torch.load(tmp_path / "d.pth", weights_only=True, mmap=True)
    assert list(got) == list(expected)
    assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in expected.items())


def test_round_trip_is_bit_exact(tmp_path):
    _round_trip(tmp_path, "vgg11_bn")


@pytest.mark.slow
@pytest.mark.parametrize("arch", VGGS)
def test_round_trip_is_bit_exact_every_depth(tmp_path, arch):
    _round_trip(tmp_path, arch)


# --- parity ------------------------------------------------------------------------------------------------

def test_parity_catches_the_vgg_bugs():
    """One eval-mode comparison of VGG11-BN at 64 px (2x2 maps before the 7x7 pool: overlapping bins), its reference
    and floor computed once, against four ports: the correct one passes; a floor-ended pooling bin rule, VGG's
    square hidden classifier layer loaded transposed, and the class layer's weight read in the wrong memory order
    each fail. Every other depth: ``test_cli_catches_the_vgg_bugs_every_depth`` (slow)."""
    arch = "vgg11_bn"
    from conftest import SharedReference
    from parity.suite.bugs import inject
    from parity.suite.problems import make_problem

    problem = make_problem(arch, 10, 2, 64, 0)
    # the model's tensors are the problem's arrays (assign=True: shared, not copied into initialised weights; the
    # torch and MindSpore states share their arrays too): one copy of VGG11-BN's weights for both, 0.48 GiB
    model = _meta_torch(arch)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in problem.torch_state.items()}, assign=True)
    problem.torch_state = None
    port = build_model(arch, 10)
    shared = SharedReference(model, port, problem.x, problem.y, ["eval_logits"], "graph")
    ratios = {}
    for bug in (None, "pool_bins", "classifier_transposed", "fc_transposed"):
        net, port = (build_model(arch, 10) if bug else port), None   # the clean case's cell goes with its case
        state = dict(problem.ms_state)
        if bug:
            inject(bug, net, state)
        (result,) = shared.compare(net, state)
        assert result.check == "eval outputs" and np.isfinite(result.max_abs), result.worst   # the port ran
        ratios[bug] = (result.passed, result.ratio)
        # before the next port is built: one VGG11-BN cell (0.48 GiB) at a time; its parameters are in reference
        # cycles (MindSpore's ParamInfo points back to each), so only a collection frees them
        del net, state
        gc.collect()
    assert ratios[None][0], ratios
    assert not any(ratios[b][0] for b in ratios if b), ratios
    assert min(ratios[b][1] for b in ratios if b) > 100, ratios   # far outside the bound K = 4


def test_dropout_check_catches_keep_probability_for_drop_probability():
    """The train-mode checks run with dropout off; the dropout row runs each port layer alone. VGG11 built with
    dropout 0.2 (torchvision's argument): correct at 0.2, and ``nn.Dropout(0.2)`` positional (MindSpore's
    ``keep_prob``: drops 80%) fails by hundreds of standard deviations. At 0.5 the two readings coincide."""
    from mindspore import nn

    from parity.suite.bugs import dropout_keep_prob
    from parity.engine.dropout import SIGMAS, compare_dropout, ms_dropout_stats, torch_dropout_ps

    torch_ps = torch_dropout_ps(_meta_torch("vgg11", dropout=0.2))
    assert torch_ps == [("classifier.2", pytest.approx(0.2)), ("classifier.5", pytest.approx(0.2))]
    net = build_model("vgg11", 10, dropout=0.2)
    ok = compare_dropout(torch_ps, ms_dropout_stats(net))
    assert ok.passed, ok
    dropout_keep_prob(net, {})
    bad = compare_dropout(torch_ps, ms_dropout_stats(net))
    assert not bad.passed and bad.ratio > 100 * SIGMAS, bad
    # The drop rate is sampled: 0.8 within SIGMAS binomial sd over the 2**20 draws (sd = 3.9e-4), not a fixed string.
    rate = float(re.search(r"port drops ([0-9.]+)", bad.worst).group(1))
    assert abs(rate - 0.8) < SIGMAS * (0.8 * 0.2 / 2**20) ** 0.5 + 5e-5, bad.worst   # + half the printed 4th digit
    half = nn.SequentialCell([nn.Dropout(p=0.5)])
    dropout_keep_prob(half, {})
    assert compare_dropout([("0", 0.5)], ms_dropout_stats(half)).passed
    assert not compare_dropout([("0", 0.5), ("1", 0.5)], ms_dropout_stats(half)).passed  # layer counts differ


def _parity_cli(*args):
    """``python -m parity ARGS`` in its own process (a MindSpore process keeps every graph it compiled: one VGG
    depth in both modes peaks at ~19 GB, so depths cannot share a process)."""
    proc = subprocess.run([sys.executable, "-m", "parity", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("arch", VGGS)
def test_parity_every_depth_in_both_modes(arch):
    out = _parity_cli("--arch", arch, "--image-size", "64", "--num-classes", "10", "--mode", "both")
    assert out.count("PASSED in") == 2 and out.count("dropout (train mode)") == 2


@pytest.mark.slow
@pytest.mark.parametrize("bug", ["pool_bins", "classifier_transposed", "fc_transposed"])
@pytest.mark.parametrize("arch", [a for a in VGGS if a != "vgg11_bn"])
def test_cli_catches_the_vgg_bugs_every_depth(arch, bug):
    proc = subprocess.run([sys.executable, "-m", "parity", "--arch", arch, "--image-size", "64", "--num-classes", "10",
                           "--mode", "graph", "--checks", "eval_logits", "--inject", bug], capture_output=True, text=True)
    assert proc.returncode == 1 and "FAIL" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_reference_bundle_of_a_vgg_round_trips_without_torch_and_catches_a_bug(tmp_path):
    """The portable-bundle route (the way to GPU parity on users' boxes) for the second family: VGG11-BN at 64 px
    (2x2 maps before the 7x7 pool, so the bin rule matters), written with torch, checked in both modes in a
    process where torch cannot be imported; a port with the floor-ended bin rule fails against the same bundle.
    (The bundle checks the port with the bundle's own weights, so the weight-layout bugs do not apply here.)"""
    from test_parity_reference import BLOCK_TORCH
    from ms_transfer.mindspore_backend.context import set_context
    from parity.suite.bugs import inject
    from parity.engine.bundle import check_reference

    bundle = tmp_path / "vgg11_bn-64"
    _parity_cli("--arch", "vgg11_bn", "--image-size", "64", "--num-classes", "10", "--save-reference", str(bundle))
    assert sum(f.stat().st_size for f in bundle.iterdir()) < 5e6   # weights regenerated from the seed, not stored
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "--check-reference", str(bundle), "--mode", "both"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("PASSED") == 2 and proc.stdout.count("dropout (train mode)") == 2
    set_context("graph", "CPU")
    net = build_model("vgg11_bn", 10)
    inject("pool_bins", net, {})
    report = check_reference(bundle, net, mode="graph")
    assert not report.passed and "eval outputs" in {r.check for r in report.results if not r.passed}


@pytest.mark.slow
def test_parity_vgg16_at_224_px():
    assert "PASSED in" in _parity_cli("--arch", "vgg16", "--mode", "graph")


def test_training_step_parity_in_seed_002s_regime():
    """``--train-steps`` for the seed's regime: everything frozen but classifier.6, Adam. Both real trainers, 2 steps
    of VGG11 at 32 px against one float64 reference and its floor: the clean trainer passes, and MindSpore's own
    ``nn.Adam`` (``adam_tf_epsilon``: eps on the uncorrected moment) fails. On ResNet18's fc the same bug stays
    inside the bound (scale ratio 3.2: larger gradients make eps matter less), so VGG is where it is tested."""
    from ms_transfer.mindspore_backend.context import set_context
    from parity import ParityConfig
    from parity.engine.tolerance import K
    from parity.suite.problems import make_problem
    from parity.suite.run import training_reference, training_rows

    cfg = ParityConfig(arch="vgg11", mode="graph", batch=4, image_size=32, num_classes=10, train_steps=2)
    set_context("graph", "CPU")
    problem = make_problem(cfg.arch, cfg.num_classes, cfg.batch, cfg.image_size, cfg.seed)
    reference = training_reference(cfg, problem, "last_layer_adam")
    clean = training_rows(cfg, problem, reference)
    # VGG11 has no BatchNorm: no statistics row
    assert [r.check for r in clean] == ["last_layer_adam: loss, 2 steps", "last_layer_adam: param updates"]
    assert all(r.passed for r in clean), clean
    broken = {r.check: r for r in training_rows(cfg, problem, reference, "adam_tf_epsilon")}
    updates = broken["last_layer_adam: param updates"]
    assert not updates.passed and max(updates.ratio, updates.scale_ratio) > 10 * K, updates


def test_adam_is_torchs_rule_and_mindsporess_own_is_not():
    """``ms_transfer.mindspore_backend.optim``'s Adam (two groups at different LRs, a per-step schedule, weight decay)
    gives bit-identical updates to ``torch.optim.Adam`` in both modes, including gradients near eps; MindSpore's
    ``nn.Adam`` (eps on the uncorrected second moment) does not, which the training-step check catches
    (``--inject adam_tf_epsilon``, above)."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn

    from ms_transfer.mindspore_backend.optim import build_optimizer

    rng = np.random.RandomState(0)
    w0 = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) * s for w in w0] for s in (1e-3, 1e-6, 1.0, 1e-4)]
    lrs = [1e-3, 2e-3, 1e-3, 5e-4]
    tp = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
    topt = torch.optim.Adam([{"params": [tp[0]]}, {"params": [tp[1]]}], weight_decay=1e-2)
    for step, g in enumerate(grads):
        for q, x in zip(tp, g):
            q.grad = torch.from_numpy(x)
        for group, mult in zip(topt.param_groups, (1.0, 10.0)):
            group["lr"] = lrs[step] * mult
        topt.step()
    expected = [q.detach().numpy() for q in tp]
    for mode in (ms.GRAPH_MODE, ms.PYNATIVE_MODE):
        ms.set_context(mode=mode)
        for ours in (True, False):
            ps = [Parameter(Tensor(w.copy()), name=f"p{i}") for i, w in enumerate(w0)]
            groups = [(1.0, [ps[0]]), (10.0, [ps[1]])]
            opt = build_optimizer("adam", groups, lrs, 0.9, 1e-2) if ours else nn.Adam(
                [{"params": ps_, "lr": [m * v for v in lrs], "weight_decay": 1e-2} for m, ps_ in groups],
                learning_rate=lrs)
            for g in grads:
                opt(tuple(Tensor(x) for x in g))
            same = all(np.array_equal(p.asnumpy(), e) for p, e in zip(ps, expected))
            assert same == ours, (mode, ours)
    ms.set_context(mode=ms.PYNATIVE_MODE)


# --- the cats-vs-dogs config, both frameworks ---------------------------------------------------------------------

def test_cats_dogs_config_trains_only_the_class_layer_in_both_frameworks(tmp_path, demo_images):
    """configs/cats_dogs_vgg16.yaml (VGG16, classifier.6 only, Adam, center crop, mean = std = 0.5) on a generated
    two-class folder at 32 px, from the same pretrained file in both frameworks: every tensor but classifier.6 is
    still the pretrained one, and each run's checkpoint evaluates to the same accuracy in the other framework."""
    from ms_transfer.core.config import resolve_config
    from ms_transfer.evaluate import evaluate_checkpoint
    from ms_transfer.train import train
    from torch_reference.evaluate import evaluate_checkpoint as torch_evaluate
    from torch_reference.train import train as torch_train

    torch.manual_seed(0)
    pretrained = tmp_path / "vgg16.pth"
    torch.save(build_torch("vgg16", 1000).state_dict(), pretrained)
    data = demo_images(6, 3)
    runs = {}
    for framework, run in (("mindspore", train), ("torch", torch_train)):
        out = tmp_path / framework
        cfg = resolve_config(["--config", "cats_dogs_vgg16", "--data-dir", str(data), "--image-size", "32",
                              "--pretrained", str(pretrained), "--output-dir", str(out), "--num-workers", "1"])
        assert (cfg.normalize, cfg.resize, cfg.augment, cfg.optimizer) == ("half", "center", "none", "adam")
        summary = run(cfg)
        runs[framework] = (out, summary)
    from ms_transfer.core.convert import convert_weights
    # mapped from the file, not read into memory: VGG16's weights held beside each checkpoint read had become the
    # test's peak (3.28 GiB of anonymous memory alone)
    before = {k: v.numpy() for k, v in torch.load(pretrained, weights_only=True, mmap=True).items()}
    for framework, (out, _) in runs.items():
        ckpt = out / ("best.ckpt" if framework == "mindspore" else "best.pth")
        state, _, _ = convert_weights(read_weights(ckpt), "torchvision")
        trunk = [k for k in before if not k.startswith("classifier.6.")]   # the class layer: 1000 -> 2 classes
        assert [k for k in trunk if not np.array_equal(before[k], state[k])] == [], framework
        assert state["classifier.6.weight"].shape == (2, 4096)
        rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
        assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
        del state   # one framework's weights at a time
    del before
    for framework, (out, _) in runs.items():
        ckpt = out / ("best.ckpt" if framework == "mindspore" else "best.pth")
        mine = (evaluate_checkpoint if framework == "mindspore" else torch_evaluate)(str(ckpt), str(data))
        other = (torch_evaluate if framework == "mindspore" else evaluate_checkpoint)(str(ckpt), str(data))
        assert mine["accuracy"] == other["accuracy"], framework
        # eval-mode logits agree to ~1e-6 relative (parity above), so the mean loss does to ~1e-5
        assert abs(mine["loss"] - other["loss"]) < 1e-4, framework
