"""Shared fixtures and helpers. MindSpore's execution mode is process-global: tests that care set it explicitly.

``small_config`` and ``demo_images`` are what the training tests of both frameworks share (``from conftest import
small_config``: the tests folder is on ``sys.path`` under pytest's default import mode); ``SharedReference`` lets
the bug tests compare several ports against one torch reference.
"""
import gc
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest

from ms_transfer.mindspore_backend.context import freeze_imported_objects, set_context
from ms_transfer.core.callbacks import Callback, default_callbacks
from ms_transfer.core.config import TrainConfig
from ms_transfer.core.demo_data import make_demo_dataset


def own_cache(path: Path) -> Path:
    """``path`` made a test's own ``MS_TRANSFER_CACHE`` for the processes it starts (their compile cache, datasets and
    downloads apart from the user's), holding this machine's oneDNN decision: without it every training CLI started
    there measures MindSpore's convolution again before it trains (``ensure_probed``: 13 s wall, 17 s CPU each,
    AMD EPYC 2 cores, 2026-12-07; the first one per cache). ``msrun``'s ranks never probe; with it they use the
    measured decision, as a user's ranks do, not the rule. Call it before the test points ``MS_TRANSFER_CACHE`` at
    ``path``."""
    from ms_transfer.mindspore_backend import onednn

    onednn.ensure_probed(onednn.user_isa(), log=lambda line: None)   # measured once per machine, as the CLI would
    decision = onednn._cache_file(onednn.bundled_onednn())   # the user's cache: MS_TRANSFER_CACHE is not yet moved
    target = path / "onednn" / decision.name
    # no file when the CPU has no AVX-512 or the ISA is exported (nothing is probed then either)
    if decision.exists() and decision.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(decision, target)
    return path


def torch_checkpoint(tmp_path, arch, num_classes=1000, wrap=False, name="src.pth"):
    """``(path, state_dict)``: a seeded torchvision ``arch`` saved as ``.pth``, its BatchNorm statistics made
    non-trivial (so a round trip that drops or swaps them is seen); ``wrap``: as a DDP training checkpoint."""
    import torch

    from torch_reference import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(123)
    state = model.state_dict()
    if wrap:  # a DDP training checkpoint
        state = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / name
    torch.save(state, path)
    return path, model.state_dict()


def small_config(data_dir, out, **overrides) -> TrainConfig:
    """A small, fast training run: ResNet18 at 32 px, batch 4, one epoch, PYNATIVE, no pretrained weights."""
    base = dict(arch="resnet18", data_dir=str(data_dir), image_size=32, batch_size=4, epochs=1, lr=0.01,
                num_workers=1, mode="pynative", output_dir=str(out), pretrained=None, pretrained_url=None)
    base.update(overrides)
    return TrainConfig(**base).validate()


def live_parameters() -> int:
    """How many MindSpore parameters are alive in this process (after a collection)."""
    import mindspore as ms

    gc.collect()
    count = 0
    for obj in gc.get_objects():
        try:
            count += isinstance(obj, ms.Parameter)
        except ReferenceError:   # a weak proxy whose object is gone (MindSpore 2.10 leaves some in the collector)
            pass
    return count


class CrashAfterEpoch(Callback):
    """Simulates a crash (``KeyboardInterrupt``) once epoch ``epoch``'s checkpoints are written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state, epoch, metrics) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated crash after epoch {epoch}")


def crash_after(epoch: int, cfg: TrainConfig):
    """A run's default callbacks followed by :class:`CrashAfterEpoch` (``train(cfg, callbacks=...)``)."""
    return [*default_callbacks(cfg), CrashAfterEpoch(epoch)]


def train_digits(arch, tmp_path, out, framework, **overrides):
    """A short run of a seeds' network on 5% of the real 5k MNIST digits (Adam, 1 epoch), in ``framework``
    (``mindspore`` or ``torch``); returns the run summary."""
    base = dict(arch=arch, dataset="mnist5k", image_size=28, normalize="none", resize="exact", augment="none",
                optimizer="adam", lr=1e-3, batch_size=64, data_fraction=0.05, epochs=1)
    cfg = small_config(tmp_path / "unused", out, **{**base, **overrides})
    if framework == "torch":
        from torch_reference.train import train as torch_train
        return torch_train(cfg)
    from ms_transfer.train import train
    return train(cfg)


class SharedReference:
    """The torch side of one parity comparison -- the float64 reference and the float32 floors of the forward
    checks -- computed once, against which several MindSpore ports are compared (the correct one and each injected
    bug). What :func:`parity.compare_models` runs per port, without recomputing the torch side each time: that is
    ~90% of a forward comparison's time (ResNet50, 64 px, PYNATIVE: 1.3 s of MindSpore in 88 s, measured on 2
    shared cores) and does not depend on the port. The gradient checks' scale statistic uses the port's own ReLU
    masks, so their reference is the same for every port only when the ports share ``port``'s forward (a bug after
    the forward, as a scaled gradient): ``same_forward=True`` allows them, their masks taken from ``port`` once.

    ``torch_model`` holds the compared weights; ``port`` is a cell of the port's architecture (it only names the
    parameters here, and gives the masks with ``same_forward``); ``options`` as :func:`parity.compare_models`'s
    ``CompareOptions``.
    """

    def __init__(self, torch_model, port, inputs, targets: Optional[np.ndarray], checks: Sequence[str], mode: str,
                 options=None, same_forward: bool = False) -> None:
        from parity.engine.comparison import FORWARD_CHECKS, MASKED_CHECKS, CompareOptions, prepare

        allowed = FORWARD_CHECKS + (MASKED_CHECKS if same_forward else ())
        if not set(checks) <= set(allowed):
            raise ValueError(f"SharedReference takes the checks {allowed}, not {checks}")
        self.mode = mode
        set_context(mode, "CPU")
        self.comparison = c = prepare(torch_model, port, inputs, targets, options)
        mask_relus = (options or CompareOptions()).mask_relus
        self.checks = {}
        for check in checks:
            masks = c.port_masks(check) if check in MASKED_CHECKS and mask_relus else None
            self.checks[check] = c.reference_floors(check, masks)   # (reference, floors, scale reference or None)
        # the port side was only needed for its names and masks: each compare() brings its own net and weights (the
        # VGG bugs test: VGG11-BN's cell and its ported weights, 2 x 0.53 GB, are not kept beside each bug's); the
        # torch working copy, as the engine drops it before a port runs (VGG11-BN's float32 copy: 0.48 GiB)
        c.ms_side = c.ms_state = None
        c.reference.working.release()

    def compare(self, net, ms_state: Dict[str, np.ndarray]) -> list:
        """The rows (``CheckResult``) of the port ``net`` with weights ``ms_state`` (MindSpore names), as
        :func:`parity.compare_models` reports them."""
        from parity.engine.comparison import run_port
        from parity.engine.mindspore_side import MindSporeSide
        from parity.engine.tolerance import compare_to_floor, failed

        set_context(self.mode, "CPU")   # process-global: another test may have changed it
        c = self.comparison
        side = MindSporeSide(net, ms_state, c.match.ms_to_torch, c.loss)
        rows = []
        for check, (ref, floors, scale_ref) in self.checks.items():
            got, error = run_port(c.runners[check], side, c.xs)
            side.release_graphs()   # as the engine does after each check: the port's weights are not kept after it
            rows += [failed(name, error) if got is None else
                     compare_to_floor(name, got[name], ref[name], floors[name],
                                      scale_ref=None if scale_ref is None else scale_ref[name])
                     for name in ref]
        return rows


@pytest.fixture(scope="session")
def demo_images(tmp_path_factory):
    """``make(n_train, n_val, corrupt=False)``: a generated two-class ImageFolder (48 px images, seed 0), made once
    per arguments; ``corrupt`` adds an unreadable ``train/synthetic_circles/corrupt.jpg`` that must be skipped."""
    made = {}

    def make(n_train: int = 6, n_val: int = 3, corrupt: bool = False):
        key = (n_train, n_val, corrupt)
        if key not in made:
            root = tmp_path_factory.mktemp("data") / "demo"
            make_demo_dataset(root, n_train_per_class=n_train, n_val_per_class=n_val, image_size=48, seed=0)
            if corrupt:
                (root / "train" / "synthetic_circles" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
            made[key] = root
        return made[key]
    return make


@pytest.fixture(scope="session")
def resnet18_sensitivity_report():
    """``python -m parity --sensitivity`` on ResNet18 at the README's detection-power settings (64 px, batch 4, 10
    classes, PYNATIVE), the forward and gradient checks: computed once for the detection-power tests of
    ``test_parity.py`` and ``test_parity_floor.py`` (the forward checks' rows, sensitivity included, are the same
    numbers with the gradient checks as without them: compared row for row; ~25 s)."""
    from parity import ParityConfig, run_parity

    return run_parity(ParityConfig(arch="resnet18", mode="pynative", batch=4, image_size=64, num_classes=10,
                                   checks=("eval_logits", "train_forward", "grads_train_bn", "grads_eval_bn"),
                                   sensitivity=True))


@pytest.fixture(params=["graph", "pynative"])
def ms_mode(request):
    """Run the test in both MindSpore execution modes."""
    set_context(request.param, "CPU")
    yield request.param
    set_context("pynative", "CPU")


#: the test files whose tests hold the most memory at once (ResNet50 localisation in both forms, the data-parallel
#: launchers' rank processes, reference bundles, the study's two frameworks): under ``pytest -n 2 --dist loadgroup``
#: (make test) they run one after another on one worker, never beside each other
HEAVY_FILES = ("test_parity_localize.py", "test_parity_graph_localize.py", "test_data_parallel.py",
               "test_parity_reference.py", "test_study.py")


#: test files that share another file's xdist group, so that a session fixture both use is made once, on one worker
#: (:func:`resnet18_sensitivity_report`)
SHARED_GROUP = {"test_parity_floor.py": "test_parity.py"}


#: tests whose cases build their own models (no module fixture): dealt alternately to two groups by architecture (an
#: arch's two modes stay together: they share one torch side), so the parity tests' depth cases (wide_resnet50_2 alone
#: 62-74 s per mode) are shared by both workers
SPREAD = ("test_every_depth_passes_at_small_size",)


#: the longest xdist groups, longest first: ``make test`` (``--no-loadscope-reorder``) deals them before the rest, so
#: no long group starts last while the other worker has nothing left (longest-processing-time-first). Wall seconds of
#: each group in the quiet fresh-clone CI run of 2681ccd (two workers): heavy ~395, test_train.py 182,
#: test_parity.py-0 149 (wide_resnet50_2 both modes 90), test_vgg.py ~135, test_parity.py ~100, test_parity.py-1 86,
#: test_seed_networks.py 84; every other file 65 s or less, in collection order after these
LONGEST_GROUPS = ("heavy", "test_train.py", "test_parity.py-0", "test_vgg.py", "test_parity.py", "test_parity.py-1",
                  "test_seed_networks.py")


@pytest.hookimpl(tryfirst=True)   # before xdist's own, which reads the marks into the node ids it schedules by
def pytest_collection_modifyitems(config, items):
    """One xdist group per test file (a file's module-scoped fixtures are built once, on one worker), the
    :data:`HEAVY_FILES` sharing one group, the cases of :data:`SPREAD` dealt to two by architecture; the
    :data:`LONGEST_GROUPS` first, in that order (a serial run too). Without xdist the marks do nothing."""
    dealt: Dict[str, str] = {}
    groups: Dict[str, str] = {}
    for item in items:
        if "\\x" in item.nodeid:   # a bytes parameter in the id: xdist's workers must collect identical ids
            raise pytest.UsageError(f"{item.nodeid[:120]}...: a test id holds raw bytes (their content may differ "
                                    "per process, e.g. a zip's timestamp); give the parametrize explicit ids=")
        name = item.path.name
        if item.originalname in SPREAD:
            arch = item.callspec.params["arch"]
            group = dealt.setdefault(arch, f"{name}-{len(dealt) % 2}")
        else:
            group = "heavy" if name in HEAVY_FILES else SHARED_GROUP.get(name, name)
        item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = group
    rank = {group: i for i, group in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid], len(rank)))   # stable: collection order otherwise


def pytest_collection_finish(session):
    """Every test module is imported, no fixture built yet: freeze what the imports made (MindSpore collects all
    garbage before each graph it compiles; see :func:`freeze_imported_objects`)."""
    freeze_imported_objects()


@pytest.fixture(autouse=True, scope="module")
def _stop_forkserver():
    """After each test file: stop the torch DataLoader workers' forkserver if a test started one
    (torch_reference/data.py): it holds its own torch, 0.69 GB resident, for as long as the process that started it
    lives, in each xdist worker; the next file that needs it starts it again (~2.4 s)."""
    yield
    from multiprocessing import forkserver

    forkserver._forkserver._stop()   # private, what CPython's own tests call; nothing when none is running


@pytest.fixture(autouse=True)
def _return_freed_memory():
    """After each test: collect its reference cycles, then give the C heap's free pages back to the system.

    Every MindSpore ``Parameter`` is in a cycle (its ``ParamInfo`` points back to it), so a test's dropped cells
    and parameters stay until a full collection: the next test started beside them (the VGG16 round-trip test left
    107 parameters, 0.9 GiB; collected once per file before, the cats-vs-dogs test began 3 GiB above a fresh
    process). The imports are frozen out of the collector (:func:`pytest_collection_finish`), so a collection
    walks only what the tests made: ~1 ms after the imports. glibc keeps freed heap memory in the process
    (parity/engine/memory.py: 0.76 -> 1.60 GiB for five torch gradient runs that kept nothing), so without the
    trim a pytest process's resident memory is the sum of its tests' high-water marks."""
    yield
    from parity.engine.memory import release_freed_memory
    gc.collect()
    release_freed_memory()


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Downloads and trunk-feature caches go to a fresh folder per test, never to ~/.cache/ms_transfer."""
    import ms_transfer.core.recipe as recipe
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(recipe, "CACHE_DIR", cache)
    yield cache
    shutil.rmtree(cache, ignore_errors=True)   # feature caches reach 100s of MB; nothing in them explains a failure


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def serve_files():
    """Start a loopback HTTP server for ``{path: bytes | callable(handler)}``; returns ``(base_url, hits)``.

    A callable route writes its own response (e.g. a truncated body). No internet needed; servers stop at
    the end of the session.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers = []

    def start(routes):
        hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                body = routes.get(self.path)
                if callable(body):
                    body(self)
                elif body is None:
                    self.send_error(404)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", hits

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
