"""``parity.assert_port_matches``, the pytest helper for users' suites, on the README's example port
(examples/parity_own_model.py): the clean port returns its report, the BN-eps-1e-3 port raises an AssertionError
whose message carries the failing rows, the table and the first diverging layer."""
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import parity
from ms_transfer.mindspore_backend.context import set_context


@pytest.fixture(scope="module")
def example():
    set_context("pynative")
    return runpy.run_path(str(Path(__file__).parents[1] / "examples" / "parity_own_model.py"), run_name="example")


def _inputs():
    rng = np.random.RandomState(0)
    return rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.randint(0, 4, size=4)


def test_a_clean_port_returns_its_passing_report(example):
    torch.manual_seed(0)
    images, labels = _inputs()
    report = parity.assert_port_matches(example["TorchNet"](), example["MindSporeNet"](), images, labels,
                                        name_map=example["NAME_MAP"])
    assert report.passed and report.names["matched"] == 7 and len(report.results) == 7


def test_a_buggy_port_raises_with_the_table_and_the_first_diverging_layer(example):
    torch.manual_seed(0)
    images, labels = _inputs()
    with pytest.raises(AssertionError) as info:
        parity.assert_port_matches(example["TorchNet"](), example["MindSporeNet"](eps=1e-3), images, labels,
                                   name_map=example["NAME_MAP"], checks=("eval_logits", "train_forward"))
    message = str(info.value)
    assert message.startswith("the MindSpore port does not match its torch original: 3 of 4 checks failed "
                              "(eval outputs, train outputs, train loss)")
    assert "noise floor" in message and "BN running stats" in message          # the table, passing rows included
    assert "first divergence at bn [MindSpore: bn]" in message                 # localised by default


def test_options_reach_the_comparison(example):
    images, labels = _inputs()
    with pytest.raises(TypeError, match="unknown comparison option"):
        parity.assert_port_matches(example["TorchNet"](), example["MindSporeNet"](), images, labels, nmae_map={})
