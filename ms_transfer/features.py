"""Fixed-feature transfer learning without paying for the frozen trunk twice.

When only ``fc`` trains (``strategy: fixed_feature``, the head-only stage of a two-stage schedule, or freeze
patterns that amount to it) the trunk is a fixed function of the image:

* :class:`FrozenTrunkStep` runs the trunk forward only (no gradient graph through it, inference-mode
  BatchNorm) and takes a train step of the head alone on the pooled features. The head shares ``net.fc``'s
  Parameters, so checkpoints saved from ``net`` are right. It is exact (measured: bit-identical): the full-net
  train cell computes the same features (its frozen BatchNorms use their moving statistics too) and the same
  ``fc`` gradient.
* :class:`FeatureCache` stores trunk features on disk, so that later epochs (and later runs on the same data
  and weights) train the head from memory instead of decoding and convolving every image again.

Cache entries live in ``<CACHE_DIR>/features/<key>/`` (``features.npy`` float32 ``(N, C)``, ``labels.npy``
int32 ``(N,)``, ``meta.json``), in dataset index order (the scan's sorted order). The key is a sha256 over
everything the features depend on: the cache format, MindSpore version and device, the architecture, every
trunk parameter and BatchNorm statistic (bytes), the split, the transform (image size, resize backend,
augmentation; for random views also the view index and the seed, batch size and workers of the pipeline
that drew them) and ``(path, size, mtime_ns, label)`` of every sample. Changing any of them gives a new key,
so a stale entry is never read; old entries are simply left behind (delete the folder to reclaim space).

An entry is written into a temporary folder and renamed into place, so a crash never leaves a half entry
under a valid key; an entry that fails any check on load (missing file, wrong shape or labels, checksum) is
reported, removed and rebuilt. Arrays are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

__all__ = ["FORMAT_VERSION", "CACHE_STATS", "FrozenTrunkStep", "frozen_trunk_reason", "trunk_fingerprint",
           "sample_records", "FeatureStore", "FeatureCollector", "FeatureCache", "head_metrics"]

#: bump when the stored layout or the meaning of a key changes (old entries then become unreachable)
FORMAT_VERSION = 1
#: process-wide counts of cache events: ``hit`` (read from disk), ``reuse`` (already in memory), ``miss``,
#: ``saved``, ``corrupt`` (a damaged entry was removed), ``not_saved``
CACHE_STATS: Counter = Counter()

Log = Callable[[str], None]
Samples = Sequence[Tuple[str, int]]


# --- the frozen-trunk train step ------------------------------------------------------------------------

def _is_head(name: str) -> bool:
    return name == "fc" or name.startswith("fc.")


def frozen_trunk_reason(net: nn.Cell) -> Optional[str]:
    """Why ``net`` cannot train as "trunk inference + head step" (``None``: it can).

    Needs a ResNet-like net (``forward_features`` + ``fc``) whose trainable parameters are all under ``fc.``
    and whose trunk BatchNorms run in inference mode (``use_batch_statistics=False``, what
    :func:`ms_transfer.freeze.apply_freeze` sets for a frozen BatchNorm). A BatchNorm that computes batch
    statistics would make the full-net train step differ from pure inference, so it disqualifies the net.
    """
    if not (hasattr(net, "forward_features") and isinstance(getattr(net, "fc", None), nn.Cell)):
        return f"{type(net).__name__} has no forward_features/fc (an ms_transfer ResNet is needed)"
    trainable = [p.name for p in net.trainable_params()]
    outside = [n for n in trainable if not _is_head(n)]
    if outside:
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        return f"parameters outside fc are trainable ({', '.join(outside[:3])}{more})"
    if not trainable:
        return "no fc parameter is trainable"
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and not _is_head(name) and cell.use_batch_statistics is not False:
            return (f"BatchNorm {name!r} is not in inference mode (use_batch_statistics="
                    f"{cell.use_batch_statistics!r})")
    return None


def _pynative() -> bool:
    return ms.get_context("mode") == ms.PYNATIVE_MODE


class _Trunk(nn.Cell):
    """``net.forward_features`` as its own cell (compiled on its own in GRAPH mode, never differentiated)."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # keep the net's parameter names (fc.weight, not net.fc.weight)
        self.net = net

    def construct(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)


class _HeadWithLoss(nn.Cell):
    """``loss_fn(fc(features), labels)``; holds the net's own ``fc`` cell, so its Parameters are shared."""

    def __init__(self, fc: nn.Cell, loss_fn: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.fc = fc
        self.loss_fn = loss_fn

    def construct(self, features: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(self.fc(features), labels)


class _FusedStep(nn.Cell):
    """Trunk forward, then a head train step, in one graph; returns ``(loss, features)``.

    Only the head is differentiated (``GradOperation`` over :class:`_HeadWithLoss`, whose input is the trunk's
    output), so no gradient graph reaches the trunk. One graph rather than trunk and head cells back to back:
    MindSpore 2.10 on CPU ran the trunk's forward faster inside a graph that also holds a ``GradOperation``
    than as a forward-only graph (measured, ResNet18 at 64 px, batch 8: 207 vs 132 img/s; equal at ResNet50,
    224 px), and it is one launch instead of two. Same update as ``nn.TrainOneStepCell`` (no loss scaling).
    """

    def __init__(self, net: nn.Cell, head: _HeadWithLoss, optimizer: nn.Optimizer) -> None:
        super().__init__(auto_prefix=False)
        self.net, self.head, self.optimizer = net, head, optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, x: Tensor, labels: Tensor):
        features = self.net.forward_features(x)
        loss = self.head(features, labels)
        grads = self.grad(self.head, self.weights)(features, labels)
        self.optimizer(grads)
        return loss, features


class FrozenTrunkStep:
    """Train steps of a net whose trunk is frozen: trunk forward only, then a head-only train step.

    ``net`` is an ms_transfer ResNet frozen so that only ``fc.*`` trains (e.g. after
    ``apply_freeze(net, *strategy_patterns("fixed_feature"))``), ``optimizer`` updates ``net.fc``'s
    parameters and ``loss_fn`` maps ``(logits, labels)`` to a scalar (``ms_transfer.train.make_loss()``).
    Equal (measured: bit-identical) to ``nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), optimizer)`` on
    the same net, without a gradient graph through the trunk. Works in GRAPH and PYNATIVE mode. Raises
    ``ValueError`` naming the offending parameters or BatchNorm otherwise.

    ``step(x, y)`` (and ``__call__``) is one compiled graph: trunk forward + head step; ``extract`` runs the trunk
    alone (an inference graph) and ``head_step`` the head alone, for training from cached features.
    """

    def __init__(self, net: nn.Cell, optimizer: nn.Optimizer, loss_fn: nn.Cell) -> None:
        reason = frozen_trunk_reason(net)
        if reason:
            raise ValueError(f"FrozenTrunkStep needs a net whose only trainable parameters are fc.* and whose "
                             f"frozen BatchNorms run in inference mode, but {reason}. Freeze it with "
                             "ms_transfer.freeze.apply_freeze(net, *strategy_patterns('fixed_feature')), or use "
                             "nn.TrainOneStepCell for a trainable trunk.")
        heads = {id(p) for p in net.fc.get_parameters()}
        foreign = [p.name for p in optimizer.parameters if id(p) not in heads]
        if foreign:
            raise ValueError(f"FrozenTrunkStep: the optimizer updates parameters that are not net.fc's "
                             f"({', '.join(foreign[:3])}); build it over net.trainable_params() after freezing")
        self.net = net
        was_training = net.training
        self.trunk = _Trunk(net).set_train(False)  # 'predict' phase: an inference graph, no grad bookkeeping
        head = _HeadWithLoss(net.fc, loss_fn)
        self.head = nn.TrainOneStepCell(head, optimizer).set_train(True)
        self.fused = _FusedStep(net, head, optimizer).set_train(True)
        # set_train recurses into net; give the caller its flags back (with every trunk BatchNorm in inference
        # mode, checked above, the flags do not change what the trunk computes)
        net.set_train(was_training)
        # PYNATIVE would run these cells op by op and rebuild the head's backward every call (measured: 38 ms per
        # head step vs 3.5 ms as a graph); ms.jit compiles them there as GRAPH mode does (same results).
        self._jit_trunk, self._jit_head, self._jit_fused = ms.jit(self.trunk), ms.jit(self.head), ms.jit(self.fused)

    def ready(self) -> Optional[str]:
        """``None`` while the net still qualifies, else the reason (freezing changed after construction)."""
        return frozen_trunk_reason(self.net)

    def extract(self, x: Union[Tensor, np.ndarray]) -> Tensor:
        """Pooled trunk features ``(N, num_features)`` of a batch of images, as inference."""
        x = x if isinstance(x, Tensor) else Tensor(np.ascontiguousarray(x, np.float32))
        return (self._jit_trunk if _pynative() else self.trunk)(x)

    def head_step(self, features: Union[Tensor, np.ndarray], labels: Union[Tensor, np.ndarray]) -> Tensor:
        """One optimizer step of ``fc`` on trunk features; returns the loss computed before the update."""
        if not isinstance(features, Tensor):
            features = Tensor(np.ascontiguousarray(features, np.float32))
        if not isinstance(labels, Tensor):
            labels = Tensor(np.asarray(labels, np.int32))
        return (self._jit_head if _pynative() else self.head)(features, labels)

    def step(self, x: Union[Tensor, np.ndarray], y: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
        """Trunk forward on ``x``, then one head step on ``(features, y)``; returns ``(loss, features)``."""
        x = x if isinstance(x, Tensor) else Tensor(np.ascontiguousarray(x, np.float32))
        y = y if isinstance(y, Tensor) else Tensor(np.asarray(y, np.int32))
        return (self._jit_fused if _pynative() else self.fused)(x, y)

    def __call__(self, x: Union[Tensor, np.ndarray], y: Union[Tensor, np.ndarray]) -> Tensor:
        """:meth:`step` returning only the loss (computed before the update)."""
        return self.step(x, y)[0]


def head_metrics(fc: nn.Cell, features: np.ndarray, labels: np.ndarray, batches: Sequence[np.ndarray],
                 num_classes: int) -> Dict:
    """:func:`ms_transfer.evaluate.evaluate_net`'s result computed from trunk features (``fc`` per batch)."""
    from .metrics import classification_metrics
    start = time.perf_counter()
    logits = [fc(Tensor(np.ascontiguousarray(features[idx]))).asnumpy() for idx in batches]
    result = classification_metrics(logits, [labels[idx].astype(np.int64) for idx in batches], num_classes)
    result["seconds"] = time.perf_counter() - start
    return result


# --- cache keys ---------------------------------------------------------------------------------------

def trunk_fingerprint(net: nn.Cell) -> str:
    """sha256 over the name, dtype, shape and bytes of every parameter outside ``fc`` (BN statistics included)."""
    digest = hashlib.sha256()
    for param in sorted(net.get_parameters(), key=lambda p: p.name):
        if _is_head(param.name):
            continue
        value = np.ascontiguousarray(param.asnumpy())
        digest.update(f"{param.name}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.data)
    return digest.hexdigest()


def sample_records(samples: Samples) -> List[Tuple[str, int, int, int]]:
    """``(absolute path, size, mtime_ns, label)`` per sample, in dataset order (a vanished file: size -1)."""
    records = []
    for path, label in samples:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        records.append((os.path.abspath(path), size, mtime, int(label)))
    return records


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


# --- the on-disk store --------------------------------------------------------------------------------

class FeatureStore:
    """Feature arrays on disk under ``root/<key>/``, written atomically and checked on every load."""

    FILES = ("features.npy", "labels.npy", "meta.json")

    def __init__(self, root: Union[str, Path], log: Log = print) -> None:
        self.root = Path(root)
        self.log = log

    def path(self, key: str) -> Path:
        """The folder of entry ``key``."""
        return self.root / key

    def load(self, key: str, labels: np.ndarray) -> Optional[np.ndarray]:
        """The stored features of ``key`` (float32 ``(N, C)``), or ``None`` when absent.

        An entry that is incomplete or fails a check (format, key, shapes, labels equal to ``labels``,
        checksum) is reported, removed and treated as absent: a bad cache costs a recompute, never a crash.
        """
        folder = self.path(key)
        if not folder.exists():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                raise ValueError(f"format {meta.get('format')!r} / key {meta.get('key')!r} do not match")
            features = np.load(folder / "features.npy", allow_pickle=False)
            stored = np.load(folder / "labels.npy", allow_pickle=False)
            if features.dtype != np.float32 or features.ndim != 2 or features.shape[0] != len(labels):
                raise ValueError(f"features are {features.dtype} {features.shape}, expected float32 "
                                 f"({len(labels)}, C)")
            if not np.array_equal(stored, labels):
                raise ValueError("labels differ from the dataset's")
            if _sha256(features) != meta.get("features_sha256"):
                raise ValueError("features checksum mismatch")
        except Exception as exc:  # any damage (OSError, ValueError, JSON, zip/npy format errors) means rebuild
            CACHE_STATS["corrupt"] += 1
            self.log(f"Feature cache: ignoring damaged entry {folder} ({type(exc).__name__}: {exc}); "
                     "it is removed and rebuilt")
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return features

    def save(self, key: str, features: np.ndarray, labels: np.ndarray, description: Dict) -> bool:
        """Write entry ``key`` atomically (temp folder + rename); ``False`` (reported) when it cannot be written.

        When another process wrote the same key first, its entry is kept (same key, same content).
        """
        tmp: Optional[Path] = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.root))
            features = np.ascontiguousarray(features, dtype=np.float32)
            np.save(tmp / "features.npy", features, allow_pickle=False)
            np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int32), allow_pickle=False)
            meta = {"format": FORMAT_VERSION, "key": key, "shape": list(features.shape),
                    "features_sha256": _sha256(features), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **description}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            for name in self.FILES:  # on disk before the rename makes the entry visible
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            final = self.path(key)
            if final.exists():  # a concurrent run finished first (damaged entries were removed by load)
                shutil.rmtree(tmp, ignore_errors=True)
                return True
            os.rename(tmp, final)
            return True
        except OSError as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            CACHE_STATS["not_saved"] += 1
            self.log(f"Feature cache: could not write {self.path(key)} ({exc}); the features stay in memory "
                     "for this run only")
            return False

    def _remove_stale_temps(self, max_age_s: float = 24 * 3600) -> None:
        """Temp folders of runs that died while writing (older than a day: not a concurrent writer's)."""
        now = time.time()
        for tmp in self.root.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > max_age_s:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass


# --- filling a cache during an epoch --------------------------------------------------------------------

class FeatureCollector:
    """Gathers the features of one pass over a dataset whose batches are ``batches`` (sample indices).

    Each batch's labels are checked against the expected ones, so a pipeline that does not deliver the
    planned batches (a substituted unreadable image, a changed order) spoils the pass instead of the cache.
    """

    def __init__(self, labels: np.ndarray, batches: Sequence[np.ndarray]) -> None:
        self.labels = np.asarray(labels, np.int32)
        self.batches = list(batches)
        self.features: Optional[np.ndarray] = None
        self.filled = np.zeros(len(self.labels), dtype=bool)
        self.count = 0
        self.problem: Optional[str] = None

    def add(self, features: Optional[np.ndarray], labels: np.ndarray) -> None:
        """Record the next batch: its ``(B, C)`` features (``None``: not available) and labels."""
        if self.problem:
            return
        if features is None:
            self.problem = "the batch was trained without the frozen-trunk fast path"
            return
        if self.count >= len(self.batches):
            self.problem = f"the pipeline gave more than the {len(self.batches)} planned batches"
            return
        index = self.batches[self.count]
        self.count += 1
        if features.shape[0] != len(index) or not np.array_equal(np.asarray(labels), self.labels[index]):
            self.problem = f"batch {self.count - 1} does not hold the planned samples"
            return
        if self.features is None:
            self.features = np.empty((len(self.labels), features.shape[1]), dtype=np.float32)
        self.features[index] = features
        self.filled[index] = True

    def spoil(self, reason: str) -> None:
        """Mark the pass unusable (e.g. an image failed to decode and was substituted)."""
        self.problem = self.problem or reason

    def result(self) -> Tuple[Optional[np.ndarray], Optional[str]]:
        """``(features, None)`` when every sample was filled exactly as planned, else ``(None, reason)``."""
        if self.problem:
            return None, self.problem
        if self.features is None or not self.filled.all():
            return None, f"{int((~self.filled).sum())} sample(s) were not seen"
        return self.features, None


# --- the cache of one frozen-trunk stage ----------------------------------------------------------------

class FeatureCache:
    """Trunk features of one frozen-trunk stage: ``views`` train views (0: the train set is not cached) and
    the val set, in memory and in a :class:`FeatureStore` (reused across runs).

    Train view ``v`` is what epoch ``v + 1``'s train pipeline (data seed ``seed + v + 1``) feeds the trunk;
    epoch ``e`` trains on view ``(e - 1) mod views``. With a deterministic train transform (``augment="none"``)
    there is one view and it does not depend on the seed, so any epoch can fill it.
    """

    def __init__(self, net: nn.Cell, *, arch: str, image_size: int, resize_backend: str, augment: str, views: int,
                 seed: int, batch_size: int, num_workers: int, device: str, train_samples: Samples,
                 val_samples: Samples, root: Union[str, Path], log: Log = print) -> None:
        self.arch, self.image_size, self.resize_backend, self.augment = arch, image_size, resize_backend, augment
        self.views, self.seed, self.batch_size, self.num_workers, self.device = (
            int(views), int(seed), int(batch_size), int(num_workers), device)
        self.log = log
        self.store = FeatureStore(root, log)
        self.samples = {"train": list(train_samples), "val": list(val_samples)}
        self._labels = {split: np.array([label for _, label in s], dtype=np.int32) for split, s in self.samples.items()}
        self._records = {split: sample_records(s) for split, s in self.samples.items()}
        self.trunk = trunk_fingerprint(net)
        self.memory: Dict[Tuple[str, int], np.ndarray] = {}

    @classmethod
    def for_config(cls, net: nn.Cell, cfg, train_samples: Samples, val_samples: Samples, root: Union[str, Path],
                   log: Log = print) -> "FeatureCache":
        """The cache a :class:`~ms_transfer.config.TrainConfig` asks for (views: 1 with ``augment=none``,
        ``cache_views`` with random augmentation)."""
        views = 1 if cfg.augment == "none" else cfg.cache_views
        return cls(net, arch=cfg.arch, image_size=cfg.image_size, resize_backend=cfg.resize_backend,
                   augment=cfg.augment, views=views, seed=cfg.seed, batch_size=cfg.batch_size,
                   num_workers=cfg.num_workers, device=cfg.device, train_samples=train_samples,
                   val_samples=val_samples, root=root, log=log)

    @property
    def train_cached(self) -> bool:
        """Whether train features are cached (else only val features are)."""
        return self.views > 0

    def view_of(self, epoch: int) -> int:
        """The train view epoch ``epoch`` (1-based) trains on."""
        return (epoch - 1) % self.views

    def source_epoch(self, view: int) -> Optional[int]:
        """The epoch whose train pipeline draws view ``view`` (``None``: deterministic, any epoch)."""
        return None if self.augment == "none" else view + 1

    def labels(self, split: str) -> np.ndarray:
        """Labels of ``split`` in dataset order (int32)."""
        return self._labels[split]

    def spec(self, split: str, view: int = 0) -> Dict:
        """Everything the features of ``(split, view)`` depend on (hashed into the key)."""
        spec = {"format": FORMAT_VERSION, "mindspore": ms.__version__, "device": self.device, "arch": self.arch,
                "trunk": self.trunk, "split": split, "image_size": self.image_size,
                "resize_backend": self.resize_backend, "samples": self._records[split]}
        if split == "train" and self.augment == "random":
            # a random view is whatever that epoch's pipeline drew: pin everything that drives the draws
            spec.update(augment="random", view=int(view), data_seed=self.seed + view + 1,
                        batch_size=self.batch_size, num_workers=self.num_workers)
        else:
            spec.update(augment="none", view=0)
        return spec

    def key(self, split: str, view: int = 0) -> str:
        """sha256 hex key of ``(split, view)``."""
        return hashlib.sha256(json.dumps(self.spec(split, view), sort_keys=True).encode()).hexdigest()

    def _what(self, split: str, view: int) -> str:
        if split == "train" and self.augment == "random":
            return f"train view {view + 1}/{self.views}"
        return split

    def get(self, split: str, view: int = 0) -> Optional[np.ndarray]:
        """Features of ``(split, view)`` from memory or disk (logged hit), else ``None`` (logged miss)."""
        if (split, view) in self.memory:
            CACHE_STATS["reuse"] += 1
            return self.memory[(split, view)]
        key = self.key(split, view)
        features = self.store.load(key, self._labels[split])
        if features is None:
            CACHE_STATS["miss"] += 1
            self.log(f"Feature cache: miss for {self._what(split, view)} (key {key[:12]}); computing the trunk "
                     "features once")
            return None
        CACHE_STATS["hit"] += 1
        self.log(f"Feature cache: hit for {self._what(split, view)}: {features.shape[0]} x {features.shape[1]} "
                 f"features from {self.store.path(key)}")
        self.memory[(split, view)] = features
        return features

    def put(self, split: str, view: int, collector: FeatureCollector) -> Optional[np.ndarray]:
        """Keep a finished pass's features (memory + disk); a spoiled pass is reported and dropped."""
        features, problem = collector.result()
        if features is None:
            CACHE_STATS["not_saved"] += 1
            self.log(f"Feature cache: not caching {self._what(split, view)}: {problem}; the trunk runs again "
                     "next epoch")
            return None
        self.memory[(split, view)] = features
        key = self.key(split, view)
        description = {k: v for k, v in self.spec(split, view).items() if k != "samples"}
        description["num_samples"] = len(self._labels[split])
        if self.store.save(key, features, self._labels[split], description):
            CACHE_STATS["saved"] += 1
            self.log(f"Feature cache: saved {self._what(split, view)} ({features.shape[0]} x {features.shape[1]}) "
                     f"to {self.store.path(key)}")
        return features

    def describe(self) -> str:
        """One line: what is cached and where."""
        if not self.train_cached:
            train = "train set not cached (augment=random, cache_views=0: fresh augmentation every epoch)"
        elif self.augment == "none":
            train = "train set cached (deterministic transform)"
        else:
            train = f"train set cached as {self.views} augmented view(s), epoch e trains on view (e-1) mod {self.views}"
        return f"Feature cache ({self.store.root}): {train}; val set cached"
