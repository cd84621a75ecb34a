"""PreciseBN: after a run, the moving statistics of the BatchNorm layers that train are the population statistics
of their inputs over the training split; frozen BatchNorm layers are bit-identical; ``precise_bn: off`` turns it
off. Both frameworks, each checked against statistics computed here independently (torchvision-named weights in
float64, one forward pass over the whole split, numpy's mean and ``var(ddof=1)``).

The run: the Fashion-MNIST seed's network (three Conv-BN blocks) on 2% of the 5k MNIST digits (70 images:
batches of 24, 24 and 22), one epoch, the first two blocks frozen. The one BatchNorm that trains (``bn3``) then has an input
that does not depend on how the split is batched (its upstream BatchNorms are in inference mode), so its
population statistics are unambiguous, and the three batches exercise the per-batch accumulation.
"""
import numpy as np
import pytest
import torch
from conftest import small_config, train_digits

from ms_transfer.core import recipe
from ms_transfer.core.callbacks import PreciseBN, default_callbacks
from ms_transfer.core.callbacks.precise_bn import MomentAccumulator
from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.data import scan_dataset, subset_split
from torch_reference.backend import TorchBackend
from torch_reference.models import build_model, load_numpy_state

FROZEN = ["features.conv1.*", "features.bn1.*", "features.conv2.*", "features.bn2.*"]
RUN = dict(data_fraction=0.02, batch_size=24, epochs=1, freeze=FROZEN, num_workers=0)
EXT = {"mindspore": "ckpt", "torch": "pth"}
#: the key is read in one place (default_callbacks): one framework shows what "off" leaves
RUNS = [("mindspore", "auto"), ("torch", "auto"), ("torch", "off")]


def test_moments_of_batches_combine_into_the_statistics_of_the_whole(rng):
    data = rng.normal(3.0, 2.0, size=(103, 4)) * rng.uniform(0.5, 2, size=4)
    acc = MomentAccumulator()
    for part in np.split(data, [1, 40, 41, 90]):   # unequal batches, two of one element
        acc.add("bn", len(part), part.mean(axis=0), part.var(axis=0))
    mean, var = acc.statistics()["bn"]
    # float32 results of float64 sums: one rounding each (float32 epsilon 6e-8)
    np.testing.assert_allclose(mean, data.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(var, data.var(axis=0, ddof=1), rtol=1e-7)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{(framework, precise_bn): run directory}`` of :data:`RUNS`, and
    the training images under the eval transform (``images``), all sharing one dataset export."""
    tmp = tmp_path_factory.mktemp("precise-bn")
    out = {}
    with pytest.MonkeyPatch.context() as patch:   # module scope: the per-test cache fixture is not set up yet
        patch.setattr(recipe, "CACHE_DIR", tmp / "cache")
        for framework, mode in RUNS:
            run = tmp / f"{framework}-{mode}"
            train_digits("fashion_cnn", tmp, run, framework, precise_bn=mode, **RUN)
            out[framework, mode] = run
        cfg = small_config(tmp, tmp / "unused", arch="fashion_cnn", dataset="mnist5k", image_size=28, normalize="none", resize="exact",
                           augment="none", **RUN)
        root = recipe.prepare_data(cfg)
    _, scans = scan_dataset(root)
    train = subset_split(scans["train"], cfg.data_fraction, cfg.seed)
    batches, _ = TorchBackend(cfg).loader(train, train=False, shuffle=False, seed=cfg.seed)
    out["images"] = np.concatenate([x.numpy() for x, _ in batches])
    assert len(out["images"]) == 70
    return out


def _population_statistics(ckpt, images):
    """``(state, bn3 input mean, bn3 input unbiased var)``: the checkpoint's weights in a float64 torchvision-named
    model, eval mode, every training image in one forward pass."""
    state, _, report = convert_weights(read_weights(ckpt), "torchvision")
    model = build_model(report.arch, 10)
    load_numpy_state(model, state)
    model.double().eval()
    seen = []
    model.features.bn3.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].numpy()))
    with torch.no_grad():
        model(torch.from_numpy(images.astype(np.float64)))
    x = seen[0].transpose(1, 0, 2, 3).reshape(seen[0].shape[1], -1)
    return state, x.mean(axis=1), x.var(axis=1, ddof=1)


@pytest.mark.parametrize("framework", list(EXT))
def test_moving_statistics_are_the_population_statistics_of_the_training_split(runs, framework):
    state, mean, var = _population_statistics(runs[framework, "auto"] / f"last.{EXT[framework]}", runs["images"])
    # float32 convolutions and moments in the framework against float64 here: measured max relative difference
    # of the mean 1.1e-6 (MindSpore) / 0.9e-6 (torch), of the variance 3.4e-7 / 2.2e-7, over 120 channels whose
    # |mean| is 9e-4..0.17; rtol 1e-5 leaves ~10x room (atol: float32 rounding of inputs of order 1 near a zero
    # mean), while the moving averages PreciseBN replaces are off by ~100% (the test below)
    np.testing.assert_allclose(state["features.bn3.running_mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["features.bn3.running_var"], var, rtol=1e-5)
    for frozen in ("features.bn1", "features.bn2"):   # a fresh network's statistics, bit for bit
        assert np.array_equal(state[f"{frozen}.running_mean"], np.zeros_like(state[f"{frozen}.running_mean"]))
        assert np.array_equal(state[f"{frozen}.running_var"], np.ones_like(state[f"{frozen}.running_var"]))


def test_precise_bn_off_keeps_the_moving_averages_of_training(runs):
    assert not any(isinstance(c, PreciseBN) for c in default_callbacks(small_config(".", ".", precise_bn="off")))
    assert any(isinstance(c, PreciseBN) for c in default_callbacks(small_config(".", ".")))  # on by default
    state, mean, var = _population_statistics(runs["torch", "off"] / "last.pth", runs["images"])
    # 3 steps of momentum 0.01 from (0, 1) move the averages about 3% of the way to the batches' statistics
    # (measured: the mean off by 0.130 where the population's largest |mean| is 0.134, the variance by 0.970)
    assert np.abs(state["features.bn3.running_mean"] - mean).max() > 0.5 * np.abs(mean).max()
    assert np.abs(state["features.bn3.running_var"] - var).max() > 0.5 * np.abs(var - 1).max()


def test_a_bare_yaml_off_turns_it_off(tmp_path):
    """YAML 1.1 reads ``precise_bn: off`` as false: the schema takes it as ``off`` (as for ``feature_cache``)."""
    from ms_transfer.core.config import load_yaml
    path = tmp_path / "run.yaml"
    path.write_text("precise_bn: off\nfeature_cache: off\n")
    assert load_yaml(path) == {"precise_bn": "off", "feature_cache": "off"}
