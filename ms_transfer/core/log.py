"""Console reporting of the project: one handler on the ``ms_transfer`` logger, ``--quiet`` / ``--verbose``.

Core modules report through ``logging.getLogger(__name__)`` (all under the ``ms_transfer`` logger); the CLIs call
:func:`setup_logging` with the verbosity of their ``--quiet`` / ``--verbose`` flags (:func:`add_verbosity_flags`).
The console handler prints a record's bare message, as the ``print`` calls it replaced did: info and debug on
stdout, warnings and errors on stderr. It looks the streams up at every record, so ``contextlib.redirect_stdout``
(quiet ranks of a data-parallel run) and pytest's ``capsys`` see what it writes.

A library caller of :func:`ms_transfer.core.loop.fit` that configured nothing gets the same console reports as
the CLI at the default level (:func:`ensure_logging`); a handler of its own on the ``ms_transfer`` logger takes
over instead.
"""
from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["ROOT_LOGGER", "ConsoleHandler", "setup_logging", "ensure_logging", "add_verbosity_flags",
           "verbosity", "parse_args", "progress_to_stderr"]

#: the logger every core module logs under (``ms_transfer.core.loop``, ``ms_transfer.core.runlock``, ...)
ROOT_LOGGER = "ms_transfer"
#: ``--quiet`` / default / ``--verbose``
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class ConsoleHandler(logging.Handler):
    """The bare message, on stdout below WARNING and on stderr from WARNING up (streams looked up per record)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the run; logging reports it itself
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Install the console handler on the ``ms_transfer`` logger (once; a second call only changes the level):
    ``verbosity`` -1 = warnings only (``--quiet``), 0 = info (the default), 1 = debug (``--verbose``)."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(LEVELS[max(-1, min(1, verbosity))])
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    return logger


def ensure_logging() -> None:
    """The default console reports for a caller that configured nothing: :func:`setup_logging` at the default
    level unless the ``ms_transfer`` logger already has a handler (a CLI's, or the caller's own)."""
    if not logging.getLogger(ROOT_LOGGER).handlers:
        setup_logging(0)


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose`` (exclusive), the same on every CLI; read them back with :func:`verbosity`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", default=False,
                       help="report warnings and errors only (no progress or info lines)")
    group.add_argument("--verbose", action="store_true", default=False, help="also report debug details")


def verbosity(args) -> int:
    """-1, 0 or 1 from the parsed ``--quiet`` / ``--verbose`` flags (a namespace or a dict)."""
    values = args if isinstance(args, dict) else vars(args)
    return -1 if values.get("quiet") else 1 if values.get("verbose") else 0


def progress_to_stderr(text: str) -> None:
    """A CLI's progress line on stderr (stdout holds its result), unless ``--quiet``."""
    if logging.getLogger(ROOT_LOGGER).isEnabledFor(logging.INFO):
        print(text, file=sys.stderr, flush=True)


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """A CLI's ``parser.parse_args(argv)`` with ``--quiet`` / ``--verbose`` added and the console logging set up
    by them (:func:`setup_logging`)."""
    add_verbosity_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(verbosity(args))
    return args
