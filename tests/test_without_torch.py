"""The MindSpore-only install (torch and torchvision are the ``torch`` extra): in one process where importing torch
fails as it does when it is not installed, a MindSpore training run, a ``.ckpt -> .safetensors -> .ckpt``
conversion (bit-exact), an own model's reference bundle checked against its cell (the clean port passes, the
BN-eps-1e-3 port fails), a ``.pth`` refused with an error naming the extra, and every module of the project
imported: all of ``ms_transfer`` imports, a module that needs torch says how to install it. One subprocess."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import parity

ROOT = Path(__file__).resolve().parents[1]

#: ``sitecustomize`` on PYTHONPATH: every import of torch / torchvision fails as when they are not installed
BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _NoTorch())
"""

SCRIPT = """
import json, sys
from pathlib import Path

import numpy as np

import parity
from conftest import train_digits
from examples.parity_own_model_ms import MindSporeNet
from ms_transfer.convert import main as convert
from ms_transfer.core.checkpoint_io import read_weights

tmp, bundle, pth = (Path(a) for a in sys.argv[1:4])
out = {}
summary = train_digits("digit_cnn", tmp, tmp / "run", "mindspore", mode="pynative")
best = Path(summary["run_dir"]) / "best.ckpt"
out["trained"] = best.is_file()
assert convert([str(best), str(tmp / "w.safetensors")]) == 0
assert convert([str(tmp / "w.safetensors"), str(tmp / "back.ckpt")]) == 0
a, b = read_weights(best).state, read_weights(tmp / "back.ckpt").state
out["round_trip_exact"] = list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
out["pth_exit"] = convert([str(pth), str(tmp / "x.safetensors")])
out["clean_passed"] = parity.check_reference(bundle, MindSporeNet()).passed
buggy = parity.check_reference(bundle, MindSporeNet(eps=1e-3))
out["buggy_failed"] = sorted(r.check for r in buggy.results if not r.passed)
import importlib, pkgutil
import ms_transfer, torch_reference
unclear = []   # a module that needs torch must say how to install it, not "No module named 'torch'"
for package in (ms_transfer, parity, torch_reference):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            if module.name.startswith("ms_transfer.") or "pip install 'ms_transfer[torch]'" not in str(exc):
                unclear.append(f"{module.name}: {exc}")
out["unclear_imports"] = unclear
out["torch_loaded"] = "torch" in sys.modules or "torchvision" in sys.modules
try:
    import torch  # noqa: F401
    out["torch_importable"] = True
except ModuleNotFoundError:
    out["torch_importable"] = False
print(json.dumps(out))
"""


def without_torch(directory: Path, *paths: Path) -> dict:
    """The environment of a process where importing torch fails: ``BLOCK_TORCH`` as ``directory/sitecustomize.py``
    first on ``PYTHONPATH``, then ``paths``, then the current ``PYTHONPATH``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(BLOCK_TORCH)
    path = os.pathsep.join([str(directory), *map(str, paths), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def own_bundle(tmp_path_factory):
    """examples/parity_own_model.py's pair saved as an own-model bundle (no model spec: the cell is passed)."""
    from examples.parity_own_model import NAME_MAP, MindSporeNet, TorchNet

    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    images, labels = rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.randint(0, 4, size=4)
    return parity.save_reference(tmp_path_factory.mktemp("own") / "bundle", TorchNet(), MindSporeNet(), images,
                                 labels, name_map=NAME_MAP)


def test_train_convert_and_check_a_bundle_without_torch(own_bundle, tmp_path):
    pth = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path), str(own_bundle), str(pth)],
                          capture_output=True, text=True, cwd=ROOT,
                          env=without_torch(tmp_path / "block", ROOT, ROOT / "tests"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"trained": True, "round_trip_exact": True, "pth_exit": 2, "clean_passed": True,
                   "buggy_failed": ["eval outputs", "grads (eval-mode BN)", "grads (train-mode BN)", "train loss",
                                    "train outputs"],
                   "unclear_imports": [], "torch_loaded": False, "torch_importable": False}
    assert "needs PyTorch, which is not installed: install the torch extra, pip install 'ms_transfer[torch]'" in (
        proc.stderr)


def test_an_own_model_bundle_stores_its_weights_once_in_float32(own_bundle):
    from safetensors.numpy import load_file

    from parity.engine.bundle import MANIFEST, TENSORS

    manifest = json.loads((own_bundle / MANIFEST).read_text())
    tensors = load_file(str(own_bundle / TENSORS))
    weights = {k[len("weight/"):]: v for k, v in tensors.items() if k.startswith("weight/")}
    assert manifest["model"] is None and manifest["generated"] == {}
    assert sorted(weights) == sorted(manifest["name_map"].values())   # every port weight, under its MindSpore name
    assert manifest["name_map"]["head.weight"] == "classifier.weight"
    assert {str(v.dtype) for v in weights.values()} == {"float32"}
    # once: the other tensors are the inputs, the targets and the references of the checks' rows
    assert {k.split("/")[0] for k in tensors} == {"weight", "input", "loss_arg", "ref"}


def test_a_cell_whose_names_do_not_fit_the_bundle_is_refused(own_bundle):
    from mindspore import nn

    from examples.parity_own_model_ms import MindSporeNet
    from parity.engine.bundle import BundleError

    class Renamed(MindSporeNet):   # the head under torch's name: not the cell the bundle was saved with
        def __init__(self):
            super().__init__()
            del self.classifier
            self.head = nn.Dense(16, 4)

    with pytest.raises(BundleError, match=r"missing \['head.weight', 'head.bias'\].*pass that cell, or save the "
                                          r"bundle again"):
        parity.check_reference(own_bundle, Renamed(), mode="pynative")
