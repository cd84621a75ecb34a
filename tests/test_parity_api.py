"""The any-model parity API on two small models this project does not ship, written independently in both
frameworks: a CNN with BatchNorm and a residual add, and a two-input, two-output network. The clean ports pass
every check in both modes; each injected porting bug fails; unmatched names are reported with the fix."""
import numpy as np
import pytest
import torch
from mindspore import nn, ops

import parity
from ms_transfer.mindspore_backend.context import set_context
from parity.engine.weight_map import NameMapError

# --- model 1: conv-BN-ReLU stem (stride 2), a residual conv-BN, global average pool, linear head -------------


class TorchResCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = self.relu(self.bn(self.stem(x)))
        h = self.relu(h + self.bn2(self.conv(h)))
        return self.fc(h.mean(dim=(2, 3)))


class MsResCNN(nn.Cell):
    """The port; ``bug`` injects one porting mistake."""

    def __init__(self, bug=None):
        super().__init__()
        self.bug = bug
        same = bug == "same_padding"
        self.stem = nn.Conv2d(3, 8, 3, stride=2, pad_mode="same" if same else "pad", padding=0 if same else 1,
                              has_bias=False)
        # MindSpore's BN momentum weighs the old statistic: torch's 0.1 is MindSpore's 0.9
        self.bn = nn.BatchNorm2d(8, momentum=0.9, eps=1e-3 if bug == "bn_eps" else 1e-5)
        self.conv = nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1, has_bias=False)
        self.bn2 = nn.BatchNorm2d(8, momentum=0.1 if bug == "bn_momentum" else 0.9)
        self.relu = nn.ReLU()
        self.fc = nn.Dense(8, 5)
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x):
        if self.bug == "raises":
            raise ValueError("a port that does not run")
        h = self.relu(self.bn(self.stem(x)))
        r = self.bn2(self.conv(h))
        if self.bug == "no_residual":
            h = self.relu(r)
        else:
            h = self.relu(h + r)
        return self.fc(self.mean(h, (2, 3)))


# --- model 2: an image branch and a vector branch, concatenated; outputs (logits, the vector embedding) -------


class TorchTwoInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.embed = torch.nn.Linear(4, 6)
        self.head = torch.nn.Linear(4 * 4 * 4 + 6, 3)

    def forward(self, image, vector):
        a = torch.relu(self.bn(self.conv(image))).flatten(1)
        b = torch.tanh(self.embed(vector))
        return self.head(torch.cat([a, b], dim=1)), b


class MsTwoInput(nn.Cell):
    """The port, with its own name for the head (``classifier``): a name map is needed."""

    def __init__(self, bug=None):
        super().__init__()
        self.bug = bug
        self.conv = nn.Conv2d(1, 4, 3, pad_mode="valid", has_bias=True)
        self.bn = nn.BatchNorm2d(4, momentum=0.9)
        self.embed = nn.Dense(4, 6)
        self.classifier = nn.Dense(4 * 4 * 4 + 6, 3)
        self.relu = nn.ReLU()
        self.tanh = nn.Tanh()
        self.flatten = nn.Flatten()
        self.concat = ops.Concat(axis=1)

    def construct(self, image, vector):
        a = self.relu(self.bn(self.conv(image)))
        if self.bug == "flatten_nhwc":   # a TF/Keras habit: channels-last flatten before the dense layer
            a = ops.transpose(a, (0, 2, 3, 1))
        a = self.flatten(a)
        e = self.embed(vector)
        b = self.tanh(e)
        if self.bug == "concat_order":
            z = self.concat((b, a))
        else:
            z = self.concat((a, b))
        if self.bug == "raw_embedding":   # the second output returned before its activation
            return self.classifier(z), e
        return self.classifier(z), b


HEAD_MAP = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}


def _res_inputs():
    rng = np.random.RandomState(0)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.randint(0, 5, 4)


def _two_inputs():
    rng = np.random.RandomState(1)
    return [rng.standard_normal((4, 1, 6, 6)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)]


def _torch(cls):
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():   # BN statistics and affine parameters away from their init values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _failures(report):
    return {r.check for r in report.results if not r.passed}


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_clean_ports_pass_every_check(mode):
    set_context(mode)
    x, y = _res_inputs()
    report = parity.compare_models(_torch(TorchResCNN), MsResCNN(), x, y)
    assert report.passed, parity.format_table(report.results)
    assert [r.check for r in report.results] == ["eval outputs", "train outputs", "train loss", "BN running stats",
                                                 "grads (train-mode BN)", "grads (eval-mode BN)",
                                                 "param update, 3 steps"]
    report = parity.compare_models(_torch(TorchTwoInput), MsTwoInput(), _two_inputs(), name_map=HEAD_MAP)
    assert report.passed, parity.format_table(report.results)
    assert report.names["rule"] == "user dict + generic"
    # two outputs compared each, under torch's names; the projection loss reaches both
    assert {r.check for r in report.results} >= {"eval outputs", "train loss"}


def test_a_port_that_does_not_run_fails_every_row_with_its_error():
    """Its ReLU masks cannot be taken either (before the gradient checks' reference): every row that runs the
    forward fails, naming the port's error, and the comparison itself does not raise. The optimizer check steps the
    weights without a forward: it passes."""
    set_context("pynative")
    x, y = _res_inputs()
    report = parity.compare_models(_torch(TorchResCNN), MsResCNN("raises"), x, y)
    assert not report.passed
    rows = {r.check: r for r in report.results}
    forward = [rows[c] for c in ("eval outputs", "train outputs", "train loss", "BN running stats",
                                 "grads (train-mode BN)", "grads (eval-mode BN)")]
    assert all(not r.passed and "a port that does not run" in r.worst for r in forward), \
        parity.format_table(report.results)
    assert rows["param update, 3 steps"].passed


@pytest.mark.parametrize("bug, failing", [
    ("same_padding", "eval outputs"), ("bn_eps", "eval outputs"), ("no_residual", "eval outputs"),
    ("bn_momentum", "BN running stats")])
def test_each_bug_in_the_residual_cnn_fails(bug, failing):
    set_context("pynative")
    x, y = _res_inputs()
    report = parity.compare_models(_torch(TorchResCNN), MsResCNN(bug), x, y,
                                   checks=("eval_logits", "train_forward"))
    assert failing in _failures(report), parity.format_table(report.results)


@pytest.mark.parametrize("bug", ["flatten_nhwc", "concat_order", "raw_embedding"])
def test_each_bug_in_the_two_input_network_fails(bug):
    set_context("pynative")
    report = parity.compare_models(_torch(TorchTwoInput), MsTwoInput(bug), _two_inputs(), name_map=HEAD_MAP,
                                   checks=("eval_logits", "grads_train_bn"))
    assert "eval outputs" in _failures(report), parity.format_table(report.results)
    eval_row = next(r for r in report.results if r.check == "eval outputs")
    # the raw-embedding bug leaves the logits alone: the row names the second output as the worst
    assert eval_row.worst == ("output[1]" if bug == "raw_embedding" else "output[0]")


def test_unmatched_names_are_reported_with_the_fix():
    set_context("pynative")
    with pytest.raises(NameMapError, match=r"torch head\.weight, head\.bias; MindSpore classifier\.weight, "
                                           r"classifier\.bias.*name_map="):
        parity.compare_models(_torch(TorchTwoInput), MsTwoInput(), _two_inputs())
    # a callable works as well as a dict
    rename = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}
    report = parity.compare_models(_torch(TorchTwoInput), MsTwoInput(), _two_inputs(),
                                   name_map=lambda t: rename.get(t, t.replace("bn.weight", "bn.gamma")
                                                                 .replace("bn.bias", "bn.beta")
                                                                 .replace("running_mean", "moving_mean")
                                                                 .replace("running_var", "moving_variance")),
                                   checks=("eval_logits",))
    assert report.passed and report.names["rule"] == "user callable"


def test_shape_mismatch_is_named():
    set_context("pynative")

    class Wide(MsResCNN):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(8, 6)
    with pytest.raises(NameMapError, match=r"fc\.weight \(5, 8\) -> fc\.weight \(6, 8\)"):
        parity.compare_models(_torch(TorchResCNN), Wide(), *_res_inputs())


def test_localisation_tells_a_layer_error_from_the_models_own_forward():
    """The residual add lives in the model's own forward: accumulated mode sees the outputs part at the ReLU that
    follows it (its 2nd call); single-step mode clears every layer fed the reference input and blames the
    model's forward itself. A bad BN eps is the BN's own error: both modes name it."""
    set_context("pynative")
    x, y = _res_inputs()
    report = parity.compare_models(_torch(TorchResCNN), MsResCNN("no_residual"), x, y, checks=("eval_logits",),
                                   localize="on_failure")
    accumulated, single = report.localization
    assert accumulated.first == "relu#1" and single.first == ""
    assert "the model's own forward" in single.describe()
    report = parity.compare_models(_torch(TorchResCNN), MsResCNN("bn_eps"), x, y, checks=("eval_logits",),
                                   localize="on_failure")
    assert [loc.first for loc in report.localization] == ["bn", "bn"]
    clean = parity.compare_models(_torch(TorchResCNN), MsResCNN(), x, y, checks=("eval_logits",),
                                  localize="on_failure")
    assert clean.passed and clean.localization == []


def test_the_readme_example_passes_and_catches_its_bug(capsys):
    """examples/parity_own_model.py (the README's "Porting your own model"): clean -> 0, --bug -> 1 and the BN
    named; its eps-1e-3 port is within allclose(1e-4) everywhere, which a fixed-tolerance tool would pass."""
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "parity_own_model.py"), run_name="example")
    assert example["main"](bug=False) == 0
    assert example["main"](bug=True) == 1
    out = capsys.readouterr().out
    assert "first divergence at bn [MindSpore: bn]" in out
    eval_row = next(line for line in out.splitlines() if line.startswith("eval outputs") and "FAIL" in line)
    assert "100.00%" in eval_row


def test_compare_in_modes_gives_what_each_mode_gives_alone():
    """``compare_in_modes`` (the torch side computed once for both modes): every row of each mode's report is the
    one ``compare_models`` gives in that mode alone, an injected BN eps fails in both, and the mode is restored.
    Two checks, the tiny CNN (~10 s)."""
    import mindspore as ms

    set_context("pynative")
    x, y = _res_inputs()
    checks = ("eval_logits", "grads_train_bn")
    both = parity.compare_in_modes(_torch(TorchResCNN), MsResCNN("bn_eps"), x, y, checks=checks,
                                   config={"name": "tiny"})
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    assert [r.config for r in both] == [{"name": "tiny", "mode": "graph"}, {"name": "tiny", "mode": "pynative"}]

    def numbers(report):
        return [(r.check, r.passed, r.ratio, r.rel_l2, r.floor, r.scale, r.scale_floor) for r in report.results]
    for mode, report in zip(("graph", "pynative"), both):
        set_context(mode)
        alone = parity.compare_models(_torch(TorchResCNN), MsResCNN("bn_eps"), x, y, checks=checks)
        assert numbers(report) == numbers(alone), mode
        assert "eval outputs" in _failures(report)
    with pytest.raises(ValueError, match="choose one or more of graph, pynative"):
        parity.compare_in_modes(_torch(TorchResCNN), MsResCNN(), x, y, modes=("eager",))
