"""The backend protocol, split by concern (``ms_transfer.core.backend``), and the core's framework-free checkpoint I/O:
both concrete backends implement every member of every part, the loop's fast path is asked per stage, the core
imports no framework anywhere (not even inside a function), and weight-file formats are registered by the backends."""
import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ms_transfer.core import backend as protocol
from ms_transfer.core import checkpoint_io
from ms_transfer.core.checkpoint_io import CheckpointError, read_weights, write_weights
from ms_transfer.core.recipe import plan_stages

from conftest import small_config

ROOT = Path(__file__).resolve().parents[1]
PARTS = [protocol.Step, protocol.Data, protocol.RunIO, protocol.Distribution, protocol.FastPath]
FRAMEWORKS = ("mindspore", "torch", "torchvision")


def _backends():
    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from torch_reference.backend import TorchBackend
    return {"mindspore": MindSporeBackend(), "torch": TorchBackend()}


def _members(part):
    """``(attributes, {method name: signature})`` a protocol part declares (its own and its bases')."""
    attributes, methods = set(), {}
    for klass in reversed(part.__mro__):
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        attributes |= set(vars(klass).get("__annotations__", {}))
        methods.update({name: inspect.signature(f) for name, f in vars(klass).items()
                        if inspect.isfunction(f) and not name.startswith("_")})
    return attributes, methods


@pytest.mark.parametrize("part", [*PARTS, protocol.Backend], ids=lambda p: p.__name__)
@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_each_backend_implements_every_member_of_every_part(framework, part):
    backend = _backends()[framework]
    assert isinstance(backend, part)
    attributes, methods = _members(part)
    assert methods
    for name in attributes:
        assert hasattr(backend, name), f"{type(backend).__name__} lacks the attribute {part.__name__}.{name}"
    for name, wanted in methods.items():
        method = getattr(type(backend), name, None)
        assert callable(method), f"{type(backend).__name__} lacks {part.__name__}.{name}()"
        have = inspect.signature(method).parameters
        for param in wanted.parameters.values():
            assert param.name in have, f"{type(backend).__name__}.{name} has no parameter {param.name!r}"
            assert have[param.name].kind == param.kind, f"{type(backend).__name__}.{name}({param.name}): kind"
            if param.default is not inspect.Parameter.empty:
                assert have[param.name].default is not inspect.Parameter.empty, \
                    f"{type(backend).__name__}.{name}({param.name}) must be optional, as in {part.__name__}"
        extra = [p for p in have.values() if p.name not in wanted.parameters and p.default is inspect.Parameter.empty]
        assert not extra, f"{type(backend).__name__}.{name} requires {[p.name for p in extra]} beyond the protocol"


def test_the_member_check_catches_a_missing_member():
    class NoBarrier:
        dist = None

        def all_gather(self, array):
            return array

        def parameter_arrays(self):
            return []
    assert not isinstance(NoBarrier(), protocol.Distribution)


@pytest.mark.parametrize("strategy, fast", [("fixed_feature", True), ("finetune", False)])
def test_fast_path_is_offered_only_when_the_head_alone_trains(tmp_path, strategy, fast):
    from torch_reference.backend import TorchBackend
    from torch_reference.models import build_model
    cfg = small_config(tmp_path, tmp_path / "run", strategy=strategy)
    backend = TorchBackend(cfg).adopt(build_model("resnet18", 2), "resnet18")
    backend.enter_stage(plan_stages(cfg)[0], [cfg.lr])
    path = backend.fast_path()
    assert (path is not None) == fast
    if fast:
        assert isinstance(path, protocol.FastPath)


# --- the core imports no framework --------------------------------------------------------------------------

def _framework_imports(source: str):
    """``(line, module)`` of every import of a framework anywhere in ``source`` (module level or in a function)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and isinstance(node.args[0] if node.args else None, ast.Constant)
              and isinstance(node.func, (ast.Name, ast.Attribute))
              and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__")):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in FRAMEWORKS]
    return found


def test_the_import_scan_sees_function_local_and_dynamic_imports():
    source = "def f():\n    import torch\n    from mindspore import nn\n    importlib.import_module('torchvision')\n"
    assert [m for _, m in _framework_imports(source)] == ["torch", "mindspore", "torchvision"]


def test_core_imports_no_framework_even_inside_functions():
    core = sorted((ROOT / "ms_transfer" / "core").rglob("*.py"))
    assert len(core) >= 15
    offenders = {str(p.relative_to(ROOT)): hits for p in core if (hits := _framework_imports(p.read_text()))}
    assert not offenders, f"framework imports in ms_transfer/core (register them from a backend instead): {offenders}"


# --- weight-file formats, registered by the backends ---------------------------------------------------------

def test_an_unregistered_format_names_the_module_to_import(tmp_path, monkeypatch):
    import ms_transfer.mindspore_backend.ckpt_format  # noqa: F401  (registered, then taken away for this test)
    monkeypatch.delitem(checkpoint_io._REGISTERED, "mindspore")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"w\.ckpt: no reader/writer for mindspore files.*import "
                                              r"ms_transfer\.mindspore_backend\.ckpt_format"):
        read_weights(tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match="import ms_transfer.mindspore_backend.ckpt_format"):
        write_weights(tmp_path / "x.ckpt", {"w": np.zeros(2, np.float32)})
    assert not (tmp_path / "x.ckpt").exists()
    with pytest.raises(ValueError, match="unknown weight format 'onnx'"):
        checkpoint_io.register_format(checkpoint_io.WeightFormat("onnx", read_weights, write_weights))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_each_side_reads_the_other_frameworks_files_and_loads_it_only_then(tmp_path):
    """A MindSpore-only process reads torchvision's .pth (torch loaded only by the read); a torch-only process
    reads a .ckpt (MindSpore likewise), both through what the backends register on import."""
    write_weights(tmp_path / "w.pth", {"fc.weight": np.ones((2, 3), np.float32)})
    write_weights(tmp_path / "w.ckpt", {"fc.weight": np.ones((2, 3), np.float32)})
    for side, other, ext in (("ms_transfer.mindspore_backend.backend", "torch", "pth"),
                             ("torch_reference.backend", "mindspore", "ckpt")):
        result = _python(f"""
            import sys
            import {side}
            from ms_transfer.core.checkpoint_io import read_weights
            assert {other!r} not in sys.modules, "loaded at import"
            state = read_weights({str(tmp_path / f"w.{ext}")!r}).state
            assert list(state) == ["fc.weight"] and state["fc.weight"].sum() == 6, state
            print("ok")
        """)
        assert result.returncode == 0 and "ok" in result.stdout, (side, result.stderr[-2000:])


def test_train_steps_are_freed_once_they_have_run_in_graph_mode():
    """The MindSpore train steps (the whole net's, and the frozen trunk's head and fused steps) are freed with their
    last reference after running in GRAPH mode. ``nn.TrainOneStepCell`` itself is not in MindSpore 2.7.2: its
    ``construct(*inputs)`` keeps the cell, its network and its graph alive for the rest of the process (0.2 GiB per
    ``train()`` of ResNet18 at 32 px), hence ``TrainStep``'s fixed signature."""
    import gc
    import weakref

    from mindspore import nn

    from ms_transfer.core.freeze import strategy_patterns
    from ms_transfer.mindspore_backend.backend import WithLoss, make_loss
    from ms_transfer.mindspore_backend.context import set_context
    from ms_transfer.mindspore_backend.frozen_trunk import FrozenTrunkStep, TrainStep
    from ms_transfer.mindspore_backend.optim import apply_freeze
    from ms_transfer.models import build_model

    set_context("graph", "CPU")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = np.array([0, 1], np.int32)

    def run(fixed: bool):
        import mindspore as ms
        net = build_model("resnet18", 2)
        if fixed:
            apply_freeze(net, *strategy_patterns("fixed_feature", arch="resnet18"))
            step = FrozenTrunkStep(net, nn.Momentum(net.trainable_params(), 0.01, 0.9), make_loss())
            loss = step(x, y)
            step.head_step(step.extract(x), y)
            cells = [step.head, step.fused, step.trunk]
        else:
            step = TrainStep(WithLoss(net, make_loss()), nn.Momentum(net.trainable_params(), 0.01, 0.9))
            loss = step(ms.Tensor(x), ms.Tensor(y))
            cells = [step]
        assert np.isfinite(float(loss.asnumpy()))
        return [weakref.ref(c) for c in [*cells, net]]

    for fixed in (False, True):
        refs = run(fixed)
        gc.collect()
        assert [r() for r in refs] == [None] * len(refs), f"fixed_feature={fixed}: a train step outlived its run"
