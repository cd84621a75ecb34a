"""Loading weights into MindSpore models (with a report of missing / unexpected / mismatched keys) and the
MindSpore run checkpoints (``best.ckpt`` / ``last.ckpt``). Models never import this module: the factory
(:mod:`ms_transfer.models.factory`) and the backend call it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn

from . import context  # noqa: F401  (its import applies the oneDNN cap: ms_transfer.mindspore_backend.context)
from ..core import naming
from ..core.checkpoint_io import OPTIMIZER_PREFIX, CheckpointError, PathLike, read_weights, write_weights
from ..core.convert import convert_weights, excluded_names, into_arch
# both frameworks' weight files, for pretrained weights of either (neither module loads its framework)
from . import ckpt_format  # noqa: F401
from .weights import copy_into
from torch_reference import pth_format  # noqa: F401


@dataclass
class LoadReport:
    """Outcome of loading a state dict into a network."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)        # in the model, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)     # in the checkpoint, not in the model
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, ckpt, model shape)
    notes: List[str] = field(default_factory=list)
    excluded: List[str] = field(default_factory=list)       # in both, left out on purpose (pretrained_exclude)

    @property
    def ok(self) -> bool:
        """True when every model parameter was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, unexpected "
                 f"{len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
                 + (f", excluded {len(self.excluded)}" if self.excluded else "")]
        if self.excluded:
            lines.append("  not loaded (pretrained_exclude; left at init): " + ", ".join(self.excluded[:8])
                         + (" ..." if len(self.excluded) > 8 else ""))
        if self.missing:
            lines.append("  missing (left at init): " + ", ".join(self.missing[:6]))
        if self.unexpected:
            lines.append("  unexpected (ignored): " + ", ".join(self.unexpected[:6]))
        lines += [f"  shape mismatch: {n} checkpoint {c} vs model {m}" for n, c, m in self.mismatched[:6]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _likely_cause(report: LoadReport, model_names: List[str], arch: Optional[str] = None) -> str:
    head = set(naming.head_names("ms_transfer", arch))
    bad = {n for n, _, _ in report.mismatched} | set(report.missing) | set(report.unexpected)
    if bad and bad <= head:
        return ("the classifier head differs (other class count): build the model with the checkpoint's "
                "num_classes, or load with strict=False / convert with --drop-head and train a new head")
    try:
        src_arch = naming.detect_arch({n: () for n in report.unexpected + report.loaded})
        model_arch = naming.detect_arch({n: () for n in model_names})
        if src_arch != model_arch:
            return f"wrong depth: the checkpoint looks like {src_arch}, the model is {model_arch}"
    except ValueError:
        pass
    if report.unexpected:
        return "other parameter naming: convert it first (python -m ms_transfer.core.convert SRC DST.ckpt)"
    return "the checkpoint was saved from a different architecture"


def load_state_into(net: nn.Cell, state: Mapping[str, np.ndarray], strict: bool = True) -> LoadReport:
    """Copy ``state`` (names as in ``net``) into ``net``'s parameters and return a :class:`LoadReport`.

    With ``strict`` any missing, unexpected or shape-mismatched key raises :class:`CheckpointError`
    naming the first offending keys and the likely cause, and **nothing** is modified.
    """
    params = {p.name: p for p in net.get_parameters()}
    report = LoadReport()
    report.unexpected = [k for k in state if k not in params]
    report.missing = [k for k in params if k not in state]
    for name, value in state.items():
        if name in params and tuple(value.shape) != tuple(params[name].shape):
            report.mismatched.append((name, tuple(value.shape), tuple(params[name].shape)))
    if strict and not report.ok:
        first = [n for n, _, _ in report.mismatched] + report.missing + report.unexpected
        raise CheckpointError(f"checkpoint does not fit the model ({', '.join(first[:4])} ...): {report}\n"
                              f"likely cause: {_likely_cause(report, list(params), getattr(net, 'arch', None))}")
    mismatched = {n for n, _, _ in report.mismatched}
    for name, value in state.items():
        if name in params and name not in mismatched:
            copy_into(params[name], value)
            report.loaded.append(name)
    return report


def load_pretrained(net: nn.Cell, path: PathLike, strict: bool = False, verbose: bool = True,
                    exclude: Sequence[str] = ()) -> LoadReport:
    """Load a ``.ckpt`` / ``.pth`` / ``.safetensors`` file (any naming scheme) into ``net``.

    The trunk must match exactly (a different depth is an error naming both). The head is loaded only if
    its class count matches ``net``'s; otherwise it is left at its fresh initialisation and reported
    (transfer learning). ``strict=True`` also demands the head. Tensors whose (this project's) name matches an
    ``exclude`` glob are not loaded and are listed as excluded (Keras ``load_weights(by_name=True)`` with renamed
    layers: e.g. ``exclude=["fc.*"]`` gives a new head even when the class counts agree).
    """
    arch = getattr(net, "arch", None)
    if arch is None:
        raise CheckpointError(f"{type(net).__name__} records no arch; build it with ms_transfer.models.create_model")
    state, _, conversion = convert_weights(read_weights(path), "ms_transfer", num_classes=net.num_classes)
    state, adapted = into_arch(state, conversion.arch, arch, path)
    excluded = excluded_names(list(state), exclude, path)
    state = {k: v for k, v in state.items() if k not in excluded}
    report = load_state_into(net, state, strict=strict and not excluded)
    report.excluded = excluded
    report.missing = [k for k in report.missing if k not in excluded]
    report.notes.append(f"{path}: {conversion}")
    if adapted:
        report.notes.append(adapted)
    if verbose:
        print(f"Loaded {path}\n{report}")
    return report




def save_run_checkpoint(path: PathLike, net: nn.Cell, meta: dict, optimizer: Optional[nn.Cell] = None) -> None:
    """Atomically write ``net``'s parameters (+ ``optimizer`` state, prefixed) and ``meta`` to a ``.ckpt``.

    ``meta`` must hold ``arch`` and ``classes`` so that :func:`load_run_checkpoint` can rebuild the model.
    """
    missing = [k for k in ("arch", "classes") if k not in meta]
    if missing:
        raise ValueError(f"run checkpoint metadata needs {missing}")
    state = {p.name: p.asnumpy() for p in net.get_parameters()}
    if optimizer is not None:
        own = {id(p) for p in net.get_parameters()}
        for name, p in optimizer.parameters_and_names():
            if id(p) not in own:
                state[OPTIMIZER_PREFIX + name] = p.asnumpy()
    write_weights(path, state, {"naming": "ms_transfer", "num_classes": len(meta["classes"]), **meta})


#: optimizer entries derived from the config, rebuilt rather than restored: the per-step learning-rate lists
#: are as long as the stage, which ``--resume --epochs N`` extends (restoring the old list made MindSpore's
#: ``Gather`` index past its end: "input_indices should be in the range [0, 5), but got 5")
DERIVED_OPTIMIZER_ENTRIES = ("learning_rate",)


def load_optimizer_state(optimizer: nn.Cell, net: nn.Cell, state: Mapping[str, np.ndarray]) -> None:
    """Restore optimizer entries written by :func:`save_run_checkpoint` (strict: all must be present), except
    :data:`DERIVED_OPTIMIZER_ENTRIES`, which the optimizer already holds for the current config."""
    own = {id(p) for p in net.get_parameters()}
    for name, p in optimizer.parameters_and_names():
        if id(p) in own or name.split(".")[0] in DERIVED_OPTIMIZER_ENTRIES:
            continue
        key = OPTIMIZER_PREFIX + name
        if key not in state:
            raise CheckpointError(f"optimizer state {key!r} missing from the checkpoint; the run's optimizer "
                                  "settings changed since it was saved - start a new run instead of --resume")
        p.set_data(Tensor(np.asarray(state[key]), dtype=p.dtype))
