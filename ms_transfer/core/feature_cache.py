"""The trunk-feature cache of frozen-trunk training, framework-neutral: keys, the on-disk store, the policy.

When only the head trains (``fc``; a VGG's ``classifier``: ``strategy: fixed_feature``, the head-only stage of a
two-stage schedule, or freeze
patterns that amount to it) the trunk is a fixed function of the image:

each backend runs it as inference and steps only the head (the loop, :mod:`ms_transfer.core.loop`, asks it to),
and :class:`FeatureCache` stores the trunk's features on disk, so that later epochs (and later runs on the same
data and weights) train the head from memory instead of decoding and convolving every image again.

Cache entries live in ``<CACHE_DIR>/features/<key>/`` (``features.npy`` float32 ``(N, C)``, ``labels.npy``
int32 ``(N,)``, ``meta.json``), in dataset index order (the scan's sorted order). The key is a sha256 over
everything the features depend on: the cache format, the framework and its version, the device, the architecture, every
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
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .data import DEFAULT_EVAL_RESIZE, Preprocess

__all__ = ["FORMAT_VERSION", "CACHE_STATS", "trunk_fingerprint", "sample_records", "FeatureStore", "FeatureCollector",
           "FeatureCache"]

#: bump when the stored layout or the meaning of a key changes (old entries then become unreachable)
FORMAT_VERSION = 2
#: process-wide counts of cache events: ``hit`` (read from disk), ``reuse`` (already in memory), ``miss``,
#: ``saved``, ``corrupt`` (a damaged entry was removed), ``not_saved``
CACHE_STATS: Counter = Counter()

Log = Callable[[str], None]
Samples = Sequence[Tuple[str, int]]


# --- cache keys ---------------------------------------------------------------------------------------

def trunk_fingerprint(arrays: Iterable[Tuple[str, np.ndarray]]) -> str:
    """sha256 over the name, dtype, shape and bytes of every ``(name, array)`` (the backend passes every trunk
    parameter and BatchNorm statistic), in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(arrays, key=lambda item: item[0]):
        value = np.ascontiguousarray(value)
        digest.update(f"{name}|{value.dtype.str}|{value.shape}\n".encode())
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

    def __init__(self, trunk: str, *, framework: str, arch: str, image_size: int, resize_backend: str, augment: str,
                 views: int, seed: int, batch_size: int, num_workers: int, device: str, train_samples: Samples,
                 val_samples: Samples, root: Union[str, Path], log: Log = print, normalize: str = "imagenet",
                 resize: str = "crop", eval_resize: int = DEFAULT_EVAL_RESIZE, augment_shift: int = 2) -> None:
        self.arch, self.image_size, self.resize_backend, self.augment = arch, image_size, resize_backend, augment
        self.augment_shift = int(augment_shift)
        self.normalize, self.resize, self.eval_resize = normalize, resize, int(eval_resize)
        self.views, self.seed, self.batch_size, self.num_workers, self.device = (
            int(views), int(seed), int(batch_size), int(num_workers), device)
        self.log = log
        self.store = FeatureStore(root, log)
        self.samples = {"train": list(train_samples), "val": list(val_samples)}
        self._labels = {split: np.array([label for _, label in s], dtype=np.int32) for split, s in self.samples.items()}
        self._records = {split: sample_records(s) for split, s in self.samples.items()}
        self.trunk, self.framework = trunk, framework
        self.memory: Dict[Tuple[str, int], np.ndarray] = {}

    @classmethod
    def for_config(cls, trunk: str, framework: str, cfg, train_samples: Samples, val_samples: Samples,
                   root: Union[str, Path], log: Log = print) -> "FeatureCache":
        """The cache a :class:`~ms_transfer.core.config.TrainConfig` asks for (views: 1 with ``augment=none``,
        ``cache_views`` with random or shift augmentation); ``trunk`` is :func:`trunk_fingerprint` of the frozen trunk,
        ``framework`` the backend's name and version (features differ across frameworks at float rounding)."""
        views = 1 if cfg.augment == "none" else cfg.cache_views
        pre = Preprocess.from_config(cfg)   # the resolved transform (``auto``: the weights entry's)
        return cls(trunk, framework=framework, arch=cfg.arch, image_size=cfg.image_size,
                   resize_backend=cfg.resize_backend,
                   augment=cfg.augment, views=views, seed=cfg.seed, batch_size=cfg.batch_size,
                   num_workers=cfg.num_workers, device=cfg.device, train_samples=train_samples,
                   val_samples=val_samples, root=root, log=log, normalize=pre.normalize, resize=pre.resize,
                   eval_resize=pre.eval_resize, augment_shift=cfg.augment_shift)

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
        spec = {"format": FORMAT_VERSION, "framework": self.framework, "device": self.device, "arch": self.arch,
                "trunk": self.trunk, "split": split, "image_size": self.image_size,
                "resize_backend": self.resize_backend, "samples": self._records[split]}
        if (self.normalize, self.resize) != ("imagenet", "crop"):  # (absent from the keys of the defaults: the
            spec.update(normalize=self.normalize, resize=self.resize)  # features cached before stay valid)
        if self.resize == "crop" and self.eval_resize != DEFAULT_EVAL_RESIZE:
            spec.update(eval_resize=self.eval_resize)
        if split == "train" and self.augment != "none":
            # a random view is whatever that epoch's pipeline drew: pin everything that drives the draws
            spec.update(augment=self.augment, view=int(view), data_seed=self.seed + view + 1,
                        batch_size=self.batch_size, num_workers=self.num_workers)
            if self.augment == "shift":   # (absent from random views' keys: those cached before stay valid)
                spec.update(augment_shift=self.augment_shift)
        else:
            spec.update(augment="none", view=0)
        return spec

    def key(self, split: str, view: int = 0) -> str:
        """sha256 hex key of ``(split, view)``."""
        return hashlib.sha256(json.dumps(self.spec(split, view), sort_keys=True).encode()).hexdigest()

    def _what(self, split: str, view: int) -> str:
        if split == "train" and self.augment != "none":
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
            train = f"train set not cached (augment={self.augment}, cache_views=0: fresh augmentation every epoch)"
        elif self.augment == "none":
            train = "train set cached (deterministic transform)"
        else:
            train = f"train set cached as {self.views} augmented view(s), epoch e trains on view (e-1) mod {self.views}"
        return f"Feature cache ({self.store.root}): {train}; val set cached"
