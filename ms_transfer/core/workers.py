"""A benchmark's child processes: each runs one engine (one framework, its own thread pools and memory) and prints one
JSON result line that the parent reads."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Dict, Sequence


def run_worker(module_args: Sequence[str], marker: str, name: str) -> Dict:
    """``python -m <module_args>`` in a child process; the JSON it printed after ``marker`` on one stdout line.
    Raises ``RuntimeError`` with the child's last stderr lines if it failed or printed none. The parent never imports
    MindSpore, so the child's environment is the user's: each worker applies its own oneDNN cap."""
    proc = subprocess.run([sys.executable, "-m", *module_args], capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(marker + " ")), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(line[len(marker) + 1:])
