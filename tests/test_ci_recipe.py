"""The CI recipe users copy (examples/ci/github-actions-parity.yml) runs here: every ``python -m parity`` command of
its ``run:`` steps, job after job, in a directory laid out like the user's checkout (``examples/`` at its root),
with the workflow's environment; a job that installs no torch extra runs where importing torch fails. Each command
must exit 0 (the example port is clean), and the recipe must keep its three commands: compare, save, check."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from test_without_torch import without_torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "github-actions-parity.yml"


def _jobs():
    """``[(job, env, [run lines], torch installed)]`` in the workflow's order (``needs`` points backwards)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = []
    for name, job in workflow["jobs"].items():
        runs = [step["run"] for step in job["steps"] if "run" in step]
        env = {**workflow.get("env", {}), **job.get("env", {})}
        lines = [line.strip() for run in runs for line in run.splitlines() if line.strip()]
        jobs.append((name, env, lines, any("[torch]" in line for line in lines if line.startswith("pip install"))))
    return jobs


def _parity_commands():
    """``[(job, env, torch installed, command)]``: the ``python -m parity`` lines, in order."""
    return [(name, env, torch, line) for name, env, lines, torch in _jobs() for line in lines
            if line.startswith("python -m parity")]


def test_the_recipe_compares_saves_and_checks_without_torch():
    kinds = [(torch, "--check-reference" if "--check-reference" in line else "--save-reference"
              if "--save-reference" in line else "compare" if "$PORT" in line else line)
             for _, _, torch, line in _parity_commands()]
    assert kinds == [(True, "compare"), (True, "--save-reference"), (False, "--check-reference")]


def test_the_example_name_map_file_is_the_example_s_name_map():
    from examples.parity_own_model_ms import NAME_MAP

    assert yaml.safe_load((ROOT / "examples" / "parity_own_model_name_map.yaml").read_text()) == NAME_MAP


def test_the_recipe_s_parity_commands_pass_here(tmp_path):
    """Every job's commands in one checkout (what the artifact carries from job to job is the bundle directory)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for job, env, torch, command in _parity_commands():
        base = dict(os.environ) if torch else without_torch(tmp_path / "no-torch")
        proc = subprocess.run(["bash", "-c", sys.executable + command[len("python"):]], cwd=tmp_path,
                              env={**base, **env}, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{job}: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "PASSED" in proc.stdout or "--save-reference" in command, proc.stdout[-3000:]
