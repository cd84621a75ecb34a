"""Frozen-trunk fast path (ms_transfer.mindspore_backend.frozen_trunk) and trunk-feature cache
(ms_transfer.core.feature_cache), wired into the one training loop (ms_transfer.core.loop) through the MindSpore
backend."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import crash_after, small_config
from mindspore import nn

import ms_transfer.core.feature_cache as features_mod
import ms_transfer.core.recipe as recipe
from ms_transfer.mindspore_backend.backend import MindSporeBackend, make_loss
from ms_transfer.mindspore_backend.checkpoint import load_state_into
from ms_transfer.core.config import ConfigError
from ms_transfer.core.data import batch_indices, scan_split
from ms_transfer.core.demo_data import make_demo_dataset
from ms_transfer.core.feature_cache import CACHE_STATS, FeatureCache, FeatureCollector, FeatureStore, trunk_fingerprint
from ms_transfer.core.freeze import strategy_patterns
from ms_transfer.mindspore_backend.data import create_dataset
from ms_transfer.mindspore_backend.frozen_trunk import FrozenTrunkStep
from ms_transfer.models import create_model, load_run_checkpoint
from ms_transfer.mindspore_backend.optim import apply_freeze, momentum_sgd
from ms_transfer.train import train


@pytest.fixture(scope="module")
def data_dir(demo_images):
    return demo_images(6, 3)  # 12 train images, 6 val


@pytest.fixture(autouse=True)
def _fresh_stats():
    CACHE_STATS.clear()


def _cfg(data_dir, out, **kw):
    return small_config(data_dir, out, **{"epochs": 3, "strategy": "fixed_feature", "augment": "none", **kw})


def _params(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def _run(data_dir, out, **kw):
    train(_cfg(data_dir, out, **kw))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, _params(load_run_checkpoint(out / "last.ckpt")[0])


def _frozen_net(seed=0):
    ms.set_seed(seed)
    net = create_model("resnet18", num_classes=2)
    apply_freeze(net, *strategy_patterns("fixed_feature"))
    return net


# --- the fast path --------------------------------------------------------------------------------------

def test_fast_path_equals_full_net_train_cell_and_keeps_the_trunk_bit_identical(ms_mode):
    """Trunk inference + head step vs nn.TrainOneStepCell over the whole frozen net (the old path).

    Both run the same kernels on the same inputs: the trunk's forward with moving-statistics BatchNorm and the
    fc gradient ``dlogits^T @ features``; the full cell's backward only adds work whose results are discarded.
    Measured: bit-identical in both modes. The bound allows float32 rounding (a few ulps of each update) in case
    a backend fuses differently; a semantic difference (batch-statistics BN, a wrong LR) is orders larger.
    """
    fast_net, full_net = _frozen_net(), _frozen_net()
    load_state_into(full_net, {k: v for k, v in _params(fast_net).items()})
    initial = _params(fast_net)
    fast = FrozenTrunkStep(fast_net, momentum_sgd(fast_net.trainable_params(), 0.05, 0.9, 1e-4), make_loss())
    full = nn.TrainOneStepCell(nn.WithLossCell(full_net, make_loss()),
                               momentum_sgd(full_net.trainable_params(), 0.05, 0.9, 1e-4))
    full.set_train(True)
    rng = np.random.RandomState(0)
    for n in (4, 4, 2):  # the last batch is partial, like an epoch's remainder
        x = ms.Tensor(rng.standard_normal((n, 3, 32, 32)).astype(np.float32))
        y = ms.Tensor(rng.randint(0, 2, n).astype(np.int32))
        loss, features = fast.step(x, y)
        np.testing.assert_allclose(loss.asnumpy(), full(x, y).asnumpy(), rtol=1e-6)
        # the inference-only trunk (val and cache passes) gives the features the train step used
        np.testing.assert_allclose(fast.extract(x).asnumpy(), features.asnumpy(), rtol=1e-6, atol=1e-6)
    after_fast, after_full = _params(fast_net), _params(full_net)
    for name in ("fc.weight", "fc.bias"):
        update = after_full[name] - initial[name]
        assert np.abs(update).max() > 1e-4, "the head did not train"
        np.testing.assert_allclose(after_fast[name], after_full[name], rtol=0, atol=1e-6 * np.abs(update).max())
    trunk = [n for n in initial if not n.startswith("fc.")]
    assert any(n.endswith("moving_variance") for n in trunk)
    for name in trunk:  # weights and BatchNorm statistics
        np.testing.assert_array_equal(after_fast[name], initial[name], err_msg=name)


def test_fast_path_refuses_a_net_it_would_train_differently():
    ms.set_seed(0)
    net = create_model("resnet18", num_classes=2)
    apply_freeze(net, ["*"], ["fc.*", "layer4.1.*"])
    with pytest.raises(ValueError, match=r"layer4\.1\.conv1\.weight.*apply_freeze"):
        FrozenTrunkStep(net, momentum_sgd(net.trainable_params(), 0.1, 0.9), make_loss())
    net = _frozen_net()
    net.layer2[0].norm1.use_batch_statistics = None  # frozen by hand, BN left in batch-statistics mode
    with pytest.raises(ValueError, match=r"BatchNorm 'layer2\.0\.norm1' is not in inference mode"):
        FrozenTrunkStep(net, momentum_sgd(net.trainable_params(), 0.1, 0.9), make_loss())


# --- cached vs uncached training --------------------------------------------------------------------------

COMPARED = ("train_loss", "val_loss", "val_acc")


def test_cached_training_equals_uncached_and_is_reused_across_runs(data_dir, tmp_path):
    """12 images in batches of 4: every image always sits in a full batch, so its trunk feature is computed
    by the same kernels on the same batch size in every epoch (measured: a feature does not depend on the
    other images in its batch, nor on its position, only, by float rounding, on the batch size). The cache
    therefore reproduces the uncached run's weights and val metrics bit for bit, and a second run reads it
    instead of the trunk.

    The reported train loss may differ in the last bit (measured: 1 ulp at a few steps): an uncached step
    computes it inside the trunk + head graph, a cached one inside the head-only graph, and the two compile
    the loss differently; the updates themselves are identical (the weights are compared bit for bit).
    """
    off_rows, off = _run(data_dir, tmp_path / "off", feature_cache="off")
    assert CACHE_STATS["miss"] == 0 and not (recipe.CACHE_DIR / "features").exists()
    rows, cached = _run(data_dir, tmp_path / "cached")
    assert (CACHE_STATS["miss"], CACHE_STATS["saved"], CACHE_STATS["hit"]) == (2, 2, 0)  # train + val, once
    assert CACHE_STATS["reuse"] == 2 * 2  # epochs 2 and 3: train and val from memory
    for row, off_row in zip(rows, off_rows):
        assert set(row) == set(recipe.METRIC_FIELDS)
        assert (row["val_loss"], row["val_acc"]) == (off_row["val_loss"], off_row["val_acc"])
        assert row["train_loss"] == pytest.approx(off_row["train_loss"], rel=1e-6, abs=0)
    for name in off:
        np.testing.assert_array_equal(cached[name], off[name], err_msg=name)

    CACHE_STATS.clear()
    again_rows, _ = _run(data_dir, tmp_path / "again", epochs=1)  # same data, weights, transform: from disk
    assert (CACHE_STATS["hit"], CACHE_STATS["miss"]) == (2, 0)
    assert again_rows[0]["val_loss"] == rows[0]["val_loss"]
    assert again_rows[0]["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=1e-6, abs=0)


def test_cached_training_with_a_partial_batch_matches_to_float_rounding(data_dir, tmp_path):
    """12 images in batches of 5 (5, 5, 2): an image computed in the partial batch of the filling epoch may sit in
    a full batch of a later uncached epoch, and oneDNN's conv then rounds differently (measured: up to ~3e-7 of the
    feature scale between batch sizes). Over 3 epochs x 3 head steps that moved fc by 6e-7 of its update here;
    the bound, 1e-4 of the update, is far above that and far below what any real difference (another order, a
    stale or misplaced feature) does: O(1) of the update."""
    off_rows, off = _run(data_dir, tmp_path / "off", feature_cache="off", batch_size=5)
    rows, cached = _run(data_dir, tmp_path / "cached", batch_size=5)
    assert CACHE_STATS["reuse"] == 2 * 2
    init = _params(_frozen_net())  # train() seeds and initialises the same way
    for name in ("fc.weight", "fc.bias"):
        update = np.abs(off[name] - init[name]).max()
        assert update > 1e-3
        np.testing.assert_allclose(cached[name], off[name], rtol=0, atol=1e-4 * update, err_msg=name)
    for row, off_row in zip(rows, off_rows):
        np.testing.assert_allclose([row[k] for k in COMPARED], [off_row[k] for k in COMPARED], rtol=1e-5)


def test_cache_views_caches_k_augmented_views_and_resume_rebuilds_a_lost_one(data_dir, tmp_path):
    """augment=random with cache_views=2: epochs 1 and 2 draw (and cache) views 1 and 2 exactly as an uncached
    run would, epoch 3 trains on view 1 again (K views repeat; they are not fresh augmentation).

    Resume after epoch 2 with view 1's entry lost: epoch 3 redraws it from epoch 1's pipeline (same seed, same
    batches, so the same features) and the run ends bit-identical to the uninterrupted one; val comes from disk.
    """
    views = dict(augment="random", cache_views=2)
    rows, full = _run(data_dir, tmp_path / "full", **views)
    entries = {d: json.loads((d / "meta.json").read_text()) for d in (recipe.CACHE_DIR / "features").iterdir()}
    assert sorted((m["split"], m["view"], m.get("data_seed")) for m in entries.values()) == \
        [("train", 0, 1), ("train", 1, 2), ("val", 0, None)]
    assert (CACHE_STATS["miss"], CACHE_STATS["saved"]) == (3, 3)
    assert CACHE_STATS["reuse"] == 1 + 2  # epoch 3's train view; val in epochs 2 and 3
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    cut = _cfg(data_dir, tmp_path / "cut", **views)
    with pytest.raises(KeyboardInterrupt):
        train(cut, callbacks=crash_after(2, cut))
    lost = next(d for d, m in entries.items() if (m["split"], m["view"]) == ("train", 0))
    for f in lost.iterdir():
        f.unlink()
    lost.rmdir()
    CACHE_STATS.clear()
    train(_cfg(data_dir, tmp_path / "cut", resume=True, **views))
    assert (CACHE_STATS["miss"], CACHE_STATS["hit"], CACHE_STATS["saved"]) == (1, 1, 1)  # view 1 redrawn; val
    resumed = _params(load_run_checkpoint(tmp_path / "cut" / "last.ckpt")[0])
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    with pytest.raises(ConfigError, match="cache_views"):
        _cfg(data_dir, tmp_path / "x", cache_views=-1)


# --- keys and invalidation ------------------------------------------------------------------------------

def _cache(net, root, data_dir, **kw):
    args = dict(arch="resnet18", image_size=32, resize_backend="mindspore", augment="none", views=1, seed=0,
                batch_size=4, num_workers=1, device="CPU")
    args.update(kw)
    train_samples, _, _ = scan_split(data_dir, "train")
    val_samples, _, _ = scan_split(data_dir, "val")
    trunk = trunk_fingerprint(MindSporeBackend().adopt(net).trunk_arrays())
    return FeatureCache(trunk, framework="mindspore", train_samples=train_samples, val_samples=val_samples, root=root,
                        log=lambda s: None, **args)


def test_key_changes_with_weights_transform_and_data(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, n_train_per_class=2, n_val_per_class=1, image_size=40, seed=0)
    net = _frozen_net(seed=0)
    base = _cache(net, tmp_path, data)
    key = base.key("train")
    assert _cache(net, tmp_path, data).key("train") == key  # unchanged -> same key
    assert _cache(net, tmp_path, data, seed=5, batch_size=3).key("train") == key  # deterministic: order-free
    net.fc.weight.set_data(net.fc.weight + 1)  # the head is not part of the trunk's features
    assert _cache(net, tmp_path, data).key("train") == key
    assert base.key("val") != key

    changed = {
        "weights (other init)": _cache(_frozen_net(seed=1), tmp_path, data).key("train"),
        "image_size": _cache(net, tmp_path, data, image_size=40).key("train"),
        "resize_backend": _cache(net, tmp_path, data, resize_backend="pil").key("train"),
        "augment": _cache(net, tmp_path, data, augment="random", views=2).key("train", 0),
        "view": _cache(net, tmp_path, data, augment="random", views=2).key("train", 1),
        "arch": _cache(net, tmp_path, data, arch="resnet34").key("train"),
        "normalize": _cache(net, tmp_path, data, normalize="half").key("train"),
        "eval resize": _cache(net, tmp_path, data, resize="exact").key("train"),
    }
    stat = net.norm.moving_mean
    stat.set_data(stat + 1e-3)  # BatchNorm statistics are part of the trunk
    changed["BN statistics"] = _cache(net, tmp_path, data).key("train")
    stat.set_data(stat - 1e-3)

    image = sorted((data / "train" / "synthetic_stripes").iterdir())[0]
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    changed["touched file"] = _cache(net, tmp_path, data).key("train")
    with open(image, "ab") as f:  # modified (size)
        f.write(b"\0")
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed["modified file"] = _cache(net, tmp_path, data).key("train")
    with open(image, "rb+") as f:
        f.truncate(st.st_size)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _cache(net, tmp_path, data).key("train") == key  # restored exactly -> the old entry is valid again
    (data / "train" / "synthetic_stripes" / "extra.png").write_bytes(image.read_bytes())
    changed["added file"] = _cache(net, tmp_path, data).key("train")
    for what, new_key in changed.items():
        assert new_key != key, what
    assert len(set(changed.values())) == len(changed)


def test_shifted_views_are_keyed_apart_from_random_and_unshifted_ones_and_by_their_shift(tmp_path):
    """augment=shift views are random draws (per view and seed), never mistaken for augment=none's one view or
    for a random crop's, and a different augment_shift is a different view."""
    data = tmp_path / "data"
    make_demo_dataset(data, n_train_per_class=2, n_val_per_class=1, image_size=40, seed=0)
    net = _frozen_net(seed=0)
    shifted = _cache(net, tmp_path, data, augment="shift", augment_shift=2, views=2)
    keys = [shifted.key("train", 0), shifted.key("train", 1),
            _cache(net, tmp_path, data, augment="shift", augment_shift=1, views=2).key("train", 0),
            _cache(net, tmp_path, data, augment="random", views=2).key("train", 0),
            _cache(net, tmp_path, data).key("train")]
    assert len(set(keys)) == len(keys)
    assert shifted.source_epoch(1) == 2   # view 1 is what epoch 2's pipeline draws, not any epoch's
    assert shifted.key("val") == _cache(net, tmp_path, data).key("val")   # val is never shifted


def test_touched_train_file_is_recomputed_unchanged_val_is_reused(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, n_train_per_class=2, n_val_per_class=1, image_size=40, seed=0)
    _run(data, tmp_path / "a", epochs=1)
    assert (CACHE_STATS["miss"], CACHE_STATS["hit"]) == (2, 0)
    image = sorted((data / "train" / "synthetic_circles").iterdir())[0]
    os.utime(image)  # new mtime, same bytes: the key must change anyway (cheap, conservative)
    CACHE_STATS.clear()
    _run(data, tmp_path / "b", epochs=1)
    assert (CACHE_STATS["miss"], CACHE_STATS["hit"]) == (1, 1)  # train recomputed, val read from disk
    assert len(list((recipe.CACHE_DIR / "features").iterdir())) == 3


# --- damaged entries and crashes ------------------------------------------------------------------------

def _entry(tmp_path, n=6, dim=8):
    store = FeatureStore(tmp_path / "store", log=lambda s: None)
    labels = np.arange(n, dtype=np.int32) % 2
    features = np.random.RandomState(0).standard_normal((n, dim)).astype(np.float32)
    assert store.save("k" * 64, features, labels, {"split": "train"})
    return store, "k" * 64, features, labels


@pytest.mark.parametrize("damage", ["missing meta", "missing features", "truncated features", "bad json",
                                    "flipped byte", "other labels", "pickled object array"])
def test_damaged_entry_is_ignored_removed_and_rebuilt(tmp_path, damage):
    store, key, features, labels = _entry(tmp_path)
    folder = store.path(key)
    np.testing.assert_array_equal(store.load(key, labels), features)
    if damage == "missing meta":
        (folder / "meta.json").unlink()
    elif damage == "missing features":
        (folder / "features.npy").unlink()
    elif damage == "truncated features":
        data = (folder / "features.npy").read_bytes()
        (folder / "features.npy").write_bytes(data[: len(data) // 2])
    elif damage == "bad json":
        (folder / "meta.json").write_text("{not json")
    elif damage == "flipped byte":
        data = bytearray((folder / "features.npy").read_bytes())
        data[-1] ^= 0xFF
        (folder / "features.npy").write_bytes(bytes(data))
    elif damage == "other labels":
        np.save(folder / "labels.npy", 1 - labels)
    elif damage == "pickled object array":  # never unpickled: np.load(allow_pickle=False) refuses it
        np.save(folder / "features.npy", np.array([object()] * 6, dtype=object), allow_pickle=True)
    assert store.load(key, labels) is None
    assert CACHE_STATS["corrupt"] == 1 and not folder.exists()
    assert store.save(key, features, labels, {"split": "train"})  # rebuilt in place
    np.testing.assert_array_equal(store.load(key, labels), features)


def test_partial_entry_through_the_cache_is_a_miss_then_rebuilt(data_dir, tmp_path):
    cache = _cache(_frozen_net(), tmp_path / "cache", data_dir)
    key = cache.key("val")
    (tmp_path / "cache" / key).mkdir(parents=True)
    np.save(tmp_path / "cache" / key / "features.npy", np.zeros((6, 512), np.float32))  # crashed writer leftovers
    assert cache.get("val") is None and CACHE_STATS["corrupt"] == 1
    labels = cache.labels("val")
    collector = FeatureCollector(labels, batch_indices(len(labels), 4, None))
    for index in collector.batches:
        collector.add(np.full((len(index), 512), 2.0, np.float32), labels[index])
    cache.put("val", 0, collector)
    fresh = _cache(_frozen_net(), tmp_path / "cache", data_dir)
    np.testing.assert_array_equal(fresh.get("val"), np.full((6, 512), 2.0, np.float32))
    assert CACHE_STATS["hit"] == 1


def test_crash_while_writing_leaves_no_entry(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "store", log=lambda s: None)
    real_save, calls = np.save, []

    def failing_save(path, array, **kw):
        calls.append(path)
        real_save(path, array, **kw)
        if len(calls) == 2:
            raise OSError("disk full")
    monkeypatch.setattr(features_mod.np, "save", failing_save)
    assert not store.save("a" * 64, np.zeros((2, 3), np.float32), np.zeros(2, np.int32), {})
    assert list((tmp_path / "store").iterdir()) == []  # neither the entry nor its temp folder
    assert store.load("a" * 64, np.zeros(2, np.int32)) is None


def test_collector_refuses_batches_other_than_planned():
    labels = np.array([0, 1, 0, 1], np.int32)
    collector = FeatureCollector(labels, [np.array([1, 0]), np.array([3, 2])])
    collector.add(np.ones((2, 3), np.float32), np.array([1, 0]))
    collector.add(np.ones((2, 3), np.float32), np.array([1, 1]))  # a substituted image: wrong label
    features, problem = collector.result()
    assert features is None and "batch 1" in problem


def test_shuffled_dataset_follows_batch_indices(data_dir):
    """The explicit permutation is what lets a cached epoch replay the uncached batches."""
    dataset, info = create_dataset(data_dir, "train", 32, 5, train=True, shuffle=True, seed=7, num_workers=2,
                                   augment="none")
    labels = np.array([label for _, label in info.samples])
    got = [y for _, y in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    planned = batch_indices(len(labels), 5, 7)
    assert [len(b) for b in got] == [5, 5, 2]
    for y, index in zip(got, planned):
        np.testing.assert_array_equal(y, labels[index])
    images = np.concatenate([x for x, _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    unshuffled, _ = create_dataset(data_dir, "train", 32, 12, train=True, shuffle=False, seed=0, augment="none")
    reference = next(unshuffled.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]
    np.testing.assert_array_equal(images, reference[np.concatenate(planned)])  # augment=none: the val transform


def test_augment_none_trains_on_the_val_transform_in_both_frameworks(data_dir):
    """augment=none is the deterministic val transform in both data pipelines (resize_backend=pil: torchvision's
    exact resize, so the two agree to float32 rounding of the normalisation)."""
    from ms_transfer.core.data import DatasetError
    from torch_reference.data import create_loader
    ms_ds, _ = create_dataset(data_dir, "train", 32, 12, train=True, shuffle=False, seed=0, augment="none",
                              resize_backend="pil")
    ms_images = next(ms_ds.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]
    loader, _ = create_loader(data_dir, "train", 32, 12, train=True, shuffle=False, seed=0, augment="none")
    np.testing.assert_allclose(ms_images, next(iter(loader))[0].numpy(), atol=1e-5)
    with pytest.raises(DatasetError, match="augment"):
        create_loader(data_dir, "train", 32, 4, train=True, shuffle=False, seed=0, augment="light")
