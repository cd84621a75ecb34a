"""``python -m parity --torch-model M:F --ms-model M:F``: own model pairs on the command line (exit codes 0 / 1 / 2,
errors without a traceback), ``--write-checkpoint`` / :func:`parity.port_checkpoint` (the file re-read from disk is
what the checks prove; a tampered file fails and is not kept), ``--export-mindir`` (loaded back and checked), the
bundle wiring and integer inputs. The example pair is ``examples/parity_own_model.py``'s; the factories of the bugs
and bad inputs are a module written into a temporary directory, imported from the current directory as a user's
would be. In-process (``main(argv)``) except where the exit of a real process is the point."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ms_transfer.core.checkpoint_io import read_weights
from parity.suite.cli import main

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "port-your-own-model.md"
EXAMPLE = "examples.parity_own_model"
PAIR = ["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", f"{EXAMPLE}:MindSporeNet"]
SMALL = ["--input-shape", "4,3,16,16", "--num-classes", "4"]

FACTORIES = '''
import torch
from mindspore import nn, ops

from examples.parity_own_model import MindSporeNet, TorchNet


def bn_eps_bug():
    """The port with BatchNorm eps 1e-3 (torch's is 1e-5)."""
    return MindSporeNet(eps=1e-3)


def needs_an_argument(width):
    return MindSporeNet()


def not_a_cell():
    return TorchNet()


def resnet18_bn_eps():
    """This project's ResNet18 with BatchNorm eps 1e-3 at layer3.1."""
    from ms_transfer.models import resnet18
    from parity.suite.bugs import inject

    net = resnet18()
    inject("bn_eps@layer3.1", net, {})
    return net


def transformer_tanh_gelu():
    """The transformer block's port with MindSpore's default GELU (the tanh approximation; torch's is exact)."""
    from examples.own_models.transformer import MindSporeModel
    return MindSporeModel(gelu_approximate=True)


class TorchTokens(torch.nn.Module):
    """Token ids -> embedding -> mean over the sequence -> linear (no BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(self.norm(self.emb(ids).mean(dim=1)))


class MsTokens(nn.Cell):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.norm = nn.LayerNorm((8,), epsilon=1e-5)
        self.out = nn.Dense(8, 3)
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, ids):
        return self.out(self.norm(self.mean(self.emb(ids), 1)))
'''
HEAD_MAP = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}
TOKENS_MAP = "emb.weight: emb.embedding_table\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's directory: the factories module and the example's name map (YAML)."""
    d = tmp_path_factory.mktemp("own_cli")
    (d / "my_factories.py").write_text(FACTORIES)
    (d / "head_map.yaml").write_text("head.weight: classifier.weight\nhead.bias: classifier.bias\n")
    (d / "tokens_map.yaml").write_text(TOKENS_MAP)
    import torch
    torch.save(torch.nn.Linear(2, 2), d / "pickled_model.pth")      # a whole pickled model, not a state dict
    torch.save({"other.weight": torch.zeros(3)}, d / "other_net.pth")
    rng = np.random.RandomState(5)
    np.save(d / "images.npy", rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    np.save(d / "labels.npy", rng.randint(0, 4, 4))
    return d


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    """Run from the user's directory (its modules import from there); the example package from the checkout."""
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(ROOT))
    return workdir


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _doc_blocks(kind):
    """The fenced ``kind`` blocks of docs/port-your-own-model.md, in order."""
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def test_the_guide_s_commands_run_and_prove_the_checkpoint_and_the_mindir(in_workdir, capsys):
    """docs/port-your-own-model.md, every command as written (from a user's directory, the checkout on the path):
    names that do not match exit 2 with the name map to write; with it the port passes (exit 0), its checkpoint
    holds the torch weights exactly (renamed; the optimizer check moved the cell's), the load report names BN's
    counter, the MindIR is loaded back and checked; the bundle is saved and checked; the Python block runs."""
    import torch

    commands = [line for block in _doc_blocks("bash") for line in block.splitlines()
                if line.startswith("python -m parity")]
    assert len(commands) == 5, commands
    (in_workdir / "head_map.yaml").write_text(_doc_blocks("yaml")[0])
    outs = []
    for command, expected in zip(commands, [2, 0, 0, 0, 0]):
        code, out, err = _run(shlex.split(command)[3:], capsys)
        assert code == expected, f"{command}\n{out}{err}"
        assert "Traceback" not in out + err
        outs.append(out + err)
    assert "\n  head.weight: classifier.weight\n  head.bias: classifier.bias" in outs[0]
    ckpt, mindir = in_workdir / "port.ckpt", in_workdir / "port.mindir"
    assert "MindIR eval outputs" in outs[2] and f"wrote {ckpt.name}" in outs[2] and mindir.stat().st_size > 0
    assert "bn.num_batches_tracked (torch's num_batches_tracked buffer; MindSpore has no counterpart)" in outs[2]
    torch.manual_seed(0)   # the CLI builds the torch model after torch.manual_seed(--seed)
    from examples.parity_own_model import TorchNet
    expected = TorchNet().state_dict()
    written = read_weights(ckpt).state
    rename = {"head.weight": "classifier.weight", "head.bias": "classifier.bias", "bn.weight": "bn.gamma",
              "bn.bias": "bn.beta", "bn.running_mean": "bn.moving_mean", "bn.running_var": "bn.moving_variance"}
    assert sorted(written) == sorted(rename.get(k, k) for k in expected if k != "bn.num_batches_tracked")
    for k, v in expected.items():
        if k != "bn.num_batches_tracked":
            assert np.array_equal(written[rename.get(k, k)], v.numpy()), k
    assert not [p for p in in_workdir.iterdir() if ".staged" in p.name]
    rows = json.loads((in_workdir / "parity.json").read_text())
    assert rows[0]["passed"] and rows[0]["names"]["checkpoint"]["written"]
    assert rows[0]["names"]["checkpoint"]["left_out_torch"] == ["bn.num_batches_tracked"]
    assert "--check-reference refs/my-port --ms-model examples.parity_own_model:MindSporeNet" in outs[3]
    assert "PASSED" in outs[4]
    (python,) = _doc_blocks("python")
    exec(compile(python, str(DOC), "exec"), {})
    assert (in_workdir / "port.safetensors").is_file()


def test_an_injected_bug_exits_1_localised_and_leaves_the_old_checkpoint(in_workdir, capsys):
    ckpt = in_workdir / "old.ckpt"
    ckpt.write_bytes(b"a checkpoint proven earlier")
    code, out, err = _run(["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", "my_factories:bn_eps_bug",
                           "--inputs", "images.npy", "--targets", "labels.npy", "--name-map", "head_map.yaml",
                           "--mode", "pynative", "--checks", "eval_logits", "--write-checkpoint", ckpt], capsys)
    assert code == 1, out + err
    assert "FAIL" in out and "first divergence at bn " in out
    assert ckpt.read_bytes() == b"a checkpoint proven earlier" and "not written" in out
    assert not [p for p in in_workdir.iterdir() if ".staged" in p.name]


@pytest.mark.parametrize("argv, message", [
    (["--torch-model", "no_such_pkg.models:Net", "--ms-model", f"{EXAMPLE}:MindSporeNet"],
     r"--torch-model no_such_pkg.models:Net: no module named 'no_such_pkg' \(looked in the current directory"),
    (["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", f"{EXAMPLE}:MsNet"],
     r"module examples.parity_own_model has no attribute 'MsNet'; it defines .*MindSporeNet"),
    (["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", "my_factories:needs_an_argument"],
     r"calling it with no arguments raised TypeError.*give its parameters defaults"),
    (["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", "my_factories:not_a_cell"],
     r"returned a TorchNet, not a mindspore.nn.*Cell"),
    (["--torch-model", f"{EXAMPLE}", "--ms-model", f"{EXAMPLE}:MindSporeNet"], r"write MODULE:FACTORY"),
    (PAIR + ["--input-shape", "4,5,16,16"], r"the torch model rejects the inputs \(4x5x16x16 float32\): "
                                            r"RuntimeError: .*--input-shape once per positional argument"),
    (PAIR + ["--input-shape", "4,3,16,16", "--input-shape", "4,3"], r"the torch model rejects the inputs"),
    (PAIR + ["--input-shape", "4,3,16,16", "--num-classes", "9"], r"do not fit the first output \(4, 4\)"),
    (PAIR + ["--input-shape", "4,3,16,16"],
     r"torch head.weight, head.bias; MindSpore classifier.weight, classifier.bias.*--name-map FILE.yaml"
     r".*\n  head.weight: classifier.weight\n  head.bias: classifier.bias"),
    (PAIR + ["--input-shape", "4,3,16,16", "--image-size", "64"], r"--image-size belong\(s\) to the built-in"),
    (["--input-shape", "4,3,16,16"], r"need\(s\) --torch-model"),
    (PAIR + SMALL + ["--torch-weights", "pickled_model.pth"], r"refusing to unpickle Python objects"),
    (PAIR + SMALL + ["--torch-weights", "other_net.pth"],
     r"--torch-weights other_net.pth does not fit the torch model: .*Missing key\(s\)"),
    (PAIR + ["--input-shape", "4,3,16,16", "--input-dtype", "int64"], r"needs its values' range: pass --input-range"),
    (PAIR + ["--inputs", "images.npy", "--input-shape", "4,3,16,16"], r"--inputs gives the inputs themselves"),
    (["--check-reference", "nowhere", "--ms-model", "my_factories:nothing_here"],
     r"--ms-model my_factories:nothing_here: module my_factories has no attribute 'nothing_here'"),
], ids=["no-module", "no-attribute", "factory-args", "not-a-cell", "no-colon", "bad-shape", "input-count",
        "classes", "names", "arch-flag", "no-models", "pickled-weights", "other-weights", "int-no-range",
        "inputs-and-shape", "check-reference-factory"])
def test_bad_input_exits_2_naming_the_fix(in_workdir, capsys, argv, message):
    code, out, err = _run(argv + ["--mode", "pynative"], capsys)
    assert code == 2, out + err
    assert re.search(message, err, re.S), err
    assert "Traceback" not in out + err


def test_torch_weights_are_loaded_first_and_are_what_the_checkpoint_holds(in_workdir, capsys):
    """--torch-weights (a .safetensors state dict here) replaces the factory's initial weights; the proven
    checkpoint (.safetensors too) holds exactly those, renamed."""
    import torch
    from safetensors.torch import save_file

    from examples.parity_own_model import TorchNet
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in TorchNet().state_dict().items()}
    save_file(state, str(in_workdir / "trained.safetensors"))
    out = in_workdir / "trained-port.safetensors"
    code, out_text, err = _run(PAIR + SMALL + ["--name-map", "head_map.yaml", "--torch-weights", "trained.safetensors",
                                               "--mode", "pynative", "--checks", "eval_logits",
                                               "--write-checkpoint", out], capsys)
    assert code == 0, out_text + err
    written = read_weights(out).state
    assert np.array_equal(written["classifier.weight"], state["head.weight"].numpy())
    assert np.array_equal(written["bn.moving_variance"], state["bn.running_var"].numpy())


def test_several_inputs_and_outputs(in_workdir, capsys):
    """tests/test_parity_api.py's two-input, two-output pair: --input-shape once per positional argument, every output
    compared; its port with the concatenation reversed fails."""
    base = ["--torch-model", "test_parity_api:TorchTwoInput", "--input-shape", "4,1,6,6", "--input-shape", "4,4",
            "--name-map", "head_map.yaml", "--mode", "pynative", "--checks", "eval_logits"]
    code, out, err = _run(base + ["--ms-model", "test_parity_api:MsTwoInput"], capsys)
    assert code == 0 and "inputs 4x1x6x6 float32, 4x4 float32" in out, out + err
    (in_workdir / "two_input_bug.py").write_text("from test_parity_api import MsTwoInput\n\n\n"
                                                 "def concat_order():\n    return MsTwoInput('concat_order')\n")
    code, out, err = _run(base + ["--ms-model", "two_input_bug:concat_order"], capsys)
    assert code == 1 and "FAIL  (worst: output[0])" in out, out + err


def test_the_checks_prove_the_file_read_back_not_the_weights_in_memory(tmp_path, monkeypatch):
    """:func:`parity.port_checkpoint` with a writer that damages one tensor on its way to disk: the checks read
    the file back, so they fail, and nothing is kept at ``out``."""
    import torch

    import parity
    import parity.engine.port as port
    from examples.parity_own_model import MindSporeNet, TorchNet
    from ms_transfer.core.checkpoint_io import write_weights
    from ms_transfer.mindspore_backend.context import set_context

    def damaging_write(path, state, meta=None):
        return write_weights(path, {k: v * np.float32(1.01) if k == "classifier.weight" else v
                                    for k, v in state.items()}, meta)

    set_context("pynative")
    torch.manual_seed(0)
    x = np.random.RandomState(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    out = tmp_path / "port.safetensors"
    report = parity.port_checkpoint(TorchNet(), MindSporeNet(), out, x, name_map=HEAD_MAP, checks=("eval_logits",))
    assert report.passed and out.is_file() and report.names["checkpoint"]["written"]
    out.unlink()
    monkeypatch.setattr(port, "write_weights", damaging_write)
    report = parity.port_checkpoint(TorchNet(), MindSporeNet(), out, x, name_map=HEAD_MAP, checks=("eval_logits",))
    assert not report.passed and not out.exists() and not report.names["checkpoint"]["written"]
    assert not list(tmp_path.iterdir())


def test_integer_inputs_read_their_range_from_the_embedding_and_a_bundle_round_trips(in_workdir, capsys):
    """Token ids in [0, num_embeddings) of the torch model's first nn.Embedding; no BatchNorm; the bundle written
    by --save-reference is checked with --check-reference --ms-model."""
    tokens = ["--torch-model", "my_factories:TorchTokens", "--ms-model", "my_factories:MsTokens",
              "--input-shape", "4,7", "--input-dtype", "int64", "--name-map", "tokens_map.yaml"]
    code, out, err = _run(tokens + ["--mode", "pynative"], capsys)
    assert code == 0, out + err
    assert "inputs 4x7 int64 in [0, 50)" in out
    bundle = in_workdir / "tokens-ref"
    code, out, err = _run(tokens + ["--save-reference", bundle, "--checks", "eval_logits", "grads_eval_bn"], capsys)
    assert code == 0, out + err
    assert f"--check-reference {bundle} --ms-model my_factories:MsTokens" in out
    code, out, err = _run(["--check-reference", bundle, "--ms-model", "my_factories:MsTokens", "--mode", "pynative"],
                          capsys)
    assert code == 0 and "PASSED" in out, out + err


def _cli(argv, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "parity", *map(str, argv)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_real_process_exits_with_the_verdict_after_localisation(workdir):
    """The process's own exit status (teardown of both frameworks included) is the verdict's: a bug localised
    after a failing table exits 1 (measured: teardown never changed the code, so no os._exit)."""
    proc = _cli(["--torch-model", f"{EXAMPLE}:TorchNet", "--ms-model", "my_factories:bn_eps_bug"] + SMALL
                + ["--name-map", "head_map.yaml", "--mode", "pynative", "--checks", "eval_logits", "--localize"],
                workdir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "first divergence at bn " in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_resnet18_exits_with_the_verdict_after_localisation(workdir):
    """torchvision's ResNet18 against this project's (the naming table's rule pairs the names), BN eps 1e-3 injected
    at layer3.1: the process exits 1 after localising it (measured: 1 min 30 s at a load of 14 on 2 cores)."""
    proc = _cli(["--torch-model", "torchvision.models:resnet18", "--ms-model", "my_factories:resnet18_bn_eps",
                 "--input-shape", "2,3,32,32", "--mode", "pynative", "--checks", "eval_logits"], workdir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "first divergence at layer3.1.bn1 [MindSpore: layer3.1.norm1]" in proc.stdout


@pytest.mark.parametrize("ms_factory, code", [("MindSporeModel", 0), ("my_factories:transformer_tanh_gelu", 1)])
def test_the_transformer_block_exits_with_its_verdict_after_localisation(in_workdir, capsys, ms_factory, code):
    """examples/own_models/transformer.py (LayerNorm, attention, GELU; no BatchNorm): the clean port exits 0, the port
    with MindSpore's default tanh GELU exits 1 after localising it at ``act``."""
    ms_model = ms_factory if ":" in ms_factory else f"examples.own_models.transformer:{ms_factory}"
    code_, out, err = _run(["--torch-model", "examples.own_models.transformer:TorchModel", "--ms-model", ms_model,
                            "--input-shape", "4,16,32", "--mode", "pynative", "--checks", "eval_logits"], capsys)
    assert code_ == code, out + err
    assert ("first divergence at act [MindSpore: act]" in out) == bool(code), out   # localised on failure


def test_the_lstm_text_classifier_on_token_ids_exits_0(in_workdir, capsys):
    """examples/own_models/text_rnn.py: Embedding -> LSTM -> Linear on int64 token ids, their range read from the
    torch model's nn.Embedding; MindSpore's LSTM holds its inter-layer dropout as an inner nn.Dropout cell, which
    the dropout row pairs with torch's LSTM (no false alarm)."""
    (in_workdir / "rnn_map.yaml").write_text("embed.weight: embed.embedding_table\n")
    code, out, err = _run(["--torch-model", "examples.own_models.text_rnn:TorchModel", "--ms-model",
                           "examples.own_models.text_rnn:MindSporeModel", "--input-shape", "4,12", "--input-dtype",
                           "int64", "--name-map", "rnn_map.yaml", "--mode", "pynative", "--checks", "eval_logits",
                           "grads_train_bn"], capsys)
    assert code == 0, out + err
    assert "inputs 4x12 int64 in [0, 100)" in out and "dropout (train mode)" in out
