"""One training process per run directory, across both frameworks: an OS file lock (``filelock``) plus a
small JSON note saying who holds it.

The lock is ``RUN/.run.lock`` (``flock``: the kernel releases it when the holder dies, however it dies);
``RUN/.run.lock.json`` names the holder (pid, host, framework, command, start time) so that a second run is
refused with a message naming it. A note left behind while the lock itself is free is a *stale* lock (the
holder was killed before it could clean up): it is taken over, with a message naming the dead holder.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
INFO_NAME = ".run.lock.json"


class RunDirInUse(RuntimeError):
    """Another process is training into this run directory."""


def _holder_text(info: Optional[dict]) -> str:
    if not info:
        return "another process (no holder note)"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('framework')}: {info.get('command')}, "
            f"started {info.get('started')})")


def _read_info(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunLock:
    """``with RunLock(run_dir, "mindspore"):`` holds the run directory for this process.

    Creates ``run_dir`` if needed; if it did and the body fails leaving nothing but the lock files, the
    directory is removed again, so a command that fails leaves no trace.
    """

    def __init__(self, run_dir: Path, framework: str) -> None:
        self.run_dir = Path(run_dir)
        self.framework = framework
        self.lock: Optional[FileLock] = None
        self.created = False

    @property
    def info_path(self) -> Path:
        return self.run_dir / INFO_NAME

    def acquire(self) -> "RunLock":
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.run_dir / LOCK_NAME))
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            holder = _holder_text(_read_info(self.info_path))
            raise RunDirInUse(f"{self.run_dir} is in use by {holder}; wait for that run to finish, stop it, or "
                              "choose another --output-dir (nothing was changed)") from None
        stale = _read_info(self.info_path) if self.info_path.exists() else None
        if self.info_path.exists():
            log.warning(f"Run directory {self.run_dir}: taking over a stale lock left by {_holder_text(stale)}, "
                        "which is no longer running")
        note = {"pid": os.getpid(), "host": socket.gethostname(), "framework": self.framework,
                "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])[:300],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.info_path.write_text(json.dumps(note))
        return self

    def release(self, failed: bool = False) -> None:
        if self.lock is None:
            return
        try:
            self.info_path.unlink(missing_ok=True)
        finally:
            self.lock.release()
            self.lock = None
        if failed and self.created:
            leftovers = [p for p in self.run_dir.iterdir() if p.name != LOCK_NAME]
            if not leftovers:
                for p in self.run_dir.iterdir():
                    p.unlink(missing_ok=True)
                self.run_dir.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(failed=exc_type is not None)
