"""Portable reference bundles: written with torch, checked with MindSpore alone (torch blocked from importing),
in both modes; a buggy port fails against the bundle; every kind of damaged or mismatched bundle is refused
with a clear error, never passed."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from parity.__main__ import main as parity_main
from parity.engine.bundle import MANIFEST, TENSORS, BundleError, _manifest_digest, _sha256, check_reference

#: the README's bundle: ResNet18, 64 px, batch 2, 10 classes
ARGS = ["--arch", "resnet18", "--image-size", "64", "--num-classes", "10"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundle") / "resnet18"
    assert parity_main(ARGS + ["--save-reference", str(directory)]) == 0
    return directory


def test_bundle_is_small_and_self_describing(bundle):
    size = sum(f.stat().st_size for f in bundle.iterdir())
    assert size < 2.5e6   # README: ~1.8 MB (conv weights regenerated from the seed, large tensors sketched)
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["model"] == {"arch": "resnet18", "num_classes": 10, "padding": "torch"}
    assert {"torch", "mindspore", "numpy"} <= set(manifest["versions"])
    assert manifest["tolerance"]["K"] == 4.0 and "floors" in manifest and len(manifest["generated"]) == 21
    assert manifest["grads_generator"] == "mt19937"   # regenerated where checked: numpy keeps RandomState's stable


BLOCK_TORCH = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError('torch is blocked in this process: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = ['parity'] + sys.argv[1:]
runpy.run_module('parity', run_name='__main__')
"""


def test_round_trip_passes_in_both_modes_without_torch(bundle):
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "--check-reference", str(bundle), "--mode", "both"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("PASSED") == 2 and "GRAPH" in proc.stdout and "PYNATIVE" in proc.stdout
    for row in ("eval outputs", "BN running stats", "grads (train-mode BN)", "param update, 3 steps"):
        assert row in proc.stdout


def test_a_buggy_port_fails_against_the_bundle(bundle):
    from ms_transfer.models import build_model
    from parity.suite.bugs import inject

    net = build_model("resnet18", 10)
    inject("bn_eps@layer3.1", net, {})
    report = check_reference(bundle, net, mode="pynative")
    assert not report.passed
    assert {r.check for r in report.results if not r.passed} >= {"eval outputs", "train outputs"}


def _copy(bundle, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for f in bundle.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def _rewrite_manifest(directory, edit):
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    manifest["manifest_sha256"] = _manifest_digest(manifest)   # a consistent bundle, just a different one
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _drop_tensor(directory):
    tensors = load_file(str(directory / TENSORS))
    del tensors[next(k for k in tensors if k.startswith("weight/"))]
    save_file(tensors, str(directory / TENSORS))
    _rewrite_manifest(directory, lambda m: m.update(tensors_sha256=_sha256(directory / TENSORS)))


def _edit_floor(directory):
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["floors"]["eval outputs"]["pooled"] *= 100   # a looser floor, hash left stale
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _flip_byte(directory):
    data = bytearray((directory / TENSORS).read_bytes())
    data[-100] ^= 0xFF
    (directory / TENSORS).write_bytes(bytes(data))


def _truncate(directory):
    data = (directory / TENSORS).read_bytes()
    (directory / TENSORS).write_bytes(data[: len(data) // 2])


def _other_arch(directory):
    _rewrite_manifest(directory, lambda m: m["model"].update(arch="resnet34"))


def _regenerated_weight(directory):
    def edit(m):
        name = next(iter(m["generated"]))
        m["generated"][name]["seed"] = [99, 99]
    _rewrite_manifest(directory, edit)


def _unknown_grads_generator(directory):
    _rewrite_manifest(directory, lambda m: m.update(grads_generator="pcg64"))


TAMPERING = {
    "manifest edited": (_edit_floor, "was edited after it was written"),
    "gradients from a generator this parity lacks": (_unknown_grads_generator, "the generator 'pcg64'"),
    "byte flipped": (_flip_byte, "does not match the sha256"),
    "truncated": (_truncate, "does not match the sha256"),
    "tensor missing": (_drop_tensor, "tensors missing from the bundle: weight/"),
    "made for another arch": (_other_arch, "do not fit the model"),
    "regenerated weight differs": (_regenerated_weight, "does not match its sha256"),
    "manifest missing": (lambda d: (d / MANIFEST).unlink(), "manifest.json is missing"),
}


@pytest.mark.parametrize("damage", sorted(TAMPERING))
def test_a_damaged_or_mismatched_bundle_is_refused(bundle, tmp_path, damage):
    edit, message = TAMPERING[damage]
    directory = _copy(bundle, tmp_path)
    edit(directory)
    with pytest.raises(BundleError, match=message):
        check_reference(directory, mode="pynative")


def test_cli_refuses_a_bundle_of_another_arch(bundle, capsys):
    assert parity_main(["--check-reference", str(bundle), "--arch", "resnet50", "--mode", "pynative"]) == 2
    assert "was made for resnet18, not resnet50" in capsys.readouterr().err
    # the bundle itself is untouched by the refusal
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["manifest_sha256"] == _manifest_digest(manifest)
    assert hashlib.sha256((bundle / TENSORS).read_bytes()).hexdigest() == manifest["tensors_sha256"]


def test_save_refuses_a_directory_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert parity_main(ARGS + ["--checks", "eval_logits", "--save-reference", str(tmp_path)]) == 2
    assert "is not a reference bundle" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / MANIFEST).exists()


def test_the_committed_bundle_passes():
    """refs/resnet18-64 (`make parity-reference`, 1.8 MB in the repository): the port checked against a reference
    made once, so a change on the MindSpore side is caught without torch (and on other MindSpore versions)."""
    committed = Path(__file__).parents[1] / "refs" / "resnet18-64"
    report = check_reference(committed, mode="pynative")
    assert report.passed, "\n".join(str(r) for r in report.results)
    assert report.config["model"]["arch"] == "resnet18" and len(report.results) == 7
