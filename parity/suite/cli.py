"""``python -m parity``: compare the MindSpore ResNet / VGG (or a seed network) with torchvision's; exit 1 on any
failure.

Default: forward/gradient/optimizer checks through the any-model API (``parity.compare_models``), with the
first diverging layer reported when a forward check fails. ``--train-steps N``: N steps of both frameworks'
trainers in the finetune, fixed_feature and partial (10x head LR) regimes, or last_layer_adam (cats vs dogs') for a
VGG (see ``parity/suite/training.py``).
``--save-reference DIR`` writes a portable reference bundle; ``--check-reference DIR`` checks the MindSpore port
against one without torch (see ``parity/engine/bundle.py``). ``--torch-model M:F --ms-model M:F``: your own model
pair instead of a built-in one (:mod:`parity.suite.own_model`; ``--check-reference DIR --ms-model M:F`` checks its
bundle). Exit codes: 0 pass, 1 a check failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ms_transfer.core.archs import input_spec
from ms_transfer.core.config import ConfigError
from ms_transfer.core.flags import PADDINGS, add_batch_size, add_device, add_json, add_mode, plain, write_json
from ms_transfer.core.weights import resolve_padding
from ms_transfer.core.naming import ALL_ARCHS

from ..engine.comparison import CHECKS
from ..engine.report import format_table
from . import own_model
from .bugs import BUGS, LAYER_BUGS
from .run import ParityConfig, run_parity_in_modes
from .training import REGIMES, TRAIN_BATCH, TRAIN_BUGS


def _bug(name: str) -> str:
    from .data_parallel import DP_BUGS
    bug, _, layer = name.partition("@")
    if name in DP_BUGS or name in TRAIN_BUGS or (bug in BUGS and (not layer or bug in LAYER_BUGS)):
        return name
    raise argparse.ArgumentTypeError(f"unknown bug {name!r}; porting bugs: {', '.join(sorted(BUGS))} (BUG@LAYER for "
                                     f"{', '.join(LAYER_BUGS)}); training bugs: {', '.join(sorted(TRAIN_BUGS))}; "
                                     "data-parallel bugs (with --world-size): grad_sum, other_shard, bn_synced")


def build_parser() -> argparse.ArgumentParser:
    d = ParityConfig()
    p = argparse.ArgumentParser(prog="python -m parity", description=plain(__doc__))
    p.add_argument("--arch", default=None, choices=list(ALL_ARCHS),
                   help=f"default: {d.arch}; the seeds' networks (fashion_cnn, digit_cnn, digit_adder[4]) run at "
                        "their 28 px; with --check-reference: refuse a bundle made for another arch")
    p.add_argument("--padding", default="auto", choices=PADDINGS,
                   help="network padding on both sides: torch (torchvision's), same (the MindSpore tutorial's "
                        "network: asymmetric 'same' padding at stride 2; torch reproduces it explicitly) or auto "
                        "(default; as in training, the pretrained weights entry's convention, else torch: the "
                        "checks run on seeded weights, not a weights entry, so auto is torch here)")
    add_mode(p, "both", why="parity checks the two modes, one after the other", extra=("both",))
    add_device(p)
    add_batch_size(p, f"batch size of the built-in model's inputs (default: {d.batch}; {TRAIN_BATCH} with "
                      "--train-steps, see parity/suite/training.py); an own model pair: the first dimension of "
                      "--input-shape")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"default: {d.image_size} (a network with a fixed input size: that size)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the weights, inputs and targets both sides share (default: {d.seed})")
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"default: {d.num_classes}; an own model pair: cross-entropy on random targets in "
                        "[0, N) (default: a seeded projection of every output)")
    p.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS, metavar="CHECK",
                   help=f"subset of checks to run (default: all of {', '.join(CHECKS)})")
    p.add_argument("--train-steps", type=int, default=0, metavar="N",
                   help="training-step parity: N optimizer steps per regime instead of the checks above")
    p.add_argument("--regimes", nargs="+", default=None, choices=list(REGIMES), metavar="REGIME",
                   help=f"with --train-steps: any of {', '.join(REGIMES)} (default: finetune, fixed_feature and "
                        "partial for a ResNet; finetune, fixed_feature and last_layer_adam (cats vs dogs'), otherwise)")
    p.add_argument("--world-size", type=int, default=1, metavar="W",
                   help="with --train-steps: W-rank data-parallel runs under msrun and torchrun (per-rank --batch-size) "
                        "against one process on the global batch, and every rank's parameters after every step "
                        "(see parity/suite/data_parallel.py)")
    p.add_argument("--launchers", nargs="+", default=["msrun", "torchrun"], choices=["msrun", "torchrun"],
                   help="with --world-size: which launchers to run (default: both)")
    p.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="a VGG's classifier dropout on both sides (torchvision's argument; default 0.5, at which "
                        "the dropout_keep_prob bug is a no-op)")
    p.add_argument("--inject", type=_bug, default=None, metavar="BUG[@LAYER]",
                   help="inject a known bug into the MindSpore side (the run must then fail); porting bugs: "
                        f"{', '.join(sorted(BUGS))} ({', '.join(LAYER_BUGS)} also as BUG@LAYER, e.g. "
                        f"bn_eps@layer3.1); training bugs (need --train-steps): {', '.join(sorted(TRAIN_BUGS))}")
    p.add_argument("--localize", action="store_true",
                   help="always report the first diverging layer (accumulated and single-step); by default it is "
                        "reported when a forward check fails. It runs in the run's mode: with --mode graph the port "
                        "is compiled as one graph with every layer's output tapped")
    p.add_argument("--sensitivity", action="store_true",
                   help="also print the smallest uniform / single-tensor relative error each check detects on this "
                        "run (the port's outputs scaled by 1+eps after the fact; see parity/engine/sensitivity.py)")
    p.add_argument("--save-reference", type=Path, default=None, metavar="DIR",
                   help="write a portable reference bundle (inputs, weights, float64 references, noise floors, "
                        "manifest) of these checks instead of comparing; needs torch")
    p.add_argument("--check-reference", type=Path, default=None, metavar="DIR",
                   help="check the MindSpore port against a bundle written by --save-reference: MindSpore only, "
                        "no torch (e.g. on a GPU / Ascend machine or another MindSpore version)")
    add_json(p, "the results")
    own_model.add_arguments(p)
    return p


#: flags of the built-in models only (``dest`` names), refused with an own model pair
ARCH_ONLY = ("arch", "padding", "batch_size", "image_size", "train_steps", "regimes", "world_size", "launchers",
             "dropout", "inject")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        own_model.refuse_mixed(args, {d: parser.get_default(d) for d in ARCH_ONLY}, ARCH_ONLY)
    except own_model.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return own_model.EXIT_USAGE
    if args.torch_model:
        return own_model.run(args)
    args.padding = resolve_padding(args.padding, None)[0]   # no weights entry: auto is torch
    if args.num_classes is None:
        args.num_classes = ParityConfig().num_classes
    if args.batch_size is None:
        args.batch_size = TRAIN_BATCH if args.train_steps else ParityConfig().batch
    if args.train_steps < 0:
        print("error: --train-steps must be >= 0", file=sys.stderr)
        return 2
    if args.sensitivity and args.train_steps:
        print("error: --sensitivity measures the forward/gradient/optimizer checks: drop --train-steps",
              file=sys.stderr)
        return 2
    if args.world_size > 1:
        return _data_parallel(args)
    if args.inject and (args.inject in TRAIN_BUGS) != (args.train_steps > 0):
        kind = ("a training bug: add --train-steps N" if args.inject in TRAIN_BUGS
                else "a porting bug: drop --train-steps")
        print(f"error: --inject {args.inject} is {kind}", file=sys.stderr)
        return 2
    if args.batch_size < 2:
        print("error: --batch-size must be >= 2 (train-mode BatchNorm needs more than one sample)", file=sys.stderr)
        return 2
    if args.dropout is not None and not (args.arch or "").startswith("vgg"):
        print("error: --dropout sets a VGG's classifier dropout (torchvision's argument); use it with --arch vgg*",
              file=sys.stderr)
        return 2
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        print("error: --dropout must be in [0, 1)", file=sys.stderr)
        return 2
    fixed = input_spec(args.arch or "")[1]
    if args.image_size is None:
        args.image_size = fixed or ParityConfig().image_size
    if fixed is not None and (args.image_size != fixed or args.train_steps or args.padding != "torch"):
        print(f"error: {args.arch} runs at --image-size {fixed} with torch padding and the checks (--train-steps "
              "covers the ResNets' freezing regimes)", file=sys.stderr)
        return 2
    if fixed is None and args.image_size < 32:
        print(f"error: --image-size must be >= 32 ({args.arch or 'ResNet'} downsamples by 32)", file=sys.stderr)
        return 2
    modes = ["graph", "pynative"] if args.mode == "both" else [args.mode]
    if args.check_reference:
        return _check_reference(args, modes)
    args.arch = args.arch or ParityConfig().arch
    if args.save_reference:
        return _save_reference(args)
    cfg = ParityConfig(arch=args.arch, padding=args.padding, mode=modes[0], device=args.device, batch=args.batch_size,
                       image_size=args.image_size, seed=args.seed, num_classes=args.num_classes,
                       checks=tuple(args.checks), inject=args.inject, train_steps=args.train_steps,
                       regimes=tuple(args.regimes) if args.regimes else None, dropout=args.dropout,
                       sensitivity=args.sensitivity,
                       localize=True if args.localize else "on_failure", localize_mode=modes[0])
    try:   # every mode at once: the torch side is computed once for all of them (run_parity_in_modes)
        reports = run_parity_in_modes(cfg, modes, log=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as exc:   # e.g. BUG@LAYER at a layer that is not a block
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bug = f", injected bug: {args.inject}" if args.inject else ""
    if args.train_steps:
        bug = f" | {args.train_steps} training steps" + bug
    for report in reports:
        mode = report.config.mode
        print(f"\n== {cfg.arch}{' (same padding)' if cfg.padding == 'same' else ''} | {mode.upper()} | {cfg.device} | "
              f"batch {cfg.batch} | {cfg.image_size} px | seed {cfg.seed}{bug}", flush=True)
        own_model.print_report(report)
    write_json(args.json, [r.as_dict() for r in reports])
    return 0 if all(r.passed for r in reports) else 1


def _data_parallel(args) -> int:
    """``--world-size W``: the data-parallel comparison (parity/suite/data_parallel.py)."""
    from .data_parallel import DP_BUGS, run_data_parallel
    from .training import regimes_for

    if not args.train_steps:
        print("error: --world-size compares training steps: add --train-steps N", file=sys.stderr)
        return 2
    if args.inject and args.inject not in DP_BUGS:
        print(f"error: with --world-size, --inject is one of {', '.join(DP_BUGS)}", file=sys.stderr)
        return 2
    if args.mode == "both":
        args.mode = "graph"
    args.arch = args.arch or "resnet18"
    args.image_size = args.image_size or 64   # 32 px: stage 4 is 1x1, train-mode BN over 4 values, floor 31%
    regimes = args.regimes or [r for r in regimes_for(args.arch)]
    cases = [("finetune", args.inject)] if args.inject else [(r, None) for r in regimes]
    cfg = ParityConfig(arch=args.arch, padding=args.padding, mode=args.mode, device=args.device, batch=args.batch_size,
                       image_size=args.image_size, seed=args.seed, num_classes=args.num_classes,
                       train_steps=args.train_steps)
    print(f"\n== {cfg.arch} | {args.world_size} ranks x batch {cfg.batch} vs one process x batch "
          f"{args.world_size * cfg.batch} | {', '.join(args.launchers)} | MindSpore {cfg.mode.upper()} | "
          f"{cfg.image_size} px | {args.train_steps} steps"
          + (f" | injected bug: {args.inject}" if args.inject else ""), flush=True)
    results = run_data_parallel(cfg, cases, args.launchers, args.world_size,
                                log=lambda s: print(s, file=sys.stderr, flush=True))
    rows = [row for key in results for row in results[key]]
    print(format_table(rows))
    passed = bool(rows) and all(r.passed for r in rows)
    print("PASSED" if passed else "FAILED", flush=True)
    write_json(args.json, {"passed": passed, "results": [r.as_dict() for r in rows]})
    return 0 if passed else 1


def _save_reference(args) -> int:
    from ..engine.bundle import BundleError
    from .run import save_suite_reference

    cfg = ParityConfig(arch=args.arch, padding=args.padding, batch=args.batch_size, image_size=args.image_size,
                       seed=args.seed, num_classes=args.num_classes, checks=tuple(args.checks))
    try:
        out = save_suite_reference(cfg, args.save_reference, log=lambda s: print(s, file=sys.stderr, flush=True))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB): check it with python -m parity --check-reference {out}")
    return 0


def _check_reference(args, modes) -> int:
    """MindSpore only: nothing here imports torch."""
    from ..engine.bundle import BundleError, check_reference

    try:
        ms_cell = own_model.build_ms_cell(args.ms_model)   # --ms-model: the user's port, else the bundle's spec
    except own_model.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = []
    for mode in modes:
        print(f"\n== reference bundle {args.check_reference} | {mode.upper()} | {args.device}", flush=True)
        try:
            report = check_reference(args.check_reference, ms_cell, mode=mode, device=args.device, arch=args.arch,
                                     log=lambda s: print(s, file=sys.stderr, flush=True))
        except (BundleError, ConfigError) as exc:   # ConfigError: a device this MindSpore cannot run on
            print(f"error: {exc}", file=sys.stderr)
            return 2
        made = report.config["made_with"]
        model = report.config["model"] or f"an own model, checked against {args.ms_model}"
        print(f"bundle: {model}, made with torch {made.get('torch')} / MindSpore {made.get('mindspore')} on "
              f"{made.get('machine')}")
        print(format_table(report.results))
        print("PASSED" if report.passed else "FAILED", flush=True)
        reports.append(report)
    write_json(args.json, [r.as_dict() for r in reports])
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
