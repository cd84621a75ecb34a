"""``python -m parity --torch-model PKG.MOD:FACTORY --ms-model PKG.MOD:FACTORY ...``: your own model pair on the
command line, through the engine's any-model API (:func:`parity.compare_models`, :mod:`parity.engine.port`,
:mod:`parity.engine.bundle`); this module only turns flags into its arguments and its reports into output.

* ``FACTORY`` is a zero-argument callable (a class or a function) in a module importable from the current
  directory or ``PYTHONPATH`` (the current directory is put on ``sys.path`` as ``python -m`` does). The torch
  model is built after ``torch.manual_seed(--seed)``; ``--torch-weights`` then loads a state dict into it.
* Inputs: ``--input-shape`` once per positional argument of ``forward`` (standard normal float32, seeded), or
  ``--inputs`` files (``.npy``, never unpickled). Integer inputs (token ids): ``--input-dtype int64`` (once for
  every input, or once per input) draws uniform integers in ``[LOW, HIGH)`` from ``--input-range LOW:HIGH``, by
  default ``[0, num_embeddings)`` of the torch model's first ``nn.Embedding``.
* Loss: cross-entropy on the first output with ``--num-classes N`` (seeded random targets) or ``--targets``;
  otherwise the engine's seeded projection of every output.
* Exit codes (what a CI job reads): :data:`EXIT_PASS` every check passed, :data:`EXIT_FAIL` a check failed (the
  table says which), :data:`EXIT_USAGE` the checks could not run: a factory that does not import or does not exist,
  inputs the torch model rejects, names that do not match (listed, with a ``--name-map`` to start from), an
  unreadable file. Errors are one message naming what, where and the fix, never a traceback. The verdict is
  computed before anything that only explains it (localisation, the sensitivity table); a failure there is
  printed and leaves the exit code alone.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ms_transfer.core.flags import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, write_json

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT   # every command's (ms_transfer.core.flags)
#: ``--input-dtype`` choices (MindSpore receives integers as int32, torch as int64: what embeddings take)
DTYPES = ("float32", "int32", "int64")
#: flags of this path (``dest`` names); any of them without ``--torch-model`` is an error
OWN_FLAGS = ("torch_model", "input_shape", "input_dtype", "input_range", "inputs", "targets", "torch_weights",
             "name_map", "write_checkpoint", "export_mindir")


class UsageError(Exception):
    """The checks cannot run: the message says what is wrong, where, and how to fix it (exit 2)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The own-model flags (``--ms-model`` also names the cell for ``--check-reference``)."""
    g = parser.add_argument_group(
        "your own model pair (instead of --arch; see docs/port-your-own-model.md)",
        "--mode, --device, --seed, --num-classes, --checks, --localize, --sensitivity, --json, --save-reference "
        "and --check-reference apply as well")
    g.add_argument("--torch-model", metavar="PKG.MOD:FACTORY",
                   help="the torch original: a zero-argument class or function, importable from the current "
                        "directory or PYTHONPATH")
    g.add_argument("--ms-model", metavar="PKG.MOD:FACTORY",
                   help="the MindSpore port (a zero-argument factory of an nn.Cell); with --check-reference: the "
                        "cell the bundle is checked against")
    g.add_argument("--input-shape", action="append", type=_shape, metavar="N,C,...",
                   help="one per positional input of forward, e.g. 4,3,224,224 (random, seeded by --seed)")
    g.add_argument("--input-dtype", action="append", choices=DTYPES, metavar="DTYPE",
                   help=f"{', '.join(DTYPES)} (default float32): once for every input or once per --input-shape; "
                        "integer inputs are token ids, drawn from --input-range")
    g.add_argument("--input-range", action="append", type=_range, metavar="LOW:HIGH",
                   help="integers in [LOW, HIGH) for integer inputs (once, or once per input); default: "
                        "[0, num_embeddings) of the torch model's first nn.Embedding")
    g.add_argument("--inputs", nargs="+", type=Path, metavar="FILE.npy",
                   help="the inputs themselves, one .npy file per positional input (instead of --input-shape)")
    g.add_argument("--targets", type=Path, metavar="FILE.npy",
                   help="integer class targets for a cross-entropy loss on the first output (or --num-classes N: "
                        "random ones; neither: a seeded projection of every output)")
    g.add_argument("--torch-weights", type=Path, metavar="FILE",
                   help="a state dict (.pth/.pt, loaded with weights_only=True, or .safetensors) loaded into the "
                        "torch model before anything is compared")
    g.add_argument("--name-map", type=Path, metavar="FILE.yaml",
                   help="torch_name: mindspore_name pairs, one per line (names not in it keep the default rules)")
    g.add_argument("--write-checkpoint", type=Path, metavar="OUT.ckpt|OUT.safetensors",
                   help="write the port's checkpoint (the torch weights renamed), check it read back from disk "
                        "with every check, keep it only if they all pass")
    g.add_argument("--export-mindir", type=Path, metavar="OUT.mindir",
                   help="export the proven port as MindIR, load it back and check its eval outputs against torch")


def _shape(text: str) -> Tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: write the dimensions with commas, "
                                         "e.g. 4,3,224,224") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be >= 1")
    return shape


def _range(text: str) -> Tuple[int, int]:
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high))
    except ValueError:
        bounds = None
    if not sep or bounds is None or bounds[0] >= bounds[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: write LOW:HIGH with integers LOW < HIGH (HIGH excluded), "
                                         "e.g. 0:1000")
    return bounds


# --- factories -------------------------------------------------------------------------------------------------


def load_factory(spec: str, flag: str) -> Callable[[], Any]:
    """The callable named by ``PKG.MOD:ATTR`` (``ATTR`` may be dotted), imported with the current directory on
    ``sys.path``; a :class:`UsageError` naming the module or attribute and the fix otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{flag} {spec}: write MODULE:FACTORY, e.g. {flag} mypkg.models:build_net (a module "
                         "importable from the current directory or PYTHONPATH, and a zero-argument callable in it)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())   # as `python -m` does: the current directory's packages import
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(f"{flag} {spec}: no module named {exc.name!r} (looked in the current directory "
                             f"{os.getcwd()} and PYTHONPATH). Run from the directory holding the package, or add "
                             "it to PYTHONPATH") from None
        raise UsageError(f"{flag} {spec}: importing {module_name} failed: it imports {exc.name!r}, which is not "
                         "installed") from None
    except Exception as exc:
        raise UsageError(f"{flag} {spec}: importing {module_name} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            # what the module defines or re-exports from its own package (not what it imports from libraries)
            package = module.__name__.split(".")[0]
            defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                             and str(getattr(v, "__module__", "")).split(".")[0] == package)
            raise UsageError(f"{flag} {spec}: module {module_name} has no attribute {attr!r}; it defines "
                             f"{', '.join(defined) or 'no public class or function'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{flag} {spec}: {attr} is a {type(obj).__name__}, not a class or function")
    return obj


def build(spec: str, flag: str, kind: type) -> Any:
    """Call the factory ``spec`` with no arguments; the result must be a ``kind``."""
    factory = load_factory(spec, flag)
    try:
        model = factory()
    except Exception as exc:
        raise UsageError(f"{flag} {spec}: calling it with no arguments raised {type(exc).__name__}: "
                         f"{_first_line(exc)}. FACTORY must build the model without arguments: give its "
                         "parameters defaults, or write a function that builds the model you mean") from None
    if not isinstance(model, kind):
        raise UsageError(f"{flag} {spec} returned a {type(model).__name__}, not a {kind.__module__}."
                         f"{kind.__qualname__}")
    return model


def build_ms_cell(spec: Optional[str]):
    """The port named by ``--ms-model`` (a ``mindspore.nn.Cell``), or ``None``; MindSpore only."""
    if spec is None:
        return None
    from mindspore import nn
    return build(spec, "--ms-model", nn.Cell)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


# --- inputs, targets, weights, names ------------------------------------------------------------------------------


def _per_input(values: Optional[list], n: int, flag: str, default: Any) -> list:
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise UsageError(f"{flag} given {len(values)} times for {n} inputs: give it once (for every input) or once "
                         "per input, in the order of --input-shape")
    return list(values)


def embedding_range(torch_model) -> Optional[Tuple[int, int]]:
    """``(0, num_embeddings)`` of the torch model's first ``nn.Embedding`` / ``nn.EmbeddingBag``, or ``None``."""
    import torch
    for module in torch_model.modules():
        if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            return 0, int(module.num_embeddings)
    return None


def _load_npy(path: Path, flag: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag} {path}: not a readable .npy array ({_first_line(exc)}); save it with "
                         "numpy.save (object arrays are refused: nothing is unpickled)") from None


def make_inputs(args, torch_model) -> Tuple[List[np.ndarray], List[str]]:
    """The inputs, and how each was made (for the header)."""
    if args.inputs:
        if args.input_shape or args.input_dtype or args.input_range:
            raise UsageError("--inputs gives the inputs themselves: drop --input-shape / --input-dtype / "
                             "--input-range")
        xs = [_load_npy(p, "--inputs") for p in args.inputs]
        return xs, [f"{p.name} {_describe(x)}" for p, x in zip(args.inputs, xs)]
    if not args.input_shape:
        raise UsageError("give the inputs: --input-shape N,C,... once per positional input of forward (e.g. "
                         "--input-shape 4,3,224,224), or --inputs FILE.npy ...")
    n = len(args.input_shape)
    dtypes = _per_input(args.input_dtype, n, "--input-dtype", "float32")
    ranges = _per_input(args.input_range, n, "--input-range", None)
    rng = np.random.RandomState(args.seed)
    xs, how = [], []
    for shape, dtype, bounds in zip(args.input_shape, dtypes, ranges):
        if dtype == "float32":
            if bounds is not None and len(args.input_range) > 1:   # one range per input, and this one is float
                raise UsageError(f"--input-range {bounds[0]}:{bounds[1]} is given for a float32 input: ranges are "
                                 "for integer inputs (--input-dtype int64)")
            xs.append(rng.standard_normal(shape).astype(np.float32))
            how.append(_describe(xs[-1]))
            continue
        if bounds is None:
            bounds = embedding_range(torch_model)
            if bounds is None:
                raise UsageError(f"an {dtype} input needs its values' range: pass --input-range LOW:HIGH (the "
                                 "torch model has no nn.Embedding to read it from)")
        xs.append(rng.randint(bounds[0], bounds[1], size=shape).astype(dtype))
        how.append(f"{_describe(xs[-1])} in [{bounds[0]}, {bounds[1]})")
    return xs, how


def _describe(x: np.ndarray) -> str:
    return f"{'x'.join(map(str, x.shape)) or 'scalar'} {x.dtype}"


def probe_torch(torch_model, xs: Sequence[np.ndarray]) -> List[Tuple[int, ...]]:
    """Run the torch model once in eval and once in train mode (float32, a copy) on the inputs: the output shapes,
    or a :class:`UsageError` saying the model rejects them (before any check, so that it is not taken for a
    failing port)."""
    import torch

    from ..engine.torch_side import TorchSide, numpy_state
    from ..engine.loss import PROJECTION

    side = TorchSide(torch_model, numpy_state(torch_model), "float32", PROJECTION)   # it computes on its own copy
    shown = ", ".join(_describe(x) for x in xs)
    try:
        outs = side.eval_outputs(xs)
        with torch.no_grad():
            side.model(train=True)(*[side.tensor(x) for x in xs])
    except Exception as exc:
        raise UsageError(f"the torch model rejects the inputs ({shown}): {type(exc).__name__}: {_first_line(exc)}. "
                         "Give what its forward takes: --input-shape once per positional argument (the batch "
                         "first, >= 2 for train-mode BatchNorm), --input-dtype int64 for token ids") from None
    return [tuple(o.shape) for o in outs.values()]


def make_targets(args, out_shapes: Sequence[Tuple[int, ...]]) -> Optional[np.ndarray]:
    """Class targets for the first output (``None``: the projection loss), checked against its shape."""
    if args.targets is not None and args.num_classes is not None:
        raise UsageError("give --num-classes (random targets) or --targets FILE.npy, not both")
    if args.targets is None and args.num_classes is None:
        return None
    out = out_shapes[0]
    if len(out) < 2:
        raise UsageError(f"a cross-entropy loss needs a first output of shape (batch, classes, ...); the model's is "
                         f"{out}: drop --num-classes / --targets (the projection loss takes any output)")
    expected = (out[0],) + tuple(out[2:])
    if args.targets is not None:
        y = _load_npy(args.targets, "--targets")
        if not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"--targets {args.targets}: class indices must be integers, not {y.dtype}")
    else:
        if args.num_classes < 1:
            raise UsageError("--num-classes must be >= 1")
        y = np.random.RandomState(args.seed + 1).randint(0, args.num_classes, size=expected)
    if tuple(y.shape) != expected or y.min() < 0 or y.max() >= out[1]:
        raise UsageError(f"targets of shape {tuple(y.shape)} in [{y.min()}, {y.max()}] do not fit the first output "
                         f"{out}: cross-entropy takes shape {expected} with classes in [0, {out[1]})")
    return y


def load_torch_weights(torch_model, path: Path) -> None:
    """Load a state dict file into the torch model (every tensor must fit: strict)."""
    import torch

    import torch_reference.pth_format  # noqa: F401  (registers the .pth reader: torch.load(weights_only=True))
    from ms_transfer.core.checkpoint_io import CheckpointError, read_weights

    try:
        state = read_weights(path).state
    except CheckpointError as exc:
        raise UsageError(f"--torch-weights: {exc}") from None
    try:
        torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"--torch-weights {path} does not fit the torch model: {' '.join(str(exc).split())[:600]}. "
                         "Save model.state_dict() of the same architecture") from None


def load_name_map(path: Optional[Path]) -> Optional[Dict[str, str]]:
    """``--name-map FILE.yaml``: a mapping of torch names to MindSpore names."""
    if path is None:
        return None
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--name-map {path}: cannot be read ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in data.items()):
        raise UsageError(f"--name-map {path}: write one `torch_name: mindspore_name` pair per line, e.g. "
                         "`head.weight: classifier.weight`")
    return data


def name_map_hint(torch_model, ms_cell, name_map) -> str:
    """How to fix unmatched names on the command line: a ``--name-map`` file to start from, each unmatched torch
    tensor paired with an unmatched MindSpore parameter of the same shape (a guess, in order)."""
    from ..engine.torch_side import numpy_state
    from ..engine.weight_map import match_names

    shapes = {k: tuple(v.shape) for k, v in numpy_state(torch_model).items()}
    ms_shapes = {p.name: tuple(p.shape) for p in ms_cell.get_parameters()}
    match = match_names(shapes, list(ms_shapes), name_map)
    free = list(match.unmatched_ms)
    lines = []
    for t in match.unmatched_torch:
        m = next((m for m in free if ms_shapes[m] == shapes[t]), None)
        if m is not None:
            free.remove(m)
        lines.append(f"  {t}: {m or '???'}")
    if not lines:
        return ""
    return ("\nWrite the pairs in a YAML file, one `torch_name: mindspore_name` per line, and pass --name-map FILE.yaml"
            " (names not in it keep the default rules). To start from (same-shape guesses, check each):\n"
            + "\n".join(lines))


# --- the run ------------------------------------------------------------------------------------------------------


def refuse_mixed(args, parser_defaults: Dict[str, Any], arch_only: Sequence[str]) -> None:
    """The built-in-model flags do not apply to an own pair, and the own-pair flags need ``--torch-model``."""
    if args.torch_model:
        wrong = [f"--{d.replace('_', '-')}" for d in arch_only if getattr(args, d) != parser_defaults[d]]
        if wrong:
            raise UsageError(f"{', '.join(wrong)} belong(s) to the built-in models (--arch); the input of an own "
                             "model pair is --input-shape / --inputs")
        if not args.ms_model and not args.check_reference:
            raise UsageError("--torch-model needs its port: --ms-model PKG.MOD:FACTORY")
        if args.check_reference:
            raise UsageError("--check-reference runs without torch: drop --torch-model (the bundle holds the "
                             "reference), keep --ms-model")
        return
    given = [f"--{d.replace('_', '-')}" for d in OWN_FLAGS if getattr(args, d) not in (None, [], False)]
    if given:
        raise UsageError(f"{', '.join(given)} need(s) --torch-model PKG.MOD:FACTORY and --ms-model PKG.MOD:FACTORY")
    if args.ms_model and not args.check_reference:
        raise UsageError("--ms-model needs --torch-model (to compare) or --check-reference DIR (to check a bundle)")


def run(args) -> int:
    """``python -m parity --torch-model ... --ms-model ...``: the exit code (see the module docstring)."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
    except ImportError:   # a framework missing from the install: python -m parity's entry point names the fix
        raise
    except Exception as exc:  # CI reads the exit code: an unforeseen failure is one line and 2, not a traceback
        print(f"error: the checks could not run: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr,
              flush=True)
    return EXIT_USAGE


def _run(args) -> int:
    import torch
    from mindspore import nn

    from ms_transfer.core.checkpoint_io import CheckpointError
    from ms_transfer.mindspore_backend.context import set_context

    from ..engine.comparison import CompareOptions, port_weights
    from ..engine.torch_side import numpy_state
    from ..engine.weight_map import NameMapError

    modes = ["graph", "pynative"] if args.mode == "both" else [args.mode]
    for flag, path, exts in (("--write-checkpoint", args.write_checkpoint, (".ckpt", ".safetensors")),
                             ("--export-mindir", args.export_mindir, (".mindir",))):
        if path is not None and path.suffix.lower() not in exts:
            raise UsageError(f"{flag} {path}: the file must end in {' or '.join(exts)}")
    if args.save_reference and (args.write_checkpoint or args.export_mindir):
        raise UsageError("--save-reference writes a bundle instead of comparing: run --write-checkpoint / "
                         "--export-mindir in a separate command")
    set_context(modes[0], args.device)
    torch.manual_seed(args.seed)
    torch_model = build(args.torch_model, "--torch-model", torch.nn.Module)
    if args.torch_weights:
        load_torch_weights(torch_model, args.torch_weights)
    ms_cell = build(args.ms_model, "--ms-model", nn.Cell)
    xs, how = make_inputs(args, torch_model)
    targets = make_targets(args, probe_torch(torch_model, xs))
    name_map = load_name_map(args.name_map)
    config = {"torch_model": args.torch_model, "ms_model": args.ms_model, "inputs": how, "device": args.device,
              "seed": args.seed, "torch_weights": str(args.torch_weights) if args.torch_weights else None,
              "name_map": str(args.name_map) if args.name_map else None}
    options = CompareOptions(name_map=name_map, checks=tuple(args.checks), seed=args.seed, config=config, log=_log,
                             sensitivity=args.sensitivity, localize=True if args.localize else "on_failure")
    try:
        # the names first (compare_models matches them again): a mismatch is bad input, before any header
        ported = port_weights(numpy_state(torch_model), {p.name: p.shape for p in ms_cell.get_parameters()},
                              name_map)[0]
    except NameMapError as exc:
        raise UsageError(f"{exc}{name_map_hint(torch_model, ms_cell, name_map)}") from None
    if args.save_reference:
        return _save_reference(args, torch_model, ms_cell, xs, targets, options)
    try:
        return _compare(args, modes, torch_model, ms_cell, xs, targets, options, how, ported)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None


def _compare(args, modes, torch_model, ms_cell, xs, targets, options, how, ported) -> int:
    """Every mode's checks (with the staged checkpoint as the port's weights), then the MindIR; files are kept only
    when everything passed."""
    from ms_transfer.mindspore_backend.context import set_context

    from ..engine.comparison import compare_in_modes
    from ..engine.port import MINDIR_LABEL, check_mindir, checkpoint_summary, stage_checkpoint, stage_mindir
    from ..engine.tolerance import failed

    staged = stage_checkpoint(torch_model, ms_cell, args.write_checkpoint, options.name_map) \
        if args.write_checkpoint else None
    staged_ir = None
    try:
        set_context(modes[0], args.device)
        # every mode at once: the torch side is computed once for all of them
        reports = compare_in_modes(torch_model, ms_cell, xs, targets, modes, options,
                                   ms_state=staged.state if staged else None)
        for mode, report in zip(modes, reports):
            print(f"\n== {args.torch_model} vs {args.ms_model} | {mode.upper()} | {args.device} | inputs "
                  f"{', '.join(how)} | seed {args.seed}"
                  + (f" | weights from {staged.staging.name} (read back)" if staged else ""), flush=True)
            print_report(report)
        passed = all(r.passed for r in reports)
        if args.export_mindir and passed:
            try:
                staged_ir = stage_mindir(ms_cell, staged.state if staged else ported, xs, args.export_mindir)
                row = check_mindir(staged_ir.staging, torch_model, ms_cell, xs, targets, options)
            except Exception as exc:  # a port that cannot be exported fails this row (the file is not kept)
                row = failed(MINDIR_LABEL, f"export failed: {type(exc).__name__}: {_first_line(exc)}")
            reports[-1].results.append(row)
            print(f"\n== {args.export_mindir}: the port exported as MindIR, loaded back (nn.GraphCell) | "
                  f"{modes[-1].upper()}", flush=True)
            _print_rows([row])
            passed = row.passed
        elif args.export_mindir:
            print(f"{args.export_mindir}: not exported (the port fails its checks)")
        for done, label in ((staged, "checkpoint"), (staged_ir, "MindIR")):
            if done is not None and passed:
                done.commit()
                print(f"wrote {done.path} ({label}, proven above)")
            elif done is not None:
                print(f"{done.path}: not written (the port fails its checks; an existing file is left as it was)")
        if staged:
            print(staged.load_report())
            for r in reports:
                r.names["checkpoint"] = checkpoint_summary(staged)
    finally:
        for done in (staged, staged_ir):
            if done is not None:
                done.discard()
    print("PASSED" if passed else "FAILED", flush=True)
    write_json(args.json, [r.as_dict() for r in reports])
    return EXIT_PASS if passed else EXIT_FAIL


def _print_rows(rows) -> None:
    from ..engine.report import format_table
    print(format_table(rows), flush=True)


def print_report(report) -> None:
    """A comparison's table, then what explains it (both ``python -m parity`` paths); the explanations cannot change the verdict (already in ``report``)."""
    from ..engine.localization import format_localization
    from ..engine.sensitivity import format_sensitivity

    _print_rows(report.results)
    try:
        if report.sensitivity:
            print(format_sensitivity(report.sensitivity))
        if report.localization:
            print(format_localization(report.localization))
    except Exception as exc:  # a diagnosis that cannot be shown must not hide the verdict
        print(f"(could not show the diagnosis: {type(exc).__name__}: {_first_line(exc)})")
    if report.localization_error:
        print(f"(localisation stopped: {report.localization_error}; the verdict above stands)")
    print(f"{'PASSED' if report.passed else 'FAILED'} in {report.seconds.get('total', 0.0):.1f} s", flush=True)


def _save_reference(args, torch_model, ms_cell, xs, targets, options) -> int:
    from ..engine.bundle import BundleError, save_reference

    try:
        out = save_reference(args.save_reference, torch_model, ms_cell, xs, targets, options)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB): check it with python -m parity --check-reference {out} "
          f"--ms-model {args.ms_model}")
    return EXIT_PASS
