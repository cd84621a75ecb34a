"""``head_init: class_means``: the head classifies by the nearest class mean of the trunk's features (cosine), in
numpy for heads of one to three Dense layers, and in a training run of both frameworks (epoch 0 of the run is that
classifier, validated and saved like any epoch)."""
import json

import numpy as np
import pytest
import torch
from conftest import small_config, train_digits

from ms_transfer.core import recipe
from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.core.class_means import ClassMeansError, class_means, class_means_head
from ms_transfer.core.config import ConfigError
from ms_transfer.core.convert import convert_weights
from ms_transfer.core.data import scan_dataset, subset_split
from ms_transfer.core.feature_cache import CACHE_STATS
from torch_reference.backend import TorchBackend
from torch_reference.models import build_model, load_numpy_state


def _dense_head(rng, sizes):
    """``(name, array)`` of Dense layers ``sizes[0] -> sizes[1] -> ...`` (weights (out, in), then biases)."""
    return [item for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))
            for item in ((f"fc.{i}.weight", rng.normal(size=(n_out, n_in)).astype(np.float32)),
                         (f"fc.{i}.bias", rng.normal(size=n_out).astype(np.float32)))]


def _forward(arrays, names, x):
    """The head's logits: Dense, ReLU between Dense layers (dropout is off in evaluation)."""
    for i, (w, b) in enumerate(zip(names[0::2], names[1::2])):
        x = x @ arrays[w].T.astype(np.float64) + arrays[b]
        if i < len(names) // 2 - 1:
            x = np.maximum(x, 0)
    return x


@pytest.mark.parametrize("sizes", [(12, 4), (12, 8, 4), (12, 9, 8, 4)])
def test_the_head_scores_each_class_by_its_mean_and_so_picks_the_nearest_by_cosine(rng, sizes):
    features = rng.normal(size=(40, 12))
    labels = np.arange(40) % 4
    means = class_means(features, labels, 4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = np.stack([unit[labels == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(means, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-12)
    head = _dense_head(rng, sizes)
    arrays = class_means_head(head, means)
    assert [n for n, _ in head] == list(arrays) and all(arrays[n].shape == a.shape for n, a in head)
    x = rng.normal(size=(25, 12))
    logits = _forward(arrays, [n for n, _ in head], x)
    # float32 weights of float64 means: one rounding (float32 epsilon 6e-8) per product, sums of 12 terms
    np.testing.assert_allclose(logits, x @ means.T, rtol=1e-5, atol=1e-6)
    cosine = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ means.T
    assert (logits.argmax(1) == cosine.argmax(1)).all()
    # the hidden units beyond the 2 x 4 that carry the scores keep their drawn weights (so they output something
    # and can train; at zero they never would), and the next layer does not read them yet
    drawn = dict(head)
    for w, b in zip([n for n, _ in head][0:-2:2], [n for n, _ in head][1:-2:2]):
        np.testing.assert_array_equal(arrays[w][8:], drawn[w][8:])
        np.testing.assert_array_equal(arrays[b][8:], drawn[b][8:])
    for w in [n for n, _ in head][2::2]:
        assert not arrays[w][:, 8:].any()


def test_a_head_that_cannot_hold_the_scores_or_a_class_without_images_is_refused(rng):
    means = class_means(rng.normal(size=(8, 12)), np.arange(8) % 4, 4)
    with pytest.raises(ClassMeansError, match=r"fc.0.weight has 6 units; .* needs >= 8"):
        class_means_head(_dense_head(rng, (12, 6, 4)), means)
    with pytest.raises(ClassMeansError, match="maps 10 features to 4 classes, the class means are 4 x 12"):
        class_means_head(_dense_head(rng, (10, 4)), means)
    with pytest.raises(ClassMeansError, match=r"no image of class\(es\) \['cat'\]; .*\(a larger data_fraction"):
        class_means(rng.normal(size=(6, 12)), np.array([0, 1, 2, 0, 1, 2]), 4, ["ant", "bee", "cow", "cat"])


def test_each_framework_sets_a_resnet_head_to_score_by_the_class_means(rng):
    """Through the backends' head_arrays / set_head_arrays / head_logits: a ResNet's one fc. (A two-layer head goes
    through both backends in the training runs below; three layers, a VGG classifier's, are checked in numpy above:
    building a VGG in both frameworks costs 9 s of CI for no other path.)"""
    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from ms_transfer.models import create_model
    backends = [MindSporeBackend().adopt(create_model("resnet18", num_classes=3), "resnet18"),
                TorchBackend().adopt(build_model("resnet18", 3), "resnet18")]
    dim = backends[1].head_arrays()[0][1].shape[1]   # 512 features
    means = class_means(rng.normal(size=(9, dim)), np.arange(9) % 3, 3)
    x = rng.normal(size=(4, dim)).astype(np.float32)
    for backend in backends:
        head = backend.head_arrays()
        assert [a.ndim for _, a in head] == [2, 1]
        with pytest.raises(ClassMeansError, match=r"not parameters of the head: \['fc.bias2'\]"):
            backend.set_head_arrays({"fc.bias2": np.zeros(3)})
        backend.set_head_arrays(class_means_head(head, means))
        # float32 weights and features, 512-term sums of unit-length means: ~1e-6 relative
        np.testing.assert_allclose(backend.head_logits(x), x.astype(np.float64) @ means.T, rtol=1e-4, atol=1e-4)


def test_class_means_need_a_frozen_trunk():
    with pytest.raises(ConfigError, match="head_init class_means .* use strategy fixed_feature, or head_epochs"):
        small_config("data", "out", head_init="class_means", strategy="finetune")
    with pytest.raises(ConfigError, match="head_init class_means needs a classifier; digit_adder"):
        small_config("data", "out", head_init="class_means", strategy="fixed_feature", arch="digit_adder",
                     image_size=28)
    assert small_config("data", "out", head_init="class_means", strategy="finetune", epochs=2, head_epochs=1)


#: the Fashion-MNIST seed's network on 2% of the 5k MNIST digits (70 training images, 10 classes), trunk frozen
RUN = dict(data_fraction=0.02, batch_size=24, epochs=1, strategy="fixed_feature", head_init="class_means",
           num_workers=0)


# augment none: the train features come through the feature cache (filled for epoch 1); shift: one plain pass
@pytest.mark.parametrize("framework, augment", [("mindspore", "none"), ("torch", "shift")])
def test_epoch_0_of_a_run_is_the_nearest_class_mean_classifier_of_its_training_images(tmp_path, framework, augment,
                                                                                        capsys):
    """The run's epoch 0 validation accuracy is that of the nearest class mean (cosine) of the training images'
    trunk features under the eval transform, computed here independently (the checkpoint's frozen trunk in float64
    torch). MindSpore in GRAPH mode, as users and ``make demo`` run it."""
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "CACHE_DIR", tmp_path / "cache")
        CACHE_STATS.clear()
        train_digits("fashion_cnn", tmp_path, out, framework, mode="graph", augment=augment, **RUN)
        reused = CACHE_STATS["reuse"]
        cfg = small_config(tmp_path, tmp_path / "unused", arch="fashion_cnn", dataset="mnist5k", image_size=28,
                           normalize="none", resize="exact", augment="none", **RUN)
        root = recipe.prepare_data(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    # with augment none epoch 1 reads the train features epoch 0 computed (one miss, then from memory, as the val
    # features at epoch 1's validation); with shifts the train set is not cached
    assert capsys.readouterr().out.count("Feature cache: miss for train") == (1 if augment == "none" else 0)
    assert reused == (2 if augment == "none" else 1)
    _, scans = scan_dataset(root)
    split = {"train": subset_split(scans["train"], cfg.data_fraction, cfg.seed), "val": scans["val"]}
    data = {}
    for name, scan in split.items():
        batches, _ = TorchBackend(cfg).loader(scan, train=False, shuffle=False, seed=cfg.seed)
        data[name] = [np.concatenate(parts) for parts in zip(*[(x.numpy(), y.numpy()) for x, y in batches])]
    assert len(data["train"][0]) == 70
    # the trunk is frozen: the last checkpoint's is epoch 0's
    state, _, report = convert_weights(read_weights(out / f"last.{'ckpt' if framework == 'mindspore' else 'pth'}"),
                                       "torchvision")
    model = build_model(report.arch, 10)
    load_numpy_state(model, state)
    model.double().eval()
    with torch.no_grad():
        features = {k: model.features(torch.from_numpy(x.astype(np.float64))).numpy() for k, (x, _) in data.items()}
    means = class_means(features["train"], data["train"][1], 10)
    predicted = (features["val"] @ means.T).argmax(1)
    assert rows[0]["val_acc"] == pytest.approx(float(np.mean(predicted == data["val"][1])), abs=1e-9)
    assert rows[0]["val_acc"] > 0.5   # 7 images per class of 10 digits: far above chance (0.1)
    # epoch 0 is a candidate like any epoch: the test split is evaluated with the best of epochs 0 and 1
    best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]   # a tie keeps the earlier epoch
    assert json.loads((out / "test.json").read_text())["epoch"] == best


def test_a_resumed_run_keeps_its_epoch_0_and_does_not_set_the_head_again(tmp_path, caplog):
    """``--resume`` of a class-means run continues from its last checkpoint: the head trained in epoch 1 is not
    replaced by the class means again, and the history keeps epoch 0 (torch: the loop is shared)."""
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "CACHE_DIR", tmp_path / "cache")
        train_digits("fashion_cnn", tmp_path, out, "torch", **RUN)
        caplog.clear()
        with caplog.at_level("INFO"):
            train_digits("fashion_cnn", tmp_path, out, "torch", **{**RUN, "epochs": 2}, resume=True)
    assert "head_init class_means" not in caplog.text and "Resuming" in caplog.text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
