"""``ms-transfer COMMAND [FLAGS...]``: the project's commands behind one console script.

Each subcommand is the ``main(argv)`` of ``python -m ms_transfer.COMMAND`` (the same flags, help and exit codes:
0 done, 1 a run or check failed, 2 bad input); ``ms-parity`` is ``python -m parity``. Nothing is imported until a
subcommand is chosen, so ``ms-transfer --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand -> (the module whose ``main(argv)`` runs it, one line for ``ms-transfer --help``)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("ms_transfer.train", "train or fine-tune in MindSpore from a config and flags"),
    "evaluate": ("ms_transfer.evaluate", "accuracy, per-class accuracy and confusion matrix of a run checkpoint or a weight file"),
    "predict": ("ms_transfer.predict", "class and probability per image"),
    "convert": ("ms_transfer.convert", "convert weights between .pth, .ckpt and .safetensors and their namings"),
    "study": ("ms_transfer.study", "transfer vs scratch over data fractions and seeds, both frameworks"),
    "bench": ("ms_transfer.bench", "throughput of MindSpore (GRAPH, PYNATIVE) vs torch eager"),
}


def build_parser() -> argparse.ArgumentParser:
    """The dispatcher's own command line (no side effects: it lists the subcommands)."""
    listing = "\n".join(f"  {name:<10}{summary} (python -m {module})" for name, (module, summary) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="ms-transfer", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Transfer learning in MindSpore that is numerically the same model as torchvision.",
        epilog=f"commands:\n{listing}\n\nms-transfer COMMAND --help shows a command's flags; ms-parity is "
               "python -m parity (the parity checks). Exit codes: 0 done, 1 a run or check failed, 2 bad input.")
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                   help=f"one of {', '.join(COMMANDS)}")
    p.add_argument("flags", nargs="*", default=[], metavar="FLAGS", help="the command's own flags (ms-transfer COMMAND --help)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ms-transfer COMMAND FLAGS...``; ``argv=None`` (the console script) reads ``sys.argv`` and is the
    whole process, as ``python -m ms_transfer.train`` is (which lets training reuse MindSpore's compile cache)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        build_parser().parse_args(args[:1])   # --help: the listing (exit 0); else the usage error (exit 2)
        return 2                              # not reached: argparse exits for anything but a command
    command, flags = args[0], args[1:]
    if command == "train" and argv is None:
        from .mindspore_backend import compile_cache
        compile_cache.allow_for_this_process()   # one process, one run (see python -m ms_transfer.train)
    return importlib.import_module(COMMANDS[command][0]).main(flags)
