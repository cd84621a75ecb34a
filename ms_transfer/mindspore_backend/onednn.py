"""Which oneDNN ISA MindSpore's CPU convolutions should use, decided from the bundled oneDNN and a measured probe.

MindSpore 2.9/2.10 bundle oneDNN v3.10.1, which serves plain-NCHW convolutions on CPUs reporting AVX-512 with a
reference kernel (``jit_uni_ncsp:conv+ref:any``, measured ~1 GFLOP/s) unless capped at AVX2 (``x64:gemm:jit``,
60-125 GFLOP/s); MindSpore 2.7.2 bundles oneDNN v2.2.0, whose AVX-512 path is ``gemm:jit``. So the cap is a
property of the installed MindSpore *and* the CPU, not a constant.

The cap is one environment variable with two spellings (:data:`ISA_VARS`): oneDNN 2.2 (MindSpore 2.7.2) reads only
``DNNL_MAX_CPU_ISA`` (checked with its verbose log: ``ONEDNN_MAX_CPU_ISA=AVX2`` alone still reports
``isa:Intel AVX-512``); oneDNN 3.x reads ``ONEDNN_MAX_CPU_ISA`` and, if that is unset, ``DNNL_MAX_CPU_ISA``
(``getenv_string_user``). A cap is therefore always written under both, and a user's own export of either wins.

* :func:`bundled_onednn` reads the version from MindSpore's own ``libdnnl`` (``dnnl_version()``, via ctypes:
  MindSpore is not imported);
* :func:`decide` (at import of :mod:`ms_transfer.mindspore_backend.context`, before any kernel): a user's
  ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` wins (:func:`user_isa`); a CPU without AVX-512 needs no cap (AVX2
  is its ceiling anyway); else the cached probe's choice for this (MindSpore, oneDNN, CPU) if there is one; else
  the rule from the versions measured here (:func:`rule`): AVX2 for oneDNN >= 3 (the reference kernel otherwise), no
  cap for oneDNN 2.x (a real AVX2 cap measured no faster on the AMD EPYC here, see BENCHMARKS.md);
* :func:`probe` measures it: a 3x3 conv (64 channels, 56x56, batch 4: ResNet's first stage) forward + both
  backwards in a subprocess per ISA (oneDNN reads the cap once per process), with the verbose log naming the ISA
  in effect and the implementation oneDNN picked (a cap the log does not show is an error, not a measurement);
  :func:`measure` interleaves :data:`PROBE_RUNS` probes per ISA; :func:`probed_choice` caps when only the uncapped
  path runs a reference kernel, and otherwise lets the timing override the rule only at :data:`OVERRIDE_MARGIN`
  (a different class of kernel, not load); the choice is cached under
  ``~/.cache/ms_transfer/onednn`` (``MS_TRANSFER_CACHE`` moves it). The training CLI probes once per machine and
  MindSpore version (:func:`ensure_probed`, 10-30 s) and logs the conv path.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

#: the cap's two spellings, oneDNN 3.x's first (it reads ``ONEDNN_``, then ``DNNL_``); oneDNN 2.2 reads ``DNNL_`` only
ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
ISA_VAR = ISA_VARS[0]   # the name shown in logs
#: the ISAs the probe compares: the AVX2 cap, and oneDNN's own choice (no cap)
CANDIDATES = ("AVX2", "ALL")
#: the probe's timing overrides the rule only when one setting is this much faster on its single conv: a different
#: class of kernel (oneDNN 3 on AVX-512: ~40x), never load. With the same kernel on both sides (oneDNN 2.2:
#: ``gemm:jit``) the timing is noise, and noise decided wrongly: on the 2-core AMD EPYC here a probe under load measured
#: the AVX2 cap 1.23x faster (32.8 vs 26.7 GFLOP/s, medians of 3), and under that cap ResNet50 at 224 px ran 18%
#: (inference) and 10% (finetune) slower than without it (BENCHMARKS.md, "Small models"); at 1.10 that probe capped
OVERRIDE_MARGIN = 3.0
#: probe subprocesses per candidate, interleaved (AVX2, none, none, AVX2, ...), each candidate's median compared:
#: one probe under other processes' load varied 10-31 GFLOP/s here, and a single pair picked the cap by chance
PROBE_RUNS = 3
#: bumped whenever the rule or the way a cap is applied changes, so a cached decision made under the old one is
#: not reused (2: the cap is written as DNNL_ too; before, MindSpore 2.7.2's probe compared no cap with no cap;
#: 3: the kernels oneDNN picked decide first, timing only at OVERRIDE_MARGIN)
RULE_VERSION = 3

_PROBE = r"""
import json, os, time
import numpy as np
import mindspore as ms
from mindspore import nn
ms.set_context(mode=ms.PYNATIVE_MODE)
conv = nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1, has_bias=False)
x = ms.Tensor(np.random.RandomState(0).randn(4, 64, 56, 56).astype(np.float32))
grad = ms.grad(lambda x: conv(x).sum(), grad_position=0, weights=conv.trainable_params())
grad(x)[0].asnumpy()
times = []
while len(times) < 5 and sum(times) < 2.0:   # a reference kernel (~1 GFLOP/s) stops after one 2.8 s pass
    t = time.perf_counter(); grad(x)[0].asnumpy(); times.append(time.perf_counter() - t)
print("PROBE " + json.dumps({"gflops": 3 * 2 * 4 * 64 * 64 * 9 * 56 * 56 / min(times) / 1e9}), flush=True)
"""


@dataclass
class Decision:
    """The ISA cap to apply (``None``: none) and why; ``probe``: the measurements it came from, if any."""

    isa: Optional[str]
    reason: str
    onednn: Optional[str] = None
    probe: Dict[str, Dict] = field(default_factory=dict)

    def describe(self) -> str:
        cap = f"{'/'.join(ISA_VARS)}={self.isa}" if self.isa else "no ISA cap"
        lines = [f"oneDNN {self.onednn or '(not found)'}: {cap} ({self.reason})"]
        for isa, m in self.probe.items():
            impls = ", ".join(sorted(set(m.get("impls", {}).values()))) or "?"
            runs = ", ".join(f"{g:.1f}" for g in m.get("runs", []))
            lines.append(f"  conv probe {isa}: {m.get('gflops', float('nan')):.1f} GFLOP/s (median of {runs}) via "
                         f"{impls} (isa: {m.get('isa', '?')})")
        return "\n".join(lines)


def _mindspore_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("mindspore")
    return Path(spec.origin).parent if spec and spec.origin else None


def bundled_onednn() -> Optional[str]:
    """``"major.minor.patch"`` of the ``libdnnl`` MindSpore ships, or ``None``."""
    root = _mindspore_dir()
    if root is None:
        return None

    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                    ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]
    for lib in sorted((root / "lib").glob("libdnnl.so*")):
        try:
            dll = ctypes.CDLL(str(lib))
            dll.dnnl_version.restype = ctypes.POINTER(_Version)
            v = dll.dnnl_version().contents
            return f"{v.major}.{v.minor}.{v.patch}"
        except (OSError, AttributeError):
            continue
    return None


def _mindspore_version() -> Optional[str]:
    root = _mindspore_dir()
    if root is None:
        return None
    try:
        text = (root / "version.py").read_text()
        return text.split("'")[1] if "'" in text else text.split('"')[1]
    except (OSError, IndexError):
        return None


def cpu() -> Dict:
    """The first CPU's model, flags, clock (``mhz``: the nominal rate a VM reports) and whether it reports AVX-512
    (``/proc/cpuinfo``; empty where there is none)."""
    model, flags, mhz = "", "", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = value
            elif key == "cpu MHz" and not mhz:
                mhz = float(value)
    except OSError:
        pass
    return {"model": model, "avx512": " avx512f" in flags, "flags": flags, "mhz": mhz}


def user_isa(environ=os.environ) -> Optional[str]:
    """The cap the user exported under either spelling (``ONEDNN_`` first, as oneDNN 3 reads them), or ``None``."""
    return next((environ[var] for var in ISA_VARS if environ.get(var)), None)


def cap_environ(isa: str) -> Dict[str, str]:
    """The variables that cap oneDNN at ``isa`` whichever oneDNN MindSpore bundles: both spellings."""
    return {var: isa for var in ISA_VARS}


def rule(onednn: Optional[str]) -> Decision:
    """The cap for an AVX-512 CPU not yet probed, from the oneDNN version (unknown: treated as 3.x, the one whose
    uncapped path is the ~100x slower reference kernel)."""
    if onednn is None or int(onednn.split(".")[0]) >= 3:
        return Decision("AVX2", "oneDNN >= 3 serves plain-NCHW convolutions on AVX-512 with a reference kernel "
                                "(measured ~1 GFLOP/s); not yet probed on this machine", onednn)
    return Decision(None, "oneDNN < 3 has a jit AVX-512 path, measured as fast as an AVX2 cap on the AMD EPYC "
                          "here; not yet probed on this machine", onednn)


def _measured(cache_file: Path) -> str:
    """The reason of a probed decision (fresh or read back from ``cache_file``)."""
    return (f"probed on this machine: the kernels oneDNN picked, the rule overridden by timing only at "
            f">= {OVERRIDE_MARGIN:.0f}x ({cache_file})")


def _cache_file(onednn: Optional[str]) -> Path:
    info = cpu()
    key = hashlib.sha256(f"{_mindspore_version()}|{onednn}|{info['model']}|{info['flags']}|{OVERRIDE_MARGIN}|"
                         f"{RULE_VERSION}|{ISA_VARS}|{PROBE_RUNS}|{_PROBE}".encode()).hexdigest()[:16]   # changed: measure again
    root = Path(os.environ.get("MS_TRANSFER_CACHE", Path.home() / ".cache" / "ms_transfer")).expanduser()
    return root / "onednn" / f"{key}.json"


def decide(user_isa: Optional[str] = None) -> Decision:
    """The cap for this process (see the module docstring); ``user_isa``: the cap the user exported, if any
    (:func:`user_isa`). Nothing is run or written."""
    onednn = bundled_onednn()
    if user_isa:
        return Decision(user_isa, "set by the user", onednn)
    if not cpu()["avx512"]:
        return Decision(None, "the CPU has no AVX-512: AVX2 is already its ceiling", onednn)
    cached = _cache_file(onednn)
    if cached.exists():
        try:
            saved = json.loads(cached.read_text())
            return Decision(saved["isa"], _measured(cached), onednn, saved.get("probe", {}))
        except (OSError, ValueError, KeyError):
            pass
    return rule(onednn)


def probe(isa: str, timeout: float = 300) -> Dict:
    """One subprocess: the conv probe under ``isa`` (``ALL``: no cap); ``{"gflops", "isa", "impls": {pass: impl}}``
    with ``isa`` the one oneDNN's verbose log reports in effect (an ``AVX2`` cap it does not show is an error)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    env.update(cap_environ(isa))
    env["ONEDNN_VERBOSE"] = env["DNNL_VERBOSE"] = "1"   # oneDNN 3 / oneDNN 2 spelling
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout)
    result: Dict = {"impls": {}}
    for line in out.stdout.splitlines():
        if line.startswith("PROBE "):
            result.update(json.loads(line[6:]))
        elif line.startswith(("onednn_verbose", "dnnl_verbose")) and ",info,cpu,isa:" in line:
            result["isa"] = line.split(",info,cpu,isa:", 1)[1].strip()
        elif line.startswith(("onednn_verbose", "dnnl_verbose")) and ",exec,cpu,convolution," in line:
            # v3: onednn_verbose,v1,primitive,exec,cpu,convolution,IMPL,PASS,...; v2: dnnl_verbose,exec,cpu,convolution,IMPL,PASS
            parts = line.split(",")
            i = parts.index("convolution")
            if len(parts) > i + 2:
                result["impls"][parts[i + 2]] = parts[i + 1]
    if "gflops" not in result:
        raise RuntimeError(f"oneDNN probe under {isa} failed: {(out.stderr or out.stdout)[-500:]}")
    if isa == "AVX2" and "AVX-512" in result.get("isa", ""):
        raise RuntimeError(f"oneDNN ignored the AVX2 cap ({', '.join(ISA_VARS)}): its log reports "
                           f"isa:{result['isa']}; the probe would compare no cap with itself")
    return result


def measure(runs: int = PROBE_RUNS) -> Dict[str, Dict]:
    """``runs`` probes per candidate, interleaved so that load drift hits both alike; per candidate the last probe's
    fields with ``gflops`` the median and ``runs`` every probe's GFLOP/s."""
    found: Dict[str, list] = {isa: [] for isa in CANDIDATES}
    for i in range(runs):
        for isa in CANDIDATES if i % 2 == 0 else CANDIDATES[::-1]:
            found[isa].append(probe(isa))
    return {isa: {**probes[-1], "gflops": statistics.median(m["gflops"] for m in probes),
                  "runs": [m["gflops"] for m in probes]} for isa, probes in found.items()}


def ensure_probed(user_isa: Optional[str] = None, log=print) -> Decision:
    """Probe and cache the choice unless the user chose an ISA, the CPU has no AVX-512 or it is cached; returns
    the decision (the caller applies it before MindSpore's first kernel:
    :func:`ms_transfer.mindspore_backend.context.prepare_onednn`)."""
    current = decide(user_isa)
    if current.probe or user_isa or not cpu()["avx512"]:
        return current
    log("Measuring MindSpore's convolution with and without the oneDNN AVX2 cap (once per machine and version) ...")
    measured = measure()
    path = _cache_file(current.onednn)
    decision = Decision(probed_choice(current.isa, measured), _measured(path), current.onednn, measured)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"isa": decision.isa, "probe": measured, "onednn": current.onednn,
                               "mindspore": _mindspore_version(), "cpu": cpu()["model"]}, indent=1))
    os.replace(tmp, path)
    return decision


def probed_choice(rule_isa: Optional[str], measured: Dict[str, Dict]) -> Optional[str]:
    """The cap a probe chooses. The kernels oneDNN picked decide first: the AVX2 cap when the uncapped path runs a
    reference kernel and the capped one does not (what the cap is for), no cap the other way round. With the same kind
    of kernel on both sides, the rule's choice (``rule_isa``; ``None``: no cap) stands unless the other setting ran at
    least :data:`OVERRIDE_MARGIN` times its GFLOP/s."""
    reference = {isa: is_reference_kernel(measured[isa]) for isa in CANDIDATES}
    if reference["ALL"] != reference["AVX2"]:
        return "AVX2" if reference["ALL"] else None
    ruled = rule_isa or "ALL"
    other = next(isa for isa in CANDIDATES if isa != ruled)
    chosen = other if measured[other]["gflops"] >= OVERRIDE_MARGIN * measured[ruled]["gflops"] else ruled
    return None if chosen == "ALL" else chosen


def is_reference_kernel(probed: Dict) -> bool:
    """Whether any pass of a probe ran oneDNN's reference implementation (``ref:any``, or a ``...+ref:any``
    composition; the verbose log's implementation names)."""
    return any("ref" in re.split(r"[:+]", impl) for impl in probed.get("impls", {}).values())


def as_dict(decision: Decision) -> Dict:
    return asdict(decision)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ms_transfer.onednn`` (no side effects: docs/cli.md renders it)."""
    return argparse.ArgumentParser(
        prog="python -m ms_transfer.onednn",
        description="Probe (once per machine and MindSpore version, 10-30 s; the choice is cached under "
                    "~/.cache/ms_transfer/onednn) which oneDNN ISA cap MindSpore's CPU convolutions should run "
                    "with, and print the decision.")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m ms_transfer.onednn``: probe (once per machine) and print the decision; ``--help`` does no work."""
    build_parser().parse_args(argv)
    print(ensure_probed(user_isa()).describe())


if __name__ == "__main__":
    main()
