"""Portable reference bundles: check a port on a machine without torch (another device, another MindSpore).

``save_reference`` (torch and MindSpore both installed) runs the torch side of every check -- the float64
reference and the float32 floor samples of :func:`parity.engine.comparison.compare_models` -- and writes a directory:

``manifest.json``        format, versions, model spec, seed, loss, checks and their rows, optimizer settings, the
                         torch -> MindSpore name map, the tolerance rule and its constants, every row's noise floor
                         (:class:`~parity.engine.tolerance.Floor`), the generator spec of every regenerated weight,
                         and the sha256 of ``tensors.safetensors`` and of the manifest itself
``tensors.safetensors``  inputs, loss arguments, the stored weights (MindSpore names), the reduced references

``check_reference`` needs MindSpore and numpy only: it rebuilds the port (from the manifest's model spec, or the
cell you pass), loads the weights, runs the same computations and compares them against the stored references
and floors with the same rule. A bundle that was edited, truncated, is missing a tensor or does not fit the
model is refused with a :class:`BundleError`; it never passes by default.

Own models. A bundle saved without a model spec is checked against the cell you pass
(``check_reference(DIR, ms_cell)``, in a process without torch): its weights are stored once, float32, under the
cell's MindSpore names (the torch -> MindSpore name map it was saved with is in the manifest) and loaded into the
cell before the checks; a cell whose names or shapes do not fit is refused.

Size. Every weight is stored, 4 bytes an element, except those drawn from a seeded generator, which are
regenerated and checked against their sha256 (this project's ResNet / VGG bundles: ResNet18 at 64 px, batch 2,
10 classes is about 1.8 MB, README). An own model's bundle is its float32 weights plus a few per cent: ResNet50
(25.6 M parameters and 53 k BN statistics, 1000 classes) is 102.4 MB of weights and ~107 MB in all; measured with
10 classes at 32 px, batch 2: 98.9 MB (94.3 MB weights, 4.4 MB references, 25 kB inputs, a 51 kB manifest).
The references stay small because every reference tensor above ``SKETCH_MIN`` elements is stored as a count
sketch of ``SKETCH_SIZE`` buckets (each element added, with a seeded random sign, to a seeded random bucket).
A sketch is linear, so ``sketch(port) - sketch(ref) = sketch(port - ref)``: a uniform scale error stays exactly
that, and the relative L2 error is estimated within ~sqrt(2 / SKETCH_SIZE) = 3%, far inside the rule's factor
``K = 4``. The floors are measured on sketched samples, so both sides of the rule see the same reduction.
"""
from __future__ import annotations

import hashlib
import json
import platform
import zlib
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .plugins import load_deferred
from .report import ParityReport
from .tolerance import ABS_TERM, FLOOR_SAMPLES, JITTER, ROUNDING_JITTER, Floor, K, as_named, compare_to_floor, failed

FORMAT = "ms_transfer.parity.reference/1"
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
#: reference tensors with more elements than this are stored as count sketches of SKETCH_SIZE buckets
SKETCH_MIN = 8192
SKETCH_SIZE = 2048

PathLike = Union[str, Path]


class BundleError(ValueError):
    """A reference bundle that cannot be trusted or does not fit: what is wrong and how to fix it."""


#: ``builder(model spec) -> MindSpore cell or None``: rebuilds the port of a bundle whose manifest has a model spec
ModelBuilder = Callable[[Mapping[str, Any]], Any]
_BUILDERS: List[ModelBuilder] = []


def register_model_builder(builder: ModelBuilder) -> ModelBuilder:
    """Let :func:`check_reference` rebuild ports from model specs ``builder`` knows (it returns ``None`` for the
    others; registering it again changes nothing). Returns it, so it can decorate the builder."""
    if builder not in _BUILDERS:
        _BUILDERS.append(builder)
    return builder


def _build_port(directory: Path, model: Mapping[str, Any]):
    """The port of the bundle's model spec, from the first registered builder that knows it."""
    load_deferred()
    for builder in _BUILDERS:
        cell = builder(model)
        if cell is not None:
            return cell
    raise BundleError(f"{directory}: no registered builder knows its model {dict(model)}: pass its MindSpore cell "
                      "(parity.check_reference(DIR, ms_cell))")


def generated_tensor(spec: Mapping, shape: Sequence[int]) -> np.ndarray:
    """A float32 tensor from a generator spec ``{"dist": "normal" | "uniform", "scale": s, "seed": [a, b]}``:
    ``s * N(0, 1)`` or ``U(-s, s)`` from numpy's ``RandomState`` (whose streams numpy keeps stable across versions,
    NEP 19), so that a reference bundle regenerates large weights instead of storing them."""
    rng = np.random.RandomState(list(spec["seed"]))
    if spec["dist"] == "normal":
        return (spec["scale"] * rng.standard_normal(tuple(shape))).astype(np.float32)
    if spec["dist"] == "uniform":
        return rng.uniform(-spec["scale"], spec["scale"], tuple(shape)).astype(np.float32)
    raise ValueError(f"unknown generator {spec['dist']!r}")


def reduce(name: str, a: np.ndarray) -> np.ndarray:
    """``a`` as float64 (a scalar as shape ``(1,)``, as safetensors stores it), or its count sketch (seeded by
    ``name``) when it has more than ``SKETCH_MIN`` elements."""
    a = np.asarray(a, np.float64)
    if a.size <= SKETCH_MIN:
        return a.reshape(1) if a.ndim == 0 else a
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    bucket = rng.randint(0, SKETCH_SIZE, a.size)
    sign = rng.randint(0, 2, a.size) * 2.0 - 1.0
    return np.bincount(bucket, weights=sign * a.ravel(), minlength=SKETCH_SIZE)


def _reduce_rows(row: str, arrays) -> Dict[str, np.ndarray]:
    return {k: reduce(f"{row}/{k}", v) for k, v in as_named(arrays).items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(manifest: Mapping) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("numpy", "torch", "torchvision", "mindspore"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def save_reference(directory: PathLike, torch_module, ms_cell, inputs, targets: Optional[np.ndarray] = None,
                   options=None, *, model: Optional[Mapping[str, Any]] = None,
                   generated: Optional[Mapping[str, dict]] = None, **overrides) -> Path:
    """Write a reference bundle for the pair (arguments, ``options`` and keyword overrides as
    :func:`parity.engine.comparison.compare_models`; ``checks``, ``config``, ``log`` and the name map, loss, seed
    and optimizer settings apply, the rest is for live comparisons).

    ``model``: how ``check_reference`` rebuilds the port without being given it (a spec a registered builder
    knows, e.g. ``{"arch", "num_classes", "padding"}`` for this project's models, see
    :func:`register_model_builder`; ``None``: the checker passes its cell). ``generated``: torch name ->
    generator spec (:func:`generated_tensor`) of weights to regenerate instead of storing.
    ``ms_cell`` is used for its parameter names only; nothing MindSpore runs here.
    """
    from safetensors.numpy import save_file

    from .comparison import CompareOptions, prepare
    from .dropout import torch_dropout_ps

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / MANIFEST).exists():
        raise BundleError(f"{directory} exists and is not a reference bundle: choose a new or empty directory")
    o = (options or CompareOptions()).with_overrides(**overrides)
    checks, log = tuple(o.checks), o.log
    # the optimizer check's gradients are regenerated where the bundle is checked, maybe under another numpy:
    # RandomState's stream, which numpy keeps stable (NEP 19)
    c = prepare(torch_module, ms_cell, inputs, targets, o, grads_generator="mt19937")
    tensors: Dict[str, np.ndarray] = {}
    for i, x in enumerate(c.xs):
        tensors[f"input/{i}"] = np.ascontiguousarray(x)
    for i, a in enumerate(c.loss_args):
        tensors[f"loss_arg/{i}"] = np.ascontiguousarray(a)
    regen: Dict[str, dict] = {}
    ms_of = c.match.torch_to_ms
    for t, m in ms_of.items():
        spec = (generated or {}).get(t)
        value = np.ascontiguousarray(c.ms_state[m])
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)   # the port's dtype: what check_reference loads into the cell
        if spec is not None and np.array_equal(generated_tensor(spec, value.shape), value):
            regen[m] = {**spec, "shape": list(value.shape), "sha256": hashlib.sha256(value.tobytes()).hexdigest()}
        else:
            tensors[f"weight/{m}"] = value
    rows: Dict[str, List[str]] = {}
    floors: Dict[str, dict] = {}
    for check in checks:
        log(f"reference for {check} ...")
        ref, samples, scale, _ = c.reference_rows(check)   # no port here: no shared ReLU masks
        rows[check] = list(ref)
        for row in ref:
            r = _reduce_rows(row, ref[row])
            floors[row] = Floor.measure(r, [_reduce_rows(row, s[row]) for s in samples],
                                        [_reduce_rows(row, s[row]) for s in scale]).as_dict()
            for k, v in r.items():
                tensors[f"ref/{row}/{k}"] = np.ascontiguousarray(v)
    opt = {"seed": o.seed, "lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay, "opt_steps": o.opt_steps}
    manifest = {
        "format": FORMAT, "versions": _versions(), "model": dict(model) if model else None,
        "config": asdict(o.config) if is_dataclass(o.config) else o.config,
        "loss": c.loss, "checks": list(checks), "rows": rows, "optimizer": opt, "steps": len(c.step_grads),
        "grads_generator": c.step_grads.generator,
        "seed": o.seed, "inputs": len(c.xs), "name_map": ms_of, "trainable": c.trainable,
        "tolerance": {"rule": "ratio_t = err_t / (max(floor_t, floor_pooled) + ABS_TERM / K) <= K and "
                              "|scale| / (scale_floor + ABS_TERM / K) <= K (parity/engine/tolerance.py)",
                      "K": K, "ABS_TERM": ABS_TERM, "FLOOR_SAMPLES": FLOOR_SAMPLES, "JITTER": JITTER,
                      "ROUNDING_JITTER": ROUNDING_JITTER, "SKETCH_MIN": SKETCH_MIN, "SKETCH_SIZE": SKETCH_SIZE},
        "floors": floors, "generated": regen,
        "dropout": [[name, p] for name, p in torch_dropout_ps(torch_module)],   # torch's p of each layer, in order
    }
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    manifest["tensors_sha256"] = _sha256(tmp)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    tmp.replace(directory / TENSORS)
    tmp_manifest = directory / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=1))
    tmp_manifest.replace(directory / MANIFEST)
    return directory


def load_bundle(directory: PathLike) -> Tuple[dict, Dict[str, np.ndarray]]:
    """The manifest and tensors of a bundle, after every integrity check (raises :class:`BundleError`)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    manifest_path, tensors_path = directory / MANIFEST, directory / TENSORS
    for path in (manifest_path, tensors_path):
        if not path.is_file():
            raise BundleError(f"{path} is missing: not a complete reference bundle (write one with "
                              "python -m parity --save-reference DIR)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}): the bundle is damaged; re-create it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}"
                          f", expected {FORMAT!r}: re-create the bundle with this version of parity")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise BundleError(f"{manifest_path} was edited after it was written (its sha256 does not match): "
                          "re-create the bundle")
    if _sha256(tensors_path) != manifest.get("tensors_sha256"):
        raise BundleError(f"{tensors_path} does not match the sha256 in the manifest (edited, truncated or from "
                          "another bundle): re-create the bundle")
    try:
        tensors = load_file(str(tensors_path))
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise BundleError(f"{tensors_path} cannot be read ({exc}): re-create the bundle") from None
    expected = [f"input/{i}" for i in range(manifest["inputs"])]
    expected += [f"ref/{row}/" for rows in manifest["rows"].values() for row in rows]
    missing = [k for k in expected if not (k in tensors or (k.endswith("/") and any(t.startswith(k) for t in tensors)))]
    for m in manifest["name_map"].values():
        if m not in manifest["generated"] and f"weight/{m}" not in tensors:
            missing.append(f"weight/{m}")
    if missing:
        raise BundleError(f"{directory}: tensors missing from the bundle: {', '.join(missing[:5])}")
    return manifest, tensors


def _weights(manifest: Mapping, tensors: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    weights = {k[len("weight/"):]: v for k, v in tensors.items() if k.startswith("weight/")}
    for name, spec in manifest["generated"].items():
        value = generated_tensor(spec, spec["shape"])
        if hashlib.sha256(value.tobytes()).hexdigest() != spec["sha256"]:
            raise BundleError(f"regenerated weight {name} does not match its sha256 (numpy {np.__version__} draws "
                              "differently, or the manifest was edited): re-create the bundle on this machine")
        weights[name] = value
    return weights


def check_reference(directory: PathLike, ms_cell=None, *, mode: str = "graph", device: str = "CPU",
                    arch: Optional[str] = None, log: Callable[[str], None] = lambda s: None) -> ParityReport:
    """Run the MindSpore side of a bundle's checks and compare with its stored references (no torch needed).

    ``ms_cell``: the port to check (default: built from the manifest's model spec). ``arch``: refuse the bundle
    unless it was made for this architecture.
    """
    from ms_transfer.mindspore_backend.context import set_context

    from .comparison import GRADS_GENERATORS, CompareOptions, make_runners, run_port, synthetic_grads
    from .dropout import compare_dropout, ms_dropout_stats
    from .mindspore_side import MindSporeSide, WeightsMismatch, load_weights

    manifest, tensors = load_bundle(directory)
    # a bundle that names no generator was saved before the manifest named it: RandomState's (mt19937)
    generator = manifest.get("grads_generator", "mt19937")
    if generator not in GRADS_GENERATORS:
        raise BundleError(f"{directory}: its optimizer check's gradients come from the generator {generator!r}, "
                          f"which this version of parity does not have ({', '.join(GRADS_GENERATORS)}): check it "
                          "with the version that saved it (manifest.json's versions), or save the bundle again")
    model = manifest.get("model")
    if arch is not None and (model or {}).get("arch") != arch:
        raise BundleError(f"{directory} was made for {(model or {}).get('arch') or 'a user model'}, not {arch}: "
                          "pass the bundle of this architecture, or drop --arch")
    set_context(mode, device)
    if ms_cell is None:
        if not model:
            raise BundleError(f"{directory} holds a user model's reference: pass its MindSpore cell "
                              "(parity.check_reference(DIR, ms_cell))")
        ms_cell = _build_port(Path(directory), model)
    weights = _weights(manifest, tensors)
    try:
        load_weights(ms_cell, weights)
    except WeightsMismatch as exc:
        raise BundleError(f"the bundle's weights do not fit the model: {exc}. {directory} holds the weights of the "
                          "cell it was saved with, under that cell's names (manifest.json's name_map maps torch's "
                          "to them): pass that cell, or save the bundle again for this one") from None
    ms_to_torch = {m: t for t, m in manifest["name_map"].items()}
    xs = [tensors[f"input/{i}"] for i in range(manifest["inputs"])]
    loss_args = [tensors[k] for k in sorted((k for k in tensors if k.startswith("loss_arg/")),
                                            key=lambda k: int(k.split("/")[1]))]
    params = {t: weights[manifest["name_map"][t]] for t in manifest["trainable"]}
    opt = manifest["optimizer"]
    step_grads = synthetic_grads(params, manifest["steps"], manifest["seed"], generator)
    defaults = CompareOptions()
    runners = make_runners(loss_args, step_grads, opt.get("lr", defaults.lr), opt.get("momentum", defaults.momentum),
                           opt.get("weight_decay", defaults.weight_decay))
    side = MindSporeSide(ms_cell, weights, ms_to_torch, manifest["loss"])
    report = ParityReport({"bundle": str(directory), "mode": mode, "device": device, "made_with": manifest["versions"],
                           "model": model}, names={"rule": "bundle", "matched": len(ms_to_torch)})
    for check in manifest["checks"]:
        log(f"checking {check} ...")
        ms, error = run_port(runners[check], side, xs)
        side.release_graphs()   # each check's graphs are its own (MindSporeSide.release_graphs)
        for row in manifest["rows"][check]:
            if ms is None or row not in ms:
                report.results.append(failed(row, error or f"the port produced no {row!r}"))
                continue
            ref = {k[len(f"ref/{row}/"):]: v for k, v in tensors.items() if k.startswith(f"ref/{row}/")}
            mine = _reduce_rows(row, ms[row])
            if set(mine) != set(ref):
                report.results.append(failed(row, f"tensors differ from the bundle's: "
                                                  f"{sorted(set(mine) ^ set(ref))[:4]}"))
                continue
            floor = Floor(**manifest["floors"][row])
            report.results.append(compare_to_floor(row, mine, ref, floor, details=False))
    ms_stats = ms_dropout_stats(ms_cell)
    if manifest.get("dropout") or ms_stats:
        report.results.append(compare_dropout([tuple(d) for d in manifest.get("dropout", [])], ms_stats))
    return report
