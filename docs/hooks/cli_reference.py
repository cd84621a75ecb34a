"""MkDocs hook: the CLI reference (docs/cli.md) rendered from each command's own argparse parser at build time.

``mkdocs.yml`` loads this file (``hooks:``); :func:`on_page_markdown` replaces the ``<!-- cli-reference -->``
marker of ``cli.md`` with every command's ``--help`` text, so the reference cannot drift from the code.
:data:`COMMANDS` is also the one list ``tests/test_docs.py`` checks the flags named in the README and the docs
against. Each builder only builds a parser: nothing is probed, downloaded or trained.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- cli-reference -->"


def _module_parser(module: str) -> Callable[[], argparse.ArgumentParser]:
    """The ``build_parser()`` of ``module``."""
    return lambda: importlib.import_module(module).build_parser()


def _trainer_parser(module: str) -> Callable[[], argparse.ArgumentParser]:
    """Both trainers share the schema's parser; ``module`` gives the program name and description."""
    def build() -> argparse.ArgumentParser:
        from ms_transfer.core.config import build_parser
        return build_parser(f"python -m {module}", importlib.import_module(module).__doc__)
    return build


#: every command of the project (as a user types it) -> the function that builds its parser
COMMANDS: Dict[str, Callable[[], argparse.ArgumentParser]] = {
    "ms-transfer": _module_parser("ms_transfer.cli"),
    "python -m ms_transfer.train": _trainer_parser("ms_transfer.train"),
    "python -m torch_reference.train": _trainer_parser("torch_reference.train"),
    "python -m ms_transfer.evaluate": _module_parser("ms_transfer.evaluate"),
    "python -m torch_reference.evaluate": _module_parser("torch_reference.evaluate"),
    "python -m ms_transfer.predict": _module_parser("ms_transfer.predict"),
    "python -m ms_transfer.convert": _module_parser("ms_transfer.core.convert"),
    "python -m ms_transfer.study": _module_parser("ms_transfer.study"),
    "python -m ms_transfer.bench": _module_parser("ms_transfer.bench"),
    "python -m ms_transfer.onednn": _module_parser("ms_transfer.mindspore_backend.onednn"),
    "python -m parity": _module_parser("parity.suite.cli"),
    "python -m parity.pipeline": _module_parser("parity.suite.pipeline"),
}


def anchor(command: str) -> str:
    """The heading id of a command in cli.md: ``python -m parity.pipeline`` -> ``parity-pipeline``."""
    return command.split()[-1].replace(".", "-").replace("_", "-")


def documented_flags(parser: argparse.ArgumentParser) -> List[str]:
    """The option strings ``--help`` shows (hidden aliases, ``help=SUPPRESS``, are left out)."""
    return [flag for action in parser._actions if action.help != argparse.SUPPRESS
            for flag in action.option_strings]


def parsers() -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` for every command, the checkout this file belongs to first on the path."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for command, build in COMMANDS.items():
        yield command, build()


def render() -> str:
    """Markdown: per command, a heading and its ``--help`` text (wrapped at 100 columns, whatever the terminal)."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"   # argparse wraps at the terminal width: fix it so builds are reproducible
    try:
        return "\n".join(f"## `{command}` {{ #{anchor(command)} }}\n\n```text\n{parser.format_help().rstrip()}\n```\n"
                         for command, parser in parsers())
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs event: fill the marker of cli.md."""
    if page.file.src_uri == "cli.md":
        if MARKER not in markdown:
            raise ValueError(f"docs/cli.md lost its {MARKER} marker: the CLI reference has nowhere to go")
        return markdown.replace(MARKER, render())
    return markdown
