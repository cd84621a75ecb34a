"""The whole porting path on the non-convnet example models (``examples/own_models``: a transformer block and an
LSTM text classifier on token ids), as a user runs it: ``python -m parity --torch-model/--ms-model`` writes the
checkpoint it proved (re-read from disk), saves a reference bundle, the bundle is checked against the port built
from its factory, and ``parity.assert_port_matches`` passes the clean port and fails an injected bug, localised in
GRAPH mode (the PYNATIVE localisation of the same bugs is ``tests/test_own_models.py``)."""
import numpy as np
import pytest
import torch
import yaml

import parity
from examples.own_models import text_rnn, transformer
from examples.own_models.differences import onnx_gates
from ms_transfer.core.checkpoint_io import read_weights
from ms_transfer.mindspore_backend.context import set_context
from parity.engine.torch_side import numpy_state
from parity.suite.cli import main

MODELS = {"transformer": transformer, "text_rnn": text_rnn}
# the cheapest checks that still cover a forward and a backward pass (the full set runs in test_own_models.py)
CHECKS = ["eval_logits", "grads_eval_bn"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_bundle_and_check_on_the_command_line(name, tmp_path, capsys):
    module = MODELS[name]
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, module.example_inputs())
    pair = ["--torch-model", f"examples.own_models.{name}:TorchModel",
            "--ms-model", f"examples.own_models.{name}:MindSporeModel", "--inputs", str(inputs)]
    if module.NAME_MAP:
        (tmp_path / "map.yaml").write_text(yaml.safe_dump(module.NAME_MAP))
        pair += ["--name-map", str(tmp_path / "map.yaml")]
    ckpt = tmp_path / f"{name}.ckpt"
    code = main(pair + ["--mode", "pynative", "--checks", *CHECKS, "--write-checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert code == 0 and ckpt.is_file(), out
    torch.manual_seed(0)   # the CLI's --seed default: the torch model it built, and so the weights it wrote
    written = read_weights(ckpt).state
    port = module.MindSporeModel()
    # the torch weights under the port's names (the engine's rule: NAME_MAP, then MindSpore's gamma/beta spelling)
    expected, _ = parity.port_weights(numpy_state(module.TorchModel()), {p.name: p.shape for p in
                                                                        port.get_parameters()}, module.NAME_MAP or None)
    assert sorted(written) == sorted(p.name for p in port.get_parameters())
    for ms_name, value in expected.items():
        np.testing.assert_array_equal(written[ms_name], value, err_msg=ms_name)

    bundle = tmp_path / "ref"
    assert main(pair + ["--mode", "pynative", "--checks", *CHECKS, "--save-reference", str(bundle)]) == 0
    capsys.readouterr()
    code = main(["--check-reference", str(bundle), "--ms-model", f"examples.own_models.{name}:MindSporeModel",
                 "--mode", "graph"])
    assert code == 0, capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_pytest_helper_passes_the_port_and_fails_a_bug_localised_in_graph_mode(name):
    module = MODELS[name]
    set_context("graph")
    torch.manual_seed(0)
    report = parity.assert_port_matches(module.TorchModel(), module.MindSporeModel(), module.example_inputs(),
                                        name_map=module.NAME_MAP or None, checks=tuple(CHECKS))
    assert report.passed
    torch.manual_seed(0)
    t = module.TorchModel()
    if name == "transformer":     # MindSpore's default GELU is the tanh approximation; torch's is exact
        port, state, layer = transformer.MindSporeModel(gelu_approximate=True), None, "act"
    else:                         # an LSTM checkpoint converted in ONNX's gate order (i, o, f, c)
        port = text_rnn.MindSporeModel()
        ported, _ = parity.port_weights(numpy_state(t), {p.name: p.shape for p in port.get_parameters()},
                                        module.NAME_MAP)
        state, layer = onnx_gates(ported), "lstm"
    with pytest.raises(AssertionError) as failure:
        parity.assert_port_matches(t, port, module.example_inputs(), name_map=module.NAME_MAP or None,
                                   checks=("eval_logits",), ms_state=state, localize_mode="graph")
    message = str(failure.value)
    assert f"first divergence at {layer} " in message and "GRAPH" in message, message
