"""The Makefile's venv follows the MindSpore pin: its stamp names the version it installed, so a changed pin
(or ``MS_VERSION=...``) reinstalls instead of silently keeping the old MindSpore (checked with ``make -n``)."""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dry_run(venv: Path, *args: str) -> str:
    proc = subprocess.run(["make", "-n", "venv", f"VENV={venv}", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_venv_reinstalls_when_the_mindspore_pin_changes(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch(mode=0o755)
    (venv / ".installed-ms2.10.0").touch()                # a venv built under another pin
    plan = _dry_run(venv, "MS_VERSION=2.7.2")
    assert '"mindspore==2.7.2"' in plan and "-m venv" in plan  # reinstalls (the venv is made only if missing)
    stamp, changed = venv / ".installed-ms2.7.2", (ROOT / "pyproject.toml").stat().st_mtime
    stamp.touch()
    os.utime(stamp, (changed + 10, changed + 10))
    assert "mindspore==" not in _dry_run(venv, "MS_VERSION=2.7.2")        # up to date: nothing to do
    os.utime(stamp, (changed - 10, changed - 10))
    assert '"mindspore==2.7.2"' in _dry_run(venv, "MS_VERSION=2.7.2")     # pyproject changed since: reinstall


def test_the_test_target_lints_before_it_tests(tmp_path):
    """CI (`make test`) runs ruff over every Python folder first, so a `noqa`-free import block stays so."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch(mode=0o755)
    stamp, changed = venv / ".installed-ms2.7.2", (ROOT / "pyproject.toml").stat().st_mtime
    stamp.touch()
    os.utime(stamp, (changed + 10, changed + 10))                     # an up-to-date venv: no install steps
    proc = subprocess.run(["make", "-n", "test", f"VENV={venv}", "MS_VERSION=2.7.2"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    lint = [i for i, line in enumerate(lines) if "-m ruff check" in line]
    tests = [i for i, line in enumerate(lines) if "-m pytest" in line]
    assert lint and tests and lint[0] < tests[0], proc.stdout
    assert all(folder in lines[lint[0]] for folder in ("ms_transfer", "parity", "torch_reference", "tests", "examples"))


def test_torch_is_an_extra_that_the_venv_installs(tmp_path):
    """pyproject: torch / torchvision only in the ``torch`` extra (the MindSpore-only install,
    tests/test_without_torch.py); `make venv` installs it, so `make test` / CI / the quick start keep torch."""
    text = (ROOT / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "torch" not in dependencies
    assert 'torch = ["torch==2.14.1", "torchvision==0.29.1"]' in text
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch(mode=0o755)
    extras = re.search(r'-e "\.\[([\w,]+)\]"', _dry_run(venv, "MS_VERSION=2.7.2")).group(1).split(",")
    assert "torch" in extras


def test_two_workers_run_each_test_file_on_one_worker():
    """``make test`` runs ``pytest -n 2 --dist loadgroup --no-loadscope-reorder`` and relies on tests/conftest.py's
    groups: a file's module-scoped fixtures built once, on one worker, and the memory-heavy files one after another.
    pytest-xdist 3.8 groups by writing the group into a test's node id, which pytest 9.2 ignores
    (pytest-dev/pytest-xdist#1386): every test was dealt on its own, silently. This runs two small files the way ``make test`` does and checks that each
    ran whole on one worker, under its group."""
    import sys
    files = ["tests/test_config.py", "tests/test_onednn.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
                           "-v", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    ran = re.findall(r"^\[(gw\d)\] .*?PASSED (tests/\S+?)::\S+?(@\S+)?\s*$", proc.stdout, re.M)
    assert len(ran) >= 8, proc.stdout[-3000:]
    for path in files:
        name = Path(path).name
        mine = [(worker, group) for worker, file, group in ran if file == path]
        assert mine and {group for _, group in mine} == {f"@{name}"}, (path, mine)   # grouped by its file
        assert len({worker for worker, _ in mine}) == 1, (path, mine)               # on one worker
