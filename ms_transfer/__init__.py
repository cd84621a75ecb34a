"""ms_transfer: MindSpore transfer learning that is numerically the same model as torchvision."""
import os

# MindSpore 2.10's bundled oneDNN picks a pathological convolution path on CPUs that report AVX-512
# (measured here, any AVX512_* level: ~1 GFLOP/s vs ~60 GFLOP/s at AVX2 for a 3x3 conv, i.e. ~100x slower
# training). Capping oneDNN at AVX2 restores full speed and is a no-op on AVX2-only machines. oneDNN reads
# the variable lazily, at a library's first kernel, so it must be set before MindSpore's first kernel; a
# value the user already exported wins.
#
# torch's own oneDNN is *not* affected by that bug and is ~1.5-2x faster with AVX-512 (measured: a 3x3 conv
# 193 vs 125 GFLOP/s, a ResNet50 train step 1.3x), so processes that only run torch (torch_reference's CLIs,
# the benchmark's torch worker) call :func:`release_onednn_cap` before torch's first kernel.
_CAP_SET_HERE = "ONEDNN_MAX_CPU_ISA" not in os.environ
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def release_onednn_cap() -> None:
    """Undo this package's AVX2 cap (never a value the user exported). Call only in a process that will run
    no MindSpore kernel: MindSpore would then pick its ~100x slower AVX-512 path."""
    if _CAP_SET_HERE and os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2":
        del os.environ["ONEDNN_MAX_CPU_ISA"]
