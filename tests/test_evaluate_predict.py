"""evaluate / predict CLIs and the run plots, on a trained demo run."""
import json

import numpy as np
import pytest
from conftest import live_parameters
from mindspore import Tensor, nn
from PIL import Image

from ms_transfer.mindspore_backend.checkpoint import save_run_checkpoint
from ms_transfer.mindspore_backend.context import set_context
from ms_transfer.core.checkpoint_io import write_weights
from ms_transfer.core.demo_data import make_demo_dataset
from ms_transfer.core.plots import plot_curves, plot_predictions
from ms_transfer.mindspore_backend.data import create_dataset, load_image_for_eval
from ms_transfer.evaluate import evaluate_checkpoint, evaluate_net
from ms_transfer.evaluate import main as evaluate_main
from ms_transfer.models import create_model
from ms_transfer.predict import main as predict_main
from ms_transfer.predict import predict_paths

CLASSES = ["synthetic_circles", "synthetic_stripes"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    set_context("pynative", "CPU")
    root = tmp_path_factory.mktemp("eval")
    data = make_demo_dataset(root / "data", n_train_per_class=2, n_val_per_class=5, image_size=40)
    net = create_model("resnet18", num_classes=2)
    ckpt = root / "best.ckpt"
    save_run_checkpoint(ckpt, net, {"arch": "resnet18", "classes": CLASSES, "image_size": 32})
    return net, ckpt, data


def _independent(net, data):
    """Accuracy, per-class support and mean loss from the same val pipeline, counted by hand."""
    dataset, _ = create_dataset(data, "val", 32, 4, train=False, shuffle=False, seed=0)
    net.set_train(False)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    right = total = 0
    loss = 0.0
    support = np.zeros(2, int)
    for x, y in dataset.create_tuple_iterator(num_epochs=1):
        logits = net(x)
        right += int((logits.asnumpy().argmax(1) == y.asnumpy()).sum())
        loss += float(loss_fn(logits, y).asnumpy())
        support += np.bincount(y.asnumpy(), minlength=2)
        total += len(y)
    return right / total, support, loss / total


def _check(result, net, data):
    acc, support, loss = _independent(net, data)
    confusion = np.array(result["confusion"])
    assert result["num_samples"] == confusion.sum() == support.sum() == 10
    np.testing.assert_array_equal(confusion.sum(1), support)  # rows = true class
    assert result["accuracy"] == pytest.approx(acc)
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    np.testing.assert_allclose(result["per_class_accuracy"], np.diag(confusion) / confusion.sum(1))
    assert result["loss"] == pytest.approx(loss, rel=1e-5)


def test_evaluate_matches_an_independent_count(run):
    net, ckpt, data = run
    result = evaluate_checkpoint(str(ckpt), str(data), batch_size=3)
    assert result["classes"] == CLASSES
    _check(result, net, data)
    dataset, _ = create_dataset(data, "val", 32, 4, train=False, shuffle=False, seed=0)
    direct = evaluate_net(net, dataset)  # the same loop on a dataset built by hand, other batch size
    assert direct["confusion"] == result["confusion"] and direct["num_samples"] == result["num_samples"]


def test_evaluate_graph_mode(run):
    """GRAPH mode gives the same numbers, and the network ``evaluate_checkpoint`` built is not kept alive after it
    (MindSpore's graph executor keeps the last compiled cell's parameters: ``release_compiled_graphs``)."""
    net, ckpt, data = run
    before = live_parameters()
    set_context("graph", "CPU")
    try:
        result = evaluate_checkpoint(str(ckpt), str(data), batch_size=5)
    finally:
        set_context("pynative", "CPU")
    _check(result, net, data)
    assert live_parameters() <= before


def test_evaluate_cli(run, tmp_path, capsys):
    _, ckpt, data = run
    assert evaluate_main(["--ckpt", str(ckpt), "--data-dir", str(data), "--mode", "pynative",
                          "--json", str(tmp_path / "r.json")]) == 0
    assert "confusion matrix" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["classes"] == CLASSES
    assert evaluate_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--data-dir", str(data)]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    write_weights(junk, {"w": np.zeros(2, np.float32)})
    assert evaluate_main(["--ckpt", str(junk), "--data-dir", str(data), "--mode", "pynative"]) == 2
    assert str(junk) in capsys.readouterr().err


@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_a_plain_weight_file_evaluates_like_its_run_checkpoint(run, tmp_path, framework):
    """Both evaluate commands take a weight file without run metadata (classes: the split's folders), with the
    run checkpoint's result; a head of another size is refused, naming both counts."""
    net, ckpt, data = run
    if framework == "mindspore":
        evaluate = evaluate_checkpoint
    else:
        from torch_reference.evaluate import evaluate_checkpoint as evaluate
    state = {p.name: p.asnumpy() for p in net.get_parameters()}
    plain = tmp_path / "plain.ckpt"
    write_weights(plain, state)
    got = evaluate(str(plain), str(data), image_size=32, num_workers=0)
    want = evaluate(str(ckpt), str(data), num_workers=0)
    assert got["classes"] == want["classes"] == CLASSES
    assert got["confusion"] == want["confusion"] and got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    three = create_model("resnet18", num_classes=3)
    write_weights(tmp_path / "three.ckpt", {p.name: p.asnumpy() for p in three.get_parameters()})
    with pytest.raises(ValueError, match="3-class head but .* has 2 class folders"):
        evaluate(str(tmp_path / "three.ckpt"), str(data), image_size=32, num_workers=0)


def test_evaluate_class_mismatch_names_both(run, tmp_path):
    net, _, data = run
    ckpt = tmp_path / "other.ckpt"
    save_run_checkpoint(ckpt, net, {"arch": "resnet18", "classes": ["cats", "dogs"], "image_size": 32})
    with pytest.raises(ValueError, match=r"(?s)synthetic_circles.*cats"):
        evaluate_checkpoint(str(ckpt), str(data))
    assert evaluate_main(["--ckpt", str(ckpt), "--data-dir", str(data), "--mode", "pynative"]) == 2


def test_predict_cli(run, tmp_path, capsys):
    _, ckpt, data = run
    images = sorted((data / "val" / "synthetic_circles").iterdir())[:2]
    assert predict_main(["--ckpt", str(ckpt), "--format", "json", "--top-k", "2", "--json",
                         str(tmp_path / "out" / "predictions.json"), *map(str, images)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == results   # --json PATH: the file
    assert [r["path"] for r in results] == [str(p) for p in images]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert all(0 <= p <= 1 for p in probs) and sum(probs) == pytest.approx(1.0)
        assert {t["class"] for t in r["top"]} == set(CLASSES)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert predict_main(["--ckpt", str(ckpt), str(bad), str(images[0])]) == 2   # bad input (it was 1)
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err and str(images[0]) in captured.out


def test_predict_paths_library(run, tmp_path):
    net, _, data = run
    image = sorted((data / "val" / "synthetic_stripes").iterdir())[0]
    good, missing = predict_paths(net, CLASSES, [image, tmp_path / "nope.png"], 32)
    assert good["class"] in CLASSES and 0.5 <= good["probability"] <= 1 and len(good["top"]) == 1
    logits = net(Tensor(load_image_for_eval(image, 32))).asnumpy()[0]
    assert good["class"] == CLASSES[int(logits.argmax())]
    assert "error" in missing and "nope.png" in missing["path"]


def test_plots(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_acc": 0.5 + 0.1 * e} for e in (1, 2)]
    plot_curves(history, tmp_path / "curves.png")
    images = np.concatenate([load_image_for_eval(_png(tmp_path, i), 32) for i in range(3)])
    colours = plot_predictions(images, [0, 1, 1], [0, 0, 1], CLASSES, tmp_path / "predictions.png")
    assert colours == ["blue", "red", "blue"]
    for name in ("curves.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def _png(tmp_path, i):
    path = tmp_path / f"img{i}.png"
    Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(path)
    return path


def test_graph_eval_runs_every_batch_at_one_size_and_a_best_checkpoint_loads_into_the_same_net(run, tmp_path):
    """In GRAPH mode MindSpore compiles a graph per input shape, so the backend runs every eval batch at one size
    (the first batch's here; a training run's ``batch_size``): a smaller batch zero-padded, a larger one in pieces.
    Padding changes no sample's outputs. A run's test pass loads its best checkpoint into the net it trained (whose
    graphs are compiled), not into a new one; a checkpoint of another model still gets a new net."""
    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from ms_transfer.models import load_run_checkpoint

    net, ckpt, _ = run
    trained = create_model("resnet18", num_classes=2)
    sizes = []

    class Seen:   # the backend's net, recording the batch size of every call
        def __call__(self, *inputs):
            sizes.append(inputs[0].shape[0])
            return trained(*inputs)

        def __getattr__(self, name):
            return getattr(trained, name)

    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    set_context("graph", "CPU")
    try:
        backend = MindSporeBackend().adopt(Seen())
        first, rest, whole = backend.logits(x[:4]), backend.logits(x[4:]), backend.logits(x)
        assert sizes == [4, 4, 4, 4]   # 4; 3 padded; 7 as 4 + 3 padded
        # the same graph on the same rows, bit for bit, whatever fills the rest of the batch
        np.testing.assert_array_equal(whole, np.concatenate([first, rest]))
        np.testing.assert_array_equal(backend.logits(np.concatenate([x[4:], x[:1]]))[:3], rest)
        backend.adopt(trained)
        backend.load_run(ckpt)
        assert backend.model is trained
        for mine, saved in zip(trained.get_parameters(), net.get_parameters()):
            np.testing.assert_array_equal(mine.asnumpy(), saved.asnumpy(), err_msg=mine.name)
    finally:
        set_context("pynative", "CPU")
    other = tmp_path / "three.ckpt"
    save_run_checkpoint(other, create_model("resnet18", num_classes=3), {"arch": "resnet18", "classes": list("abc")})
    rebuilt, _ = load_run_checkpoint(other, into=trained)
    assert rebuilt is not trained and rebuilt.fc.weight.shape[0] == 3 and trained.fc.weight.shape[0] == 2
