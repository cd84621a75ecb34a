"""The docs tell the truth about the commands: every ``--flag`` named in the README and the docs pages exists in that
command's parser (shown by ``--help``: hidden aliases do not count), every ``make`` target named exists, every
command of the README's fenced blocks runs with ``--help`` (``make -n``), and the README's links resolve.

No model runs: the parsers are built in this process (the docs' own CLI reference hook lists them), and only the
README's commands start subprocesses (about 10 s in all).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# the pages the site shows; CHANGELOG.md is left out of the flag check on purpose: it names old spellings
DOC_FILES = [README, ROOT / "BENCHMARKS.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if not p.is_symlink())]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
# `python -m MODULE`, `-m MODULE` (torchrun) or the installed console script
COMMAND = re.compile(r"(?:\bpython\s+-m\s+|(?<![\w-])-m\s+|\bms-transfer-convert\b)([\w.]*)")
SCRIPT = re.compile(r"\bpython\s+(examples/\S+\.py)")
MAKE = re.compile(r"(?<![\w-])make\s+(?:-\S+\s+)*((?:[A-Z_]+=\S*\s+)*)([a-z][a-z0-9-]*)")
# flags of other programs that the docs show: msrun's and torchrun's launch options, pip's, pytest's, mkdocs',
# tensorboard's
EXTERNAL_FLAGS = {
    "--worker_num", "--local_worker_num", "--master_port", "--master_addr", "--node_rank", "--log_dir", "--join",
    "--standalone", "--nproc_per_node", "--nnodes",
    "--no-deps", "--quiet", "--disable-pip-version-check",
    "--durations", "--strict", "--logdir",
}


def _load_hook():
    """docs/hooks/cli_reference.py: the one list of commands and their parser builders (mkdocs.yml's hook)."""
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flags_by_module() -> Dict[str, Set[str]]:
    """``module -> the flags its --help shows`` for every command (``python -m parity`` -> ``parity``)."""
    hook = _load_hook()
    return {command.split()[-1]: set(hook.documented_flags(parser)) for command, parser in hook.parsers()}


def _code(text: str) -> Iterator[Tuple[str, str]]:
    """``(kind, code)``: every logical line of every fenced block (backslash continuations joined) and every inline
    code span of the prose."""
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            yield "fenced", line
    for span in SPAN.findall(FENCE.sub("", text)):
        yield "span", " ".join(span.split())


def _segments(code: str) -> Iterator[Tuple[str, str]]:
    """``(owner, text)``: the part of one line of code that belongs to each command on it (``owner`` a module, a
    script path, or ``""`` for text before any command), a trailing ``# comment`` cut off."""
    code = re.split(r"\s#\s", " " + code)[0]
    marks = sorted([(m.start(), m.end(), m.group(1) or "ms_transfer.convert") for m in COMMAND.finditer(code)]
                   + [(m.start(), m.end(), m.group(1)) for m in SCRIPT.finditer(code)])
    yield "", code[:marks[0][0]] if marks else code
    for i, (start, end, owner) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(code)
        yield owner, re.split(r"\s(?:&&|\|\||;|\|)\s", code[end:stop])[0]


def _named_flags() -> List[Tuple[str, str, str]]:
    """``(file, owner, flag)`` for every flag the README and the docs pages name."""
    found = []
    for path in DOC_FILES:
        for _, code in _code(path.read_text()):
            for owner, text in _segments(code):
                found += [(path.name, owner, flag.split("=")[0]) for flag in FLAG.findall(text)]
    return found


def test_every_flag_named_in_the_docs_is_in_its_commands_help(flags_by_module):
    every = set().union(*flags_by_module.values())
    wrong = []
    for name, owner, flag in _named_flags():
        if owner.startswith("examples/"):
            ok = flag in (ROOT / owner).read_text()              # an example script reads its own sys.argv
        elif owner:
            ok = owner in flags_by_module and flag in flags_by_module[owner]
        else:                                                     # prose: some command must show it
            ok = flag in every or flag in EXTERNAL_FLAGS
        if not ok:
            wrong.append(f"{name}: {flag} ({'python -m ' + owner if owner else 'no command on that line'})")
    assert not wrong, "flags named in the docs that no --help shows:\n" + "\n".join(sorted(set(wrong)))


def test_the_flag_check_can_fail(flags_by_module):
    """The check above is only as good as its parsing: a wrong flag on a command line, a hidden alias and an unknown
    module are each caught."""
    segments = dict(_segments("python -m parity --arch vgg16 --no-such-flag  # --in-a-comment"))
    assert FLAG.findall(segments["parity"]) == ["--arch", "--no-such-flag"]
    assert "--no-such-flag" not in flags_by_module["parity"]
    assert "--worker" not in flags_by_module["ms_transfer.bench"]       # help=SUPPRESS: hidden, not documented
    assert "--arch" in flags_by_module["ms_transfer.bench"]
    assert dict(_segments(".venv/bin/torchrun --standalone -m torch_reference.train --config x"))[
        "torch_reference.train"].split() == ["--config", "x"]


def _makefile_targets() -> Set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", text, re.M))


def test_every_make_target_named_in_the_docs_exists():
    targets = _makefile_targets()
    named = {(path.name, m.group(2)) for path in DOC_FILES for _, code in _code(path.read_text())
             for m in MAKE.finditer(code)}
    assert named, "no `make` command found in the docs: the pattern is broken"
    missing = sorted(f"{name}: make {t}" for name, t in named if t not in targets)
    assert not missing, "make targets named in the docs that the Makefile lacks:\n" + "\n".join(missing)


def test_make_help_lists_every_target():
    phony = set(re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split())
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = {name for line in out.splitlines() for name in line.split("  ")[1].strip().split(" / ")}
    assert phony <= listed, f"targets without a `## target: description` line: {sorted(phony - listed)}"


def _readme_commands() -> List[str]:
    """Every command of the README's fenced bash blocks, and of its "I want to…" table."""
    text = README.read_text()
    lines = [line for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
             for line in block.replace("\\\n", " ").splitlines()]  # backslash continuations joined
    lines += [m.group(1) for m in re.finditer(r"^\|[^|]*\| `([^`]+)` \|", text, re.M)]
    return [c for c in (re.split(r"\s#\s", " " + line)[0].strip() for line in lines) if c]


def test_every_readme_command_runs_with_help_or_make_n():
    commands = _readme_commands()
    assert any(c.startswith("make ") for c in commands) and any(c.startswith("python -m ") for c in commands)
    failed = []
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "make":
            run = ["make", "-n", *argv[1:]]
        elif argv[:2] == ["python", "-m"]:
            run = [sys.executable, *argv[1:], "--help"]
        elif argv[0] == "python" and argv[1].startswith("examples/"):
            # an example runs its comparison whatever its arguments: it must exist, its switches are checked above
            assert (ROOT / argv[1]).is_file(), command
            continue
        else:
            raise AssertionError(f"README command of an unknown kind: {command!r} (python -m ..., make ...)")
        result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            failed.append(f"{' '.join(run)} -> exit {result.returncode}: {result.stderr.strip()[-500:]}")
    assert not failed, "\n".join(failed)


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (not - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_readme_links_and_anchors_resolve():
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (README.parent / path) if path else README
        if not file.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor:
            fenced = FENCE.sub("", file.read_text())
            slugs = {_github_slug(h) for h in re.findall(r"^#+\s+(.*?)\s*$", fenced, re.M)}
            if anchor not in slugs:
                broken.append(f"{target}: {path or 'README.md'} has no heading with the anchor #{anchor}")
    assert not broken, "\n".join(broken)


def test_readme_is_short_and_tasks_are_named_for_what_they_are():
    assert len(README.read_text().splitlines()) <= 250
    numbered = [f"{p.name}: {m.group(0)}" for p in [*DOC_FILES, ROOT / "CHANGELOG.md"]
                for m in re.finditer(r"\bseed\s+0\d\d\b", p.read_text(), re.I)]
    assert not numbered, f"articles named by number: {numbered}"


@pytest.mark.parametrize("argv, usage", [(["ms_transfer.onednn"], "python -m ms_transfer.onednn"),
                                         (["ms_transfer"], "ms-transfer"),
                                         (["ms_transfer", "train"], "python -m ms_transfer.train")],
                         ids=["onednn", "ms-transfer", "ms-transfer train"])
def test_help_does_no_work(tmp_path, argv, usage):
    """``python -m ms_transfer.onednn --help`` prints its help and exits; it ran the CPU probe (10-30 s, a cache
    file under MS_TRANSFER_CACHE) before. The ``ms-transfer`` dispatcher's help and a subcommand's (the training
    help reads the default config to show its values) write nothing either."""
    result = subprocess.run([sys.executable, "-m", *argv, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MS_TRANSFER_CACHE": str(tmp_path)})
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {usage}"), result
    assert not any(tmp_path.rglob("*")), "--help probed (it wrote the probe's cache)"


def test_the_generated_cli_reference_names_no_article_numbers():
    """docs/cli.md is the parsers' help text: it follows the docs' naming rule too."""
    numbered = re.findall(r".{30}\bseed\s+0\d\d\b.{10}", _load_hook().render(), re.I | re.S)
    assert not numbered, numbered


def _fake_venv(tmp_path: Path) -> Path:
    """An up-to-date venv as far as make knows (its stamp newer than pyproject.toml): `make -n` plans no install."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch(mode=0o755)
    stamp, changed = venv / ".installed-ms2.7.2", (ROOT / "pyproject.toml").stat().st_mtime
    stamp.touch()
    os.utime(stamp, (changed + 10, changed + 10))
    return venv


def test_make_test_builds_the_docs_strictly_between_lint_and_the_tests(tmp_path):
    proc = subprocess.run(["make", "-n", "test", f"VENV={_fake_venv(tmp_path)}", "MS_VERSION=2.7.2"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first = {key: next(i for i, line in enumerate(lines) if key in line)
             for key in ("-m ruff check", "-m mkdocs build --strict", "-m pytest")}
    assert first["-m ruff check"] < first["-m mkdocs build --strict"] < first["-m pytest"], proc.stdout


def test_make_n_parity_versions_only_prints(tmp_path):
    """Its recipe called $(MAKE) in the line that ran the checks, so `make -n` ran them: with a version whose venv
    does not exist, that failed. Now the checks are printed, not run."""
    proc = subprocess.run(["make", "-n", "parity-versions", "MS_VERSIONS=0.0.1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ".venv-ms0.0.1/bin/python -m parity --check-reference refs/resnet18-64 --mode both" in proc.stdout
    assert not (ROOT / ".venv-ms0.0.1").exists()
