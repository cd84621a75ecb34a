"""First-divergence localisation: a bug injected at one named layer deep in ResNet50 is found at that layer
(not earlier) in both modes -- accumulated (each framework its own forward) and single-step (each MindSpore
layer fed the reference's input) -- and a clean port has no diverging layer."""
import pytest

from parity import ParityConfig, run_parity
from parity.__main__ import main as parity_main

BLOCK = "layer3.1"
#: bug -> the layer (torch name) that must be reported first, in both modes
EXPECTED = {
    f"bn_eps@{BLOCK}": f"{BLOCK}.bn1",            # every BN of the block: the first one in execution order
    f"conv_padding@{BLOCK}": f"{BLOCK}.conv2",    # the block's 3x3 conv padded bottom/right
    f"missing_relu@{BLOCK}": BLOCK,               # the ReLU after the residual add: the block's own forward
}


def _run(inject=None):
    return run_parity(ParityConfig(arch="resnet50", mode="graph", image_size=64, num_classes=10,
                                   checks=("eval_logits",), inject=inject, localize=True))


@pytest.mark.parametrize("bug", sorted(EXPECTED))
def test_a_bug_deep_in_resnet50_is_localised_to_its_layer(bug):
    report = _run(bug)
    assert not report.passed
    assert [loc.mode for loc in report.localization] == ["accumulated", "single-step"]
    for loc in report.localization:
        assert loc.first == EXPECTED[bug], loc.describe()
        assert loc.ratio > 4 and loc.clean_before > 90   # the stem, stages 1-2 and layer3.0 compared clean
        assert not loc.bn_train                           # the eval-mode forward, whose check failed
    # the MindSpore name comes from the naming table (bn -> norm)
    if "bn_eps" in bug:
        assert report.localization[0].first_ms == f"{BLOCK}.norm1"


def test_a_clean_port_has_no_diverging_layer():
    report = _run()
    assert report.passed
    for loc in report.localization:
        assert loc.first is None and loc.compared > 180, loc.describe()


def test_cli_reports_the_layer_on_failure(capsys):
    args = ["--arch", "resnet18", "--image-size", "64", "--num-classes", "10", "--mode", "pynative",
            "--checks", "eval_logits", "--inject", "bn_eps@layer2.1"]
    assert parity_main(args) == 1
    out = capsys.readouterr().out
    assert "first divergence at layer2.1.bn1 [MindSpore: layer2.1.norm1]" in out and "single-step" in out
    assert parity_main(args[:-1] + ["bn_eps@layer9.9"]) == 2   # not a block: the error lists the blocks
    assert "LAYER a residual block (layer1.0 ... layer4.1)" in capsys.readouterr().err
