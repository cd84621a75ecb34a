"""Error metrics, the noise-floor tolerance rule, and the jitter of the float32 samples that measure the floor
(:func:`jitter_fn`, :class:`JitteredState`).

Why a floor, and how it is measured
-----------------------------------
MindSpore's CPU conv has no float64, so MindSpore float32 is compared with a **torch float64** run on the
same weights and inputs. How far *any* correct float32 implementation lands from that reference is not a
constant: eval-mode logits agree to ~1e-6, but train-mode gradients of a random-init ResNet50 differ by
~2% (relative L2) in both frameworks, because a float32 rounding flips the sign of some near-zero
pre-activations and the ReLU masks (and everything upstream of them) change. Those flips are random
events, so one float32 sample is a noisy floor. The floor is therefore the **largest** error among
``FLOOR_SAMPLES`` torch float32 runs whose weights and inputs are jittered by ``JITTER = 2^-17``
(relative, 128 float32 ulps): each run rounds differently, like another correct implementation would,
and the jitter is large enough that every sample hits several mask flips, so the floor measures what a
flip costs rather than whether one happened. That is the floor of the gradient and optimizer checks; the forward
checks, where a flip costs next to nothing, measure theirs at one ulp (see "The forward checks" below). Measured false alarms with smaller jitters (correct port,
MindSpore hit a flip that no torch sample hit): eval-mode gradients at ratio ~500 (1 ulp, ResNet50) and
~8900 (8 ulps, ResNet18 seed 2); with 128 ulps the same runs give ratios 0.1 and 2.1.

Tolerance rule (per tensor ``t`` of a check)::

    err_t <= K * max(floor_t, floor_global) + A_t
    i.e.  ratio_t = err_t / (max(floor_t, floor_global) + A_t / K) <= K

with the absolute term ``A_t = ABS_TERM``, except for the model outputs' tensors of ``MIN_RESOLVED`` or more
elements (their floors are measured at the physical limit: see "The forward checks" below); the scale statistic's
absolute term is always ``ABS_TERM``.

* ``K = 4``: two correct implementations are two draws of the same noise; the worst ratio measured on
  correct ports is recorded in the README (seed sweep), and 4 leaves margin over it without hiding a
  bug: the injected porting bugs give ratios from ~10^2 to ~10^13 (the tests assert each one fails).
* ``floor_global`` (all tensors of the check pooled) keeps a tensor whose own floor happened to be tiny
  from failing on a single ReLU-mask flip that the torch samples did not happen to hit.
* ``ABS_TERM = 64 * 2^-24`` (~3.8e-6, relative): the rounding of one float32 reduction over ~4096 terms,
  for quantities (a scalar loss, a head bias gradient) where every float32 sample may round identically.

Systematic errors: the scale statistic
--------------------------------------
The rule above is robust to mask flips *because* its floor is as large as a flip: for gradients, ~1e-3-1e-2
relative L2 (measured, ResNet18 64 px batch 4: 1.9e-3 train-mode BN, 3.0e-2 eval-mode BN), while a correct
port on the same inputs is at ~3-6e-6. So an error that touches *every* element a little (a loss scale or a
mean over the wrong count left in on one side: every gradient times 1.02) hid below it. A second statistic
catches those without becoming fragile to flips:

    s_t   = <a_t - r_t, r_t> / <r_t, r_t>      least-squares relative scale error of tensor t
    scale = median over the check's tensors of s_t   (tensors whose reference is all zero are left out)
    pass  when |scale| <= K * (scale_floor + ABS_TERM / K),  scale_floor = max over the float32 samples

A uniform scale 1+eps gives ``s_t = eps`` for every tensor, so ``scale = eps``; noise that is not a scale
(rounding, a flip) projects onto ``r_t`` only partly, and a flip disturbs a minority of tensors strongly, which
the median ignores. Measured on correct ports (ResNet18 64 px batch 4, PYNATIVE, seed 0): the samples' scale
is <= 1.2e-7 for BN statistics, <= 4.9e-6 for train-mode-BN gradients and <= 2e-4 for eval-mode-BN gradients
(the port's own: 2e-8 / 1.3e-7 / 1.2e-7). ``python -m parity --sensitivity`` prints the smallest uniform and
single-tensor scale error each check detects, on the run at hand.

The forward checks: a floor at the physical limit
-------------------------------------------------
The 128-ulp jitter changes the *function* the samples compute, not just their rounding, and a forward output
moves with it: on the small attention model of ``examples/own_models/transformer.py`` (LayerNorm, softmax, GELU)
the 128-ulp samples' outputs were 59-85x further from float64 than the unjittered float32 torch model, on ResNet18
(64 px, batch 4) 29x, so an output error 50x the port's own passed. A forward output is a continuous function of
the weights and inputs (a ReLU-mask flip moves it only by the flipped near-zero value), so it needs no jitter that
provokes flips: the forward checks (outputs, loss, BN statistics) take their L2 floor from ``FLOOR_SAMPLES``
samples jittered by ``OUTPUT_JITTER = 2^-24`` (the unit roundoff: each weight and input keeps
its float32 value or moves to a neighbouring one -- another rounding of the same numbers). Measured, the largest
of the 4 samples' errors over the unjittered float32 model's own error (eval outputs; ResNet18 / attention models):
1.15-1.9 at 1 ulp (2^-24), 1.35-2.3 at 2, 1.6-3.2 at 4, 29-85 at 128 (seeds 0-2); the MindSpore port's own
error is 0.83-1.6 times the float32 model's. One ulp rather than two: the smallest detected error in one attention
layer was 8.5x the float32 error at 2 ulps, 4.4x at 1 (seed 0, measured with an earlier variant of the absolute
term below; ``--sensitivity`` reports both numbers on the run at hand).

At that floor the absolute term changes too: ``ABS_TERM`` (3.8e-6) alone is 34x the attention model's float32
error (1.1e-7). An output tensor of at least ``MIN_RESOLVED = 16`` elements gets instead the *resolution* term of
``RESOLUTION_ULPS = 1`` float32 ulp of each of its own elements (``||spacing(r)|| / ||r||``, 1-2e-7 relative): the
samples' 16+ rounding errors measure the floor there, and one ulp covers a port whose results round the other way
where the samples happen to agree. Measured on the
attention model, seeds 0-4, PYNATIVE: a uniform scale of the outputs is detected from 5.3-7.7x the float32 error, an
error in one layer from 5.2-8.7x, and the clean port's worst ratio is 0.69. Below 16 elements (a scalar loss) 4
samples are too few numbers to measure a distribution: with Gaussian rounding errors, a port as accurate as torch exceeds
``K`` times the largest of 4 samples with probability 0.4% for a scalar and 4% if it is twice as coarse (simulated;
0 in 400,000 draws at 16 elements and twice as coarse), so those keep ``ABS_TERM`` -- measured on an attention model
with a cross-entropy loss, MindSpore's loss was 3.6 ulps from float64 while the 4 float32 torch samples all rounded
to the same value. The scale statistic is one number per check -- the scalar case -- and keeps ``ABS_TERM`` and
its floor on the 4-ulp rounding samples, unchanged (with the resolution term instead, ResNeXt-50's GRAPH-mode
logits gave a scale ratio of 4.08 on a correct port): at this L2 floor a uniform scale of the outputs is caught by
the L2 rule about as early as an error in one layer anyway. The BN running statistics keep ``ABS_TERM`` too:
reductions over up to N*H*W values per channel that MindSpore sums in another order (with the resolution term,
VGG11-BN in GRAPH mode gave an L2 ratio of 3.30 on a correct port); their L2 floor is the one-ulp samples' all the
same (one tensor's error is detected from 4.2e-6 on ResNet18 instead of 2.2e-5).

For the gradient checks the rounding samples alone are not enough: a gradient *is* moved O(1) by a mask flip,
and where the port flips a ReLU that no 4-ulp sample flipped, the median scale moves with it (measured: eval-mode
BN gradients at scale ratio 96 on a correct ResNet18, seed 1, batch 4; 10 on ResNet50 seed 2). So the gradient
checks' scale statistic is measured against a float64 reference whose ReLUs keep **the port's masks** (captured
from the MindSpore forward by hooks; each ``nn.ReLU`` module forced to ``input * mask`` for its k-th call, paired
with the cell of the same name), with the rounding samples forced to the same masks: flips cancel by
construction, and what is left is rounding and any systematic error. Same sweep: those two cases drop to 0.13 and
0.01, the worst over ResNet18 seeds 0-5 (batch 2 and 4), ResNet34/50/101/152 and GRAPH runs is 2.5 (ResNet34
seed 1, train-mode BN: a genuine ~3.6e-6 float32 reduction difference, inside the absolute term), and a uniform
gradient scale is detected from ~5e-6 (train-mode BN) and ~7e-6 (eval-mode BN) on ResNet18. The L2 rule keeps
the unmasked reference and the 128-ulp floor. ReLUs the pairing cannot match (functional ``torch.relu``, cells
named differently) keep their own decisions; a reference bundle, made without the port, uses the unmasked
128-ulp floor for its gradient scale statistic.

Reported next to the verdict, to relate it to TroubleShooter / msprobe numbers: the cosine similarity of the
worst tensor and the share of elements within ``allclose(rtol=1e-4, atol=1e-4)`` (all tensors pooled).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .report import CheckResult

K = 4.0
FP32_UNIT_ROUNDOFF = 2.0 ** -24
ABS_TERM = 64 * FP32_UNIT_ROUNDOFF
FLOOR_SAMPLES = 4
JITTER = 2.0 ** -17
#: jitter of the *rounding* samples that calibrate the gradient checks' masked scale statistic (see the docstring)
ROUNDING_JITTER = 2.0 ** -22
#: jitter of the samples that give the forward checks both floors: the unit roundoff (see the docstring)
OUTPUT_JITTER = 2.0 ** -24
#: the forward checks' absolute term: this many float32 ulps of each element, for tensors of >= MIN_RESOLVED elements
RESOLUTION_ULPS = 1
MIN_RESOLVED = 16
#: the fixed tolerance of TroubleShooter / msprobe's ``allclose`` column (reported, never used for the verdict)
ALLCLOSE_TOL = 1e-4

Arrays = Union[np.ndarray, Mapping[str, np.ndarray]]


def failed(check: str, reason: str) -> CheckResult:
    """A row for a check that could not be compared (the port crashed, keys or shapes differ)."""
    return CheckResult(check, np.inf, np.inf, np.nan, np.inf, K, False, reason)


def as_named(a: Arrays) -> Dict[str, np.ndarray]:
    """A check's result as ``{tensor name: array}`` (a bare array is the one tensor ``""``)."""
    return {"": a} if isinstance(a, np.ndarray) else dict(a)


def _rel(diff_sq: float, ref_sq: float) -> float:
    return float(np.sqrt(diff_sq / ref_sq)) if ref_sq > 0 else float(np.sqrt(diff_sq))


@dataclass
class Floor:
    """What the tolerance rule needs from the float32 samples of one check: each tensor's worst relative L2
    error, the pooled one, and the worst scale statistic. Measured live (:meth:`measure`) or read from a
    reference bundle (:mod:`parity.engine.bundle`), so that a bundle can be checked without torch.
    ``resolution``: the samples were jittered by ``OUTPUT_JITTER`` (the forward checks), so tensors of at least
    ``MIN_RESOLVED`` elements get the resolution term instead of ``ABS_TERM`` (:func:`absolute_term`)."""

    per_tensor: Dict[str, float]
    pooled: float
    scale: float
    resolution: bool = False

    @classmethod
    def measure(cls, ref: Arrays, floor_samples: Sequence[Arrays],
                scale_samples: Optional[Sequence[Arrays]] = None, scale_ref: Optional[Arrays] = None,
                resolution: bool = False) -> "Floor":
        """The floor of ``ref`` from float32 samples; the scale statistic's from ``scale_samples`` (default:
        ``floor_samples``), measured against ``scale_ref`` (default ``ref``; the masked reference of the gradient
        checks, see parity/engine/tolerance.py); ``resolution`` as the attribute."""
        builder = FloorBuilder(ref, scale_ref, resolution)
        for s in floor_samples:
            builder.add(s, scale=scale_samples is None)
        for s in scale_samples or ():
            builder.add_scale(s)
        return builder.floor()

    def as_dict(self) -> dict:
        return asdict(self)


class FloorBuilder:
    """:meth:`Floor.measure`, one sample at a time: a sample is folded into the maxima and can be dropped (a VGG's
    gradients are 0.5 GB per float32 sample: keeping the eight samples of a check took 4 GB)."""

    def __init__(self, ref: Arrays, scale_ref: Optional[Arrays] = None, resolution: bool = False) -> None:
        self.resolution = resolution
        self.ref_d = as_named(ref)
        self.ref_sq = _ref_sq(self.ref_d)
        self.total_ref = sum(self.ref_sq.values())
        self.scale_d = self.ref_d if scale_ref is None else as_named(scale_ref)
        self.scale_sq = self.ref_sq if scale_ref is None else _ref_sq(self.scale_d)
        self.per_tensor = {n: 0.0 for n in self.ref_d}
        self.pooled = self.scale = 0.0
        self.samples = self.scale_samples = 0

    def add(self, sample: Arrays, scale: bool = False) -> None:
        """A floor sample (``scale``: also a sample of the scale statistic)."""
        s = as_named(sample)
        errors = {n: _sq_err(s[n], r) for n, r in self.ref_d.items()}
        for n, e in errors.items():
            self.per_tensor[n] = max(self.per_tensor[n], _rel(e, self.ref_sq[n]))
        self.pooled = max(self.pooled, _rel(sum(errors.values()), self.total_ref))
        self.samples += 1
        if scale:
            self.add_scale(s)

    def add_scale(self, sample: Arrays) -> None:
        """A sample of the scale statistic only."""
        self.scale = max(self.scale, abs(_scale(as_named(sample), self.scale_d, self.scale_sq)))
        self.scale_samples += 1

    def drop_reference(self) -> None:
        """The floor samples are done: the builder lets go of the reference (:meth:`add` can no longer be called;
        its squared norms are kept, and the scale statistic's reference until :meth:`scale_against` replaces it)."""
        if self.scale_d is self.ref_d:
            self.scale_d = None
        self.ref_d = None

    def scale_against(self, scale_ref: Arrays) -> None:
        """Measure the scale statistic of the samples still to come against ``scale_ref`` (the masked reference of
        the gradient checks, computed after the floor samples)."""
        self.scale_d = as_named(scale_ref)
        self.scale_sq = _ref_sq(self.scale_d)

    def floor(self) -> "Floor":
        if not (self.samples and self.scale_samples):
            raise ValueError("a floor needs at least one sample of each kind")
        return Floor(dict(self.per_tensor), self.pooled, self.scale, self.resolution)


#: elements jittered (or skipped) per block: the block's float64 temporaries stay in the CPU cache. Whole tensors at a
#: time spent ~2.5x as long on ResNet50's 25.6M weights (1.9 s vs 0.73 s, most of it memory traffic); the numbers
#: are the same, since the generator fills any block in C order from the same stream.
JITTER_BLOCK = 1 << 14


def jitter_generator(seed: int) -> np.random.Generator:
    """The uniform numbers of the jitter with ``seed``: SFC64, the fastest of numpy's bit generators. A ResNet50
    comparison draws about a billion of them (each of its 12 jittered states is rebuilt on every pass instead of
    stored, 36 passes over 25.6M weights): with ``RandomState`` (MT19937) a pass took 0.19 s, 7 s of the default
    ``python -m parity``'s 62; with SFC64 and the fused arithmetic of :func:`_jitter`, 0.09 s (AMD EPYC, issue 22).
    The floors are the same statistic of other random numbers (BENCHMARKS.md "Parity cost" gives the change)."""
    return np.random.Generator(np.random.SFC64(seed))


def _jitter(rng: np.random.Generator, a: np.ndarray, amount: float) -> np.ndarray:
    """``a * (1 + amount * U(-1, 1))`` rounded to float32, the uniform numbers drawn from ``rng`` in C order as
    ``1 - amount + 2 * amount * U(0, 1)``: bit-identical to
    ``(a * (1.0 - amount + 2.0 * amount * rng.random(a.shape))).astype(np.float32)`` (the same float64 operations in
    the same order), block by block into one reused buffer."""
    flat = np.ascontiguousarray(a).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    buffer = np.empty(min(JITTER_BLOCK, flat.size))
    low, span = 1.0 - amount, 2.0 * amount
    for start in range(0, flat.size, JITTER_BLOCK):
        stop = min(start + JITTER_BLOCK, flat.size)
        u = buffer[:stop - start]
        rng.random(out=u)
        u *= span
        u += low
        u *= flat[start:stop]
        out[start:stop] = u   # float64 -> float32 rounds to nearest, as astype does
    return out.reshape(np.shape(a))


def _skip(rng: np.random.Generator, size: int) -> None:
    """Advance ``rng`` past ``size`` uniform draws (block by block: no array of ``size`` numbers)."""
    buffer = np.empty(min(JITTER_BLOCK, size))
    for start in range(0, size, JITTER_BLOCK):
        rng.random(out=buffer[:min(JITTER_BLOCK, size - start)])   # one 64-bit draw each, as in _jitter


def jitter_fn(seed: int, amount: float = JITTER) -> Callable[[np.ndarray], np.ndarray]:
    """Scales every float32 array by ``1 + amount * U(-1, 1)`` (other dtypes pass through)."""
    rng = jitter_generator(seed)

    def jitter(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return _jitter(rng, a, amount) if a.dtype == np.float32 else a
    return jitter


class JitteredState(Mapping):
    """``state`` with every float32 tensor jittered by ``jitter_fn(seed, amount)``, recomputed on each pass over
    :meth:`items` rather than stored: a floor sample's weights exist only while its engine builds a model (a VGG
    holds 133M parameters: eight stored jittered copies took 4.2 GB). Passes draw the same numbers in the same
    order, so every pass yields the same state; :meth:`jitter_after` continues the same random sequence for the
    sample's inputs."""

    def __init__(self, state: Mapping[str, np.ndarray], seed: int, amount: float) -> None:
        self.base, self.seed, self.amount = state, seed, amount
        self._after: Dict[str, dict] = {}   # the generator's state after the state's draws, once known

    def with_amount(self, amount: float) -> "JitteredState":
        """The same state and seed jittered by ``amount``: the same random numbers, so the draws :meth:`jitter_after`
        skips are skipped once for both (a comparison jitters each seed by three amounts)."""
        other = JitteredState(self.base, self.seed, amount)
        other._after = self._after
        return other

    def items(self):
        jitter = jitter_fn(self.seed, self.amount)
        return ((k, jitter(v)) for k, v in self.base.items())

    def jitter_after(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """``arrays`` jittered by the random numbers that follow the state's (as one sequential jitter would)."""
        rng = jitter_generator(self.seed)
        if "state" in self._after:
            rng.bit_generator.state = self._after["state"]
        else:
            for v in self.base.values():
                if np.asarray(v).dtype == np.float32:
                    _skip(rng, int(np.size(v)))   # the state's draws
            self._after["state"] = rng.bit_generator.state
        return [_jitter(rng, a, self.amount) if a.dtype == np.float32 else a for a in map(np.asarray, arrays)]

    def __getitem__(self, key: str) -> np.ndarray:
        return dict(self.items())[key]

    def __iter__(self):
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def absolute_term(ref: np.ndarray, resolution: bool) -> float:
    """The rule's absolute term ``A_t`` for a tensor whose reference is ``ref`` (relative, like its error):
    ``ABS_TERM``, or with ``resolution`` (a floor measured at ``OUTPUT_JITTER``) and at least ``MIN_RESOLVED``
    elements, ``RESOLUTION_ULPS`` float32 ulps of each element, ``||spacing(r)|| / ||r||`` of them (see the module
    docstring)."""
    if not resolution or np.size(ref) < MIN_RESOLVED:
        return ABS_TERM
    norm_sq = ulps_sq = 0.0
    for (r,) in _blocks(ref):
        r = np.abs(np.asarray(r, np.float64))
        norm_sq += float(np.sum(r ** 2))
        ulps_sq += float(np.sum(np.spacing(r.astype(np.float32)).astype(np.float64) ** 2))
    norm = float(np.sqrt(norm_sq))
    if norm == 0:
        return ABS_TERM
    return RESOLUTION_ULPS * float(np.sqrt(ulps_sq)) / norm


#: elements per block of the sums over a tensor below (errors, norms, projections): their float64 temporaries are a
#: block's, not the tensor's (VGG16's first classifier weight, 102.8M elements, took 2.4 GB of temporaries per sum).
#: Every tensor of a ResNet fits in one block, where each sum is the whole-tensor expression it replaces, bit for bit.
ERROR_BLOCK = 1 << 22


def _blocks(*arrays):
    """The arrays (of one size) flattened and cut into the same ``ERROR_BLOCK``-element pieces (views where the
    arrays are contiguous); a single piece for a tensor of at most one block, an empty one included."""
    # reshape, not ravel: a broadcast zero (a frozen tensor's update, parity/suite/training.py) stays a view
    flat = [np.asarray(a).reshape(-1) for a in arrays]
    for start in range(0, max(flat[0].size, 1), ERROR_BLOCK):
        yield [f[start:start + ERROR_BLOCK] for f in flat]


def _ref_sq(ref_d: Mapping[str, np.ndarray]) -> Dict[str, float]:
    return {n: _sum_sq(r) for n, r in ref_d.items()}


def _sum_sq(r: np.ndarray) -> float:
    total = 0.0
    for (b,) in _blocks(r):
        total += float(np.sum(np.asarray(b, np.float64) ** 2))
    return total


def _sq_err(a: np.ndarray, r: np.ndarray) -> float:
    if np.shape(a) != np.shape(r):
        return np.inf
    total = 0.0
    for ab, rb in _blocks(a, r):
        ab = np.asarray(ab, dtype=np.float64)
        if not np.all(np.isfinite(ab)):
            return np.inf
        total += float(np.sum((ab - rb) ** 2))
    return total


def _max_abs(a: np.ndarray, r: np.ndarray) -> float:
    return max(float(np.max(np.abs(np.asarray(ab, np.float64) - rb))) if np.size(ab) else 0.0
               for ab, rb in _blocks(a, r))


def _close_count(a: np.ndarray, r: np.ndarray) -> int:
    return sum(int(np.sum(np.isclose(np.asarray(ab, np.float64), rb, rtol=ALLCLOSE_TOL, atol=ALLCLOSE_TOL)))
               for ab, rb in _blocks(a, r))


def compare(check: str, ms: Arrays, ref: Arrays, floor_samples: Sequence[Arrays],
            scale_samples: Optional[Sequence[Arrays]] = None, details: bool = True) -> CheckResult:
    """Compare MindSpore's result with the float64 reference against the float32 noise floor; the scale
    statistic's floor comes from ``scale_samples`` (default: ``floor_samples``). ``details=False`` skips the
    reported-only cosine and allclose columns (the verdict is the same; :mod:`parity.engine.sensitivity` calls it
    often)."""
    if set(as_named(ms)) != set(as_named(ref)):
        return compare_to_floor(check, ms, ref, Floor({}, 0.0, 0.0))
    return compare_to_floor(check, ms, ref, Floor.measure(ref, floor_samples, scale_samples), details)


def compare_to_floor(check: str, ms: Arrays, ref: Arrays, floor: Floor, details: bool = True,
                     scale_ref: Optional[Arrays] = None) -> CheckResult:
    """The tolerance rule of the module docstring against a measured (or stored) :class:`Floor`; the scale
    statistic against ``scale_ref`` when given (the floor's must have been measured against it too)."""
    ms_d, ref_d = as_named(ms), as_named(ref)
    if set(ms_d) != set(ref_d):
        missing = sorted(set(ref_d) ^ set(ms_d))[:5]
        return failed(check, f"keys differ: {missing}")
    names = list(ref_d)
    ref_sq = _ref_sq(ref_d)
    ms_sq = {n: _sq_err(ms_d[n], ref_d[n]) for n in names}
    rel_global = _rel(sum(ms_sq.values()), sum(ref_sq.values()))
    max_abs = max((_max_abs(ms_d[n], ref_d[n]) if np.isfinite(ms_sq[n]) else np.inf) for n in names)

    # ratio to the effective floor: passing means ratio <= K (the absolute term is folded in).
    absolute = {n: absolute_term(ref_d[n], floor.resolution) for n in names}
    rows = []
    for n in names:
        effective = max(floor.per_tensor[n], floor.pooled) + absolute[n] / K
        rows.append((_rel(ms_sq[n], ref_sq[n]) / effective, n))
    worst_ratio, worst = max(rows)
    if not all(np.isfinite(ms_sq[n]) for n in names):
        return CheckResult(check, max_abs, rel_global, floor.pooled, float(worst_ratio), K, False, worst)
    if scale_ref is None:
        scale = _scale(ms_d, ref_d, ref_sq)
    else:
        scale_d = as_named(scale_ref)
        scale = _scale(ms_d, scale_d, _ref_sq(scale_d))
    # the scale statistic is one number per check: a scalar, whose absolute term stays ABS_TERM (module docstring)
    scale_ratio = abs(scale) / (floor.scale + ABS_TERM / K)
    passed = bool(worst_ratio <= K and scale_ratio <= K)
    if worst_ratio <= K < scale_ratio:
        worst = "systematic scale error"
    cosine = allclose = float("nan")
    if details:
        cosine = min(_cosine(ms_d[n], ref_d[n]) for n in names)
        close = sum(_close_count(ms_d[n], ref_d[n]) for n in names)
        allclose = close / max(1, sum(int(np.size(ref_d[n])) for n in names))
    return CheckResult(check, max_abs, rel_global, floor.pooled, float(worst_ratio), K, passed, worst,
                       float(scale), float(floor.scale), float(scale_ratio), float(cosine), float(allclose))


def _scale(d: Mapping[str, np.ndarray], ref_d: Mapping[str, np.ndarray], ref_sq: Mapping[str, float]) -> float:
    """Median over tensors of ``<a - r, r> / <r, r>`` (see the module docstring); 0 when every reference is 0."""
    values = []
    for n, r in ref_d.items():
        if ref_sq[n] > 0:
            dot = 0.0
            for ab, rb in _blocks(d[n], r):
                r64 = np.asarray(rb, np.float64)
                dot += float((np.asarray(ab, np.float64) - r64) @ r64)
            values.append(dot / ref_sq[n])
    return float(np.median(values)) if values else 0.0


def _cosine(a: np.ndarray, r: np.ndarray) -> float:
    aa = rr = ar = 0.0
    for ab, rb in _blocks(a, r):
        a64, r64 = np.asarray(ab, np.float64), np.asarray(rb, np.float64)
        aa, rr, ar = aa + float(a64 @ a64), rr + float(r64 @ r64), ar + float(a64 @ r64)
    na, nr = float(np.sqrt(aa)), float(np.sqrt(rr))
    if na == 0 or nr == 0:
        return 1.0 if na == nr else 0.0
    return ar / (na * nr)
