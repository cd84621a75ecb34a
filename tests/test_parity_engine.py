"""The parity engine knows no architecture: no module of ``parity/engine`` imports an architecture module or the
suite (read from the source, function-local imports included), ``parity.compare_models`` on a small pair loads
none, and the suite's rules -- registered with the engine, not imported by it -- still map a torchvision ResNet
onto this project's MindSpore ResNet by default. Also: ``CompareOptions`` and its keyword overrides."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ENGINE = ROOT / "parity" / "engine"
#: what the engine must never import (a module or anything under it)
FORBIDDEN = ("ms_transfer.models", "ms_transfer.core.archs", "ms_transfer.core.naming", "torch_reference.models",
             "parity.suite")


def _imports(path: Path, root: Path = ROOT):
    """``(line, module)`` of every import in ``path`` (module level and function-local), relative ones resolved
    against the module's package under ``root``; ``from X import Y`` also yields ``X.Y`` (Y may be a module)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_import_resolution_sees_relative_and_local_imports(tmp_path):
    """The checker itself: a function-local relative import of the suite is found (so the next test can fail)."""
    probe = tmp_path / "parity" / "engine" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from .tolerance import K\n\ndef f():\n    from ..suite import bugs\n"
                     "    import ms_transfer.core.naming\n")
    imported = [m for _, m in _imports(probe, tmp_path)]
    assert "parity.engine.tolerance" in imported
    assert [m for m in imported if _forbidden(m)] == ["parity.suite", "parity.suite.bugs", "ms_transfer.core.naming"]


def test_no_engine_module_imports_an_architecture_or_the_suite():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sorted(ENGINE.rglob("*.py")) for line, module in _imports(path) if _forbidden(module)]
    assert not offenders, "\n".join(offenders)


TINY_PAIR = """
import sys
import numpy as np
import torch
from mindspore import nn

import parity
from ms_transfer.mindspore_backend.context import set_context


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)

    def forward(self, x):
        return self.norm(self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))))


class MsNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, pad_mode="pad", padding=1, has_bias=False)
        self.bn = nn.BatchNorm2d(4, momentum=0.9)
        self.fc = nn.Dense(4, 3)
        self.norm = nn.LayerNorm((3,), epsilon=1e-5)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.norm(self.fc(self.relu(self.bn(self.conv(x))).mean(axis=(2, 3))))


set_context("pynative")
torch.manual_seed(0)
x = np.random.RandomState(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
report = parity.compare_models(TorchNet(), MsNet(), x)
print(parity.format_table(report.results))
assert report.passed, "the tiny pair must pass"
assert report.names["rule"] == "generic", report.names
loaded = sorted(m for m in sys.modules if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN)))
assert not loaded, f"compare_models loaded {loaded}"
print("NO ARCHITECTURE MODULE LOADED")
"""


def test_compare_models_on_a_small_pair_loads_no_architecture_module():
    forbidden = FORBIDDEN + ("ms_transfer.models.resnet", "ms_transfer.models.vgg")
    proc = subprocess.run([sys.executable, "-c", f"FORBIDDEN = {forbidden!r}\n" + TINY_PAIR], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NO ARCHITECTURE MODULE LOADED" in proc.stdout


def test_the_suite_rules_still_map_a_torchvision_resnet_by_default():
    """The naming table (registered by the suite, loaded on demand) pairs torchvision's names with this project's
    (``bn1`` -> ``norm``, ``downsample`` -> ``down_sample``) and the parameterless ``maxpool`` -> ``max_pool``."""
    from parity.engine.weight_map import match_names
    from torch_reference.models import build_model as build_torch
    from torch_reference.models import numpy_state

    from ms_transfer.models import build_model

    torch_shapes = {k: v.shape for k, v in numpy_state(build_torch("resnet18", 10)).items()}
    ms_names = [p.name for p in build_model("resnet18", 10).get_parameters()]
    match = match_names(torch_shapes, ms_names)
    assert match.complete and match.rule == "naming table"
    assert match.torch_to_ms["bn1.weight"] == "norm.gamma"
    assert match.torch_to_ms["layer2.0.downsample.1.running_var"] == "layer2.0.down_sample.1.moving_variance"
    assert match.module_map == {"maxpool": "max_pool"}


def test_a_registered_rule_runs_only_where_the_generic_one_leaves_names_unmatched():
    from parity.engine import weight_map

    calls = []

    def swap_prefix(torch_shapes, ms_names):
        calls.append(sorted(torch_shapes))
        mapping = {t: "port." + t for t in torch_shapes if "port." + t in ms_names}
        return weight_map.NameMatch(mapping, rule="prefix") if len(mapping) == len(ms_names) else None

    weight_map.register_name_rule(swap_prefix)
    try:
        assert weight_map.match_names({"a.weight": (2,)}, ["a.weight"]).rule == "generic" and not calls
        match = weight_map.match_names({"a.weight": (2,), "a.num_batches_tracked": ()}, ["port.a.weight"])
        assert match.rule == "prefix" and match.torch_to_ms == {"a.weight": "port.a.weight"}
        assert calls == [["a.weight"]]   # torch-only buffers are not the rule's business
    finally:
        weight_map._RULES.remove(swap_prefix)


def test_compare_options_hold_the_defaults_and_keywords_override_them():
    from parity.engine.comparison import CHECKS, CompareOptions

    o = CompareOptions()
    assert (o.checks, o.lr, o.momentum, o.weight_decay, o.opt_steps, o.seed) == (CHECKS, 0.01, 0.9, 1e-4, 3, 0)
    tuned = o.with_overrides(lr=0.1, checks=("eval_logits",))
    assert (tuned.lr, tuned.checks, tuned.momentum) == (0.1, ("eval_logits",), 0.9) and o.lr == 0.01
    with pytest.raises(TypeError, match="unknown comparison option.*learning_rate.*CompareOptions has name_map"):
        o.with_overrides(learning_rate=0.1)
    with pytest.raises(Exception):   # frozen: one run's options cannot drift
        o.lr = 1.0


def test_the_port_side_reloads_weights_in_place_and_a_compiled_graph_sees_them():
    """``load_weights`` copies into each parameter's own memory (a new tensor per reload kept one model's worth alive
    per compiled graph): after a GRAPH-mode run, reloaded weights change what the same graph computes, to exactly what
    a cell built with them computes, and a mismatched state is refused without changing anything."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from ms_transfer.mindspore_backend.context import set_context
    from parity.engine.mindspore_side import WeightsMismatch, load_weights

    set_context("graph", "CPU")
    x = ms.Tensor(np.random.RandomState(0).standard_normal((2, 5)).astype(np.float32))
    net = nn.Dense(5, 3)
    first = net(x).asnumpy()
    rng = np.random.RandomState(1)
    new = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in net.get_parameters()}
    memory = {p.name: p for p in net.get_parameters()}
    load_weights(net, new)
    assert all(memory[p.name] is p for p in net.get_parameters())
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), new[p.name])
    want = x.asnumpy() @ new["weight"].T + new["bias"]
    got = net(x).asnumpy()
    assert not np.allclose(got, first)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(WeightsMismatch, match="shape-mismatched"):
        load_weights(net, {**new, "weight": np.zeros((4, 5), np.float32)})
    np.testing.assert_array_equal(net(x).asnumpy(), got)


def test_the_port_side_s_graphs_are_freed_with_their_cells_and_compiled_once():
    """The port's objective and gradient cells (GRAPH mode) are freed when the comparison drops them, with the net
    (MindSpore 2.7.2 keeps a top-level cell whose ``construct`` takes ``*args`` for good, as ``nn.ForwardValueAndGrad``
    did), and new input tensors of the same shapes reuse the compiled graphs (a plain tuple argument is compiled
    again for every call: ``MindSporeSide._args`` makes it ``mutable``)."""
    import gc
    import weakref

    import numpy as np
    from mindspore import nn
    from mindspore.common import api

    from ms_transfer.mindspore_backend.context import set_context
    from parity.engine.loss import CROSS_ENTROPY
    from parity.engine.mindspore_side import MindSporeSide

    set_context("graph", "CPU")
    compiled = []
    original = api._CellGraphExecutor.compile

    def compile_(self, obj, *args, **kwargs):
        phase, new = original(self, obj, *args, **kwargs)   # new: False when the graph of this phase existed
        compiled.append((type(obj).__name__, new))
        return phase, new

    def run():
        net = nn.SequentialCell([nn.Conv2d(1, 2, 3, pad_mode="pad", padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                                 nn.Flatten(), nn.Dense(2 * 6 * 6, 3)])
        state = {p.name: p.asnumpy() for p in net.get_parameters()}
        side = MindSporeSide(net, state, {k: k for k in state}, loss=CROSS_ENTROPY)
        rng = np.random.default_rng(0)
        for _ in range(2):   # new arrays, the same shapes
            x, y = rng.standard_normal((2, 1, 6, 6)).astype(np.float32), np.array([0, 2])
            side.train_forward([x], [y])
            grads = side.grads([x], [y], bn_train=True)
        assert set(grads) == {p.name for p in net.trainable_params()}
        return [weakref.ref(side.objective), weakref.ref(side.grad_net), weakref.ref(net)]

    api._CellGraphExecutor.compile = compile_
    try:
        refs = run()
    finally:
        api._CellGraphExecutor.compile = original
    gc.collect()
    assert [r() for r in refs] == [None, None, None], "a port cell outlived its comparison"
    new_graphs = [name for name, new in compiled if new]
    assert sorted(new_graphs) == ["Objective", "ValueAndGrad"], compiled
