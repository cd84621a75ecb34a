"""``python -m parity``: compare the MindSpore ResNet with torchvision; exit 1 on any failure."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ms_transfer.models import list_models

from . import BUGS, CHECKS, ParityConfig, format_table, run_parity


def build_parser() -> argparse.ArgumentParser:
    d = ParityConfig()
    p = argparse.ArgumentParser(prog="python -m parity", description=__doc__)
    p.add_argument("--arch", default=d.arch, choices=list_models())
    p.add_argument("--mode", default="both", choices=["graph", "pynative", "both"],
                   help="MindSpore execution mode (default: both, one after the other)")
    p.add_argument("--device", default=d.device, choices=["CPU", "GPU"])
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-classes", type=int, default=d.num_classes)
    p.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS, metavar="CHECK",
                   help=f"subset of checks to run (default: all of {', '.join(CHECKS)})")
    p.add_argument("--inject", choices=sorted(BUGS), default=None,
                   help="inject a known porting bug into the MindSpore side (the run must then fail)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 2:
        print("error: --batch must be >= 2 (train-mode BatchNorm needs more than one sample)", file=sys.stderr)
        return 2
    if args.image_size < 32:
        print("error: --image-size must be >= 32 (ResNet downsamples by 32)", file=sys.stderr)
        return 2
    modes = ["graph", "pynative"] if args.mode == "both" else [args.mode]
    reports = []
    for mode in modes:
        cfg = ParityConfig(arch=args.arch, mode=mode, device=args.device, batch=args.batch,
                           image_size=args.image_size, seed=args.seed, num_classes=args.num_classes,
                           checks=tuple(args.checks), inject=args.inject)
        bug = f", injected bug: {args.inject}" if args.inject else ""
        print(f"\n== {cfg.arch} | {mode.upper()} | {cfg.device} | batch {cfg.batch} | {cfg.image_size} px | "
              f"seed {cfg.seed}{bug}", flush=True)
        report = run_parity(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
        print(format_table(report.results))
        print(f"{'PASSED' if report.passed else 'FAILED'} in {report.seconds['total']:.1f} s", flush=True)
        reports.append(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=2))
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
