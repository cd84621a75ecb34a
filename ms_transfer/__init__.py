"""ms_transfer: MindSpore transfer learning that is numerically the same model as torchvision."""
import os

# MindSpore 2.10's bundled oneDNN picks a pathological convolution path on CPUs that report AVX-512
# with FP16 (measured here: 0.5 GFLOP/s vs 60 GFLOP/s for a 3x3 conv, i.e. ~100x slower training).
# Capping oneDNN at AVX2 restores full speed and is a no-op on AVX2-only machines. It must be set before
# the first MindSpore / torch kernel runs; a value the user already exported wins.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
