"""Run a command and print its wall time and the peak memory of its whole process tree.

``python .ci/measure.py LABEL -- CMD ...`` runs ``CMD``, samples the resident memory (RSS) of it and every
descendant (pytest, the msrun/torchrun ranks and CLI subprocesses the tests start) every ``--interval`` seconds,
and prints one ``[ci] LABEL: wall ..., peak memory ...`` line when it ends; the exit status is ``CMD``'s.

Why sampling: ``/usr/bin/time -v`` reports the largest single process, not the sum of a tree whose children run
at the same time (a 2-rank data-parallel test is three processes). Shared pages are counted once per process,
so the sum is an upper bound of what the tree needs. The line also gives the machine's memory in use (total minus
available: shared pages once, page cache not) at its peak during the command, less what was in use when it
started: what the command added, what decides an out-of-memory kill. psutil comes with MindSpore (one of its
requirements).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time

from ms_transfer.bench_parity import tree_rss   # the one process-tree sampler (python -m ms_transfer.bench --parity)


def in_use() -> int:
    """Bytes of the machine's memory in use now (total minus available)."""
    import psutil

    vm = psutil.virtual_memory()
    return vm.total - vm.available


def run_measured(cmd: list[str], interval: float = 0.5) -> tuple[int, float, int, float, int]:
    """Run ``cmd``; return ``(exit status, wall seconds, peak tree RSS in bytes, CPU seconds, peak bytes added to
    the machine's memory in use)``. The CPU seconds
    (user + system) count every descendant that was waited for: divided by the wall time, how many cores the
    command kept busy on average."""
    start = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(cmd)
    peak = 0
    base = in_use()
    added = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, added
        while not done.is_set():
            peak = max(peak, tree_rss(child.pid))
            added = max(added, in_use() - base)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status = child.wait()
    done.set()
    sampler.join()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (cpu.ru_utime - cpu_before.ru_utime) + (cpu.ru_stime - cpu_before.ru_stime)
    return status, time.monotonic() - start, peak, cpu_seconds, added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", help="what the line printed at the end calls the command")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given: python .ci/measure.py LABEL -- CMD ...")
    status, wall, peak, cpu, added = run_measured(cmd, args.interval)
    minutes, seconds = divmod(round(wall), 60)
    print(f"[ci] {args.label}: wall {minutes} min {seconds:02d} s, peak memory {peak / 2**30:.2f} GiB "
          f"(RSS of the whole process tree, sampled every {args.interval} s; the machine's memory in use grew by at most "
          f"{added / 2**30:.2f} GiB), CPU {cpu:.0f} s "
          f"({cpu / max(wall, 1e-9):.2f} cores busy on average), exit status {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
