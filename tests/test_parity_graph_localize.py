"""Localisation in GRAPH mode (``localize_mode="graph"``): the whole port compiled as one graph with every paired
layer's output tapped (:mod:`parity.engine.graph_taps`). Tapping leaves the final outputs alone (ResNet50 and the
transformer block), an injected layer of the transformer is named in both localisation modes, parameterless layers
pair by name and the report lists what could not be paired."""
import numpy as np
import torch

import parity
from examples.own_models import text_rnn, transformer
from ms_transfer.mindspore_backend.context import set_context
from parity.engine.comparison import prepare
from parity.engine.graph_taps import graph_taps
from parity.engine.tolerance import compare_to_floor


def _taps_keep_the_outputs(torch_model, net, x, targets=None):
    """The port's eval outputs compiled with and without taps, compared under the eval check's float32 floor
    (measured on the torch samples of the same comparison). Returns ``(result, bit_identical)``."""
    set_context("graph")
    c = prepare(torch_model, net, x, targets, checks=("eval_logits",))
    _, floors, _ = c.reference_floors("eval_logits")
    plain = c.ms_side.eval_outputs(c.xs)                       # the net's own graph, no taps
    names = [n for n, _ in net.cells_and_names()]              # every cell tapped, and the net's own output ("")
    c.ms_side.reset()
    taps = graph_taps(net, [c.ms_side.tensor(a) for a in c.xs], names, lambda cell: c.ms_side.train_mode(cell, False))
    tapped = dict(zip(plain, taps[("", 0)]))
    assert len(taps) > len(names) // 2                         # the layers' outputs came out of the same graph
    result = compare_to_floor("eval outputs, taps vs none", tapped, plain, floors["eval outputs"])
    return result, all(np.array_equal(tapped[k], plain[k]) for k in plain)


def test_taps_leave_resnet50_outputs_alone():
    from parity.suite.problems import make_problem
    from torch_reference.models import build_model as build_torch_model, load_numpy_state
    from ms_transfer.models import build_model

    problem = make_problem("resnet50", 10, 2, 32, 0)
    torch_model = build_torch_model("resnet50", problem.num_classes)
    load_numpy_state(torch_model, problem.torch_state)
    result, identical = _taps_keep_the_outputs(torch_model, build_model("resnet50", problem.num_classes), problem.x,
                                               problem.y)
    print(f"ResNet50 32 px, GRAPH: outputs with taps vs without: ratio {result.ratio:.3g}, bit-identical {identical}")
    assert result.passed, result


def test_taps_leave_the_transformer_outputs_alone():
    torch.manual_seed(0)
    result, identical = _taps_keep_the_outputs(transformer.TorchModel(), transformer.MindSporeModel(),
                                               transformer.example_inputs())
    print(f"transformer, GRAPH: outputs with taps vs without: ratio {result.ratio:.3g}, bit-identical {identical}")
    assert result.passed, result


def _graph_localize(module, net, **options):
    set_context("graph")
    torch.manual_seed(0)
    return parity.compare_models(module.TorchModel(), net, module.example_inputs(), name_map=module.NAME_MAP or None,
                                 checks=("eval_logits",), localize=True, localize_mode="graph", **options)


def test_graph_localisation_names_the_injected_layer():
    """Softmax over the queries: a parameterless layer, paired by name, named in both modes after the 4 layers
    before it (norm1, q, k, v) compared clean."""
    report = _graph_localize(transformer, transformer.MindSporeModel(softmax_axis=-2))
    assert not report.passed
    assert [loc.mode for loc in report.localization] == ["accumulated", "single-step"]
    for loc in report.localization:
        assert (loc.first, loc.first_ms, loc.ms_mode) == ("attn.softmax", "attn.softmax", "graph"), loc.describe()
        assert loc.clean_before == 4 and loc.ratio > 100 and "GRAPH" in loc.describe()


class RenamedActivation(transformer.MindSporeModel):
    """The port's GELU under another name: a parameterless layer that cannot pair by name."""

    def __init__(self):
        super().__init__()
        self.gelu = self.act
        del self.act

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(self.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(axis=1))


def test_layers_that_cannot_be_paired_are_reported():
    # the GELU renamed: reported on both sides; the other 12 layers (softmax, by name, among them) compared clean
    renamed = _graph_localize(transformer, RenamedActivation())
    for loc in renamed.localization:
        assert (loc.unpaired_torch, loc.unpaired_ms, loc.compared, loc.first) == (["act"], ["gelu"], 12, None), \
            loc.describe()
        assert "not paired, torch: act" in loc.describe() and "not paired, MindSpore: gelu" in loc.describe()
    # MindSpore's nn.LSTM holds cells torch's has no module for: listed, no false alarm
    lstm = _graph_localize(text_rnn, text_rnn.MindSporeModel())
    assert lstm.passed
    for loc in lstm.localization:
        assert loc.first is None and loc.unpaired_ms == ["lstm.rnn", "lstm.dropout_op"], loc.describe()
