"""The port's own files, written and proven: its checkpoint (``.ckpt`` / ``.safetensors``) and its MindIR.

:func:`port_checkpoint` writes the *torch* weights renamed through the name map -- never the cell's weights, which
the optimizer check has moved by the time a comparison ends -- to a staging file beside ``out`` with the project's
checkpoint writers (atomic: temp file + ``os.replace``), reads that file back from disk and runs every check with
it as the port's weights (``ms_state`` = the file). Only when every check passes is the staging file renamed to
``out`` (``os.replace`` again: the bytes that ship are the bytes that were checked); otherwise it is removed and
whatever was at ``out`` before is left as it was.

:func:`stage_checkpoint` / :func:`stage_mindir` and :func:`check_mindir` are the steps, for callers that check one
staged file in several MindSpore modes before committing it (``python -m parity --torch-model ... --mode both``,
:mod:`parity.suite.own_model`). Nothing here knows an architecture.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ms_transfer.core.checkpoint_io import PathLike, file_format, read_weights, write_weights

from .comparison import LABELS, CompareOptions, Inputs, port_weights, prepare, run_port
from .loss import output_names
from .report import CheckResult, ParityReport
from .tolerance import compare_to_floor, failed
from .weight_map import IGNORED_TORCH, NameMap

#: extensions a port checkpoint may have (MindSpore loads both: ``mindspore.load_checkpoint(path, net,
#: format="safetensors")`` for the second)
CHECKPOINT_EXTS = (".ckpt", ".safetensors")
MINDIR_LABEL = "MindIR eval outputs"


@dataclass
class StagedFile:
    """A file written beside its destination, waiting for its checks: :meth:`commit` renames it to ``path``,
    :meth:`discard` removes it (``path`` is left as it was)."""

    path: Path                     # the destination
    staging: Path                  # where it is until committed
    state: Dict[str, np.ndarray] = field(default_factory=dict)    # a checkpoint's tensors, re-read from disk
    left_out_torch: List[str] = field(default_factory=list)        # torch tensors not in the file
    left_out_ms: List[str] = field(default_factory=list)           # cell parameters not in the file
    committed: bool = False

    def commit(self) -> Path:
        os.replace(self.staging, self.path)
        self.committed = True
        return self.path

    def discard(self) -> None:
        if self.staging.exists():
            self.staging.unlink()

    def load_report(self) -> str:
        """What the file leaves out, on both sides (one line each)."""
        why = {s: f"torch's {s} buffer; MindSpore has no counterpart" for s in IGNORED_TORCH}
        torch_side = ", ".join(f"{n} ({why.get(n.rpartition('.')[2], 'no MindSpore counterpart')})"
                               for n in self.left_out_torch) or "nothing"
        ms_side = ", ".join(self.left_out_ms) or "nothing"
        return (f"{len(self.state)} tensors in {self.path.name}; left out of it: torch {torch_side}; "
                f"MindSpore parameters without a torch tensor: {ms_side}")


def _staging(out: Path) -> Path:
    """A new, unused name beside ``out`` with its extension (MindSpore's writers append theirs otherwise)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".staged" + out.suffix, dir=out.parent)
    os.close(fd)
    return Path(tmp)


def stage_checkpoint(torch_module, ms_cell, out: PathLike, name_map: NameMap = None) -> StagedFile:
    """Write the torch module's weights, renamed for ``ms_cell`` through ``name_map`` (as
    :func:`parity.compare_models` resolves it), to a staging file beside ``out`` and read it back from disk.

    Raises :class:`~parity.engine.weight_map.NameMapError` for names that do not match (nothing is written), and
    ``ValueError`` for an extension other than :data:`CHECKPOINT_EXTS`.
    """
    import ms_transfer.mindspore_backend.ckpt_format  # noqa: F401  (registers the .ckpt writer and reader)

    from .torch_side import numpy_state

    out = Path(out)
    if out.suffix.lower() not in CHECKPOINT_EXTS:
        raise ValueError(f"{out}: a port checkpoint is {' or '.join(CHECKPOINT_EXTS)} (MindSpore's formats), "
                         f"not {out.suffix or 'a file without extension'!r}")
    file_format(out)
    torch_state = numpy_state(torch_module)
    ms_params = {p.name: p.shape for p in ms_cell.get_parameters()}
    ported, match = port_weights(torch_state, ms_params, name_map)
    staged = StagedFile(out, _staging(out), left_out_torch=[k for k in torch_state if k not in match.torch_to_ms],
                        left_out_ms=[m for m in ms_params if m not in ported])
    try:
        write_weights(staged.staging, ported)
        staged.state = dict(read_weights(staged.staging).state)
    except BaseException:
        staged.discard()
        raise
    return staged


def port_checkpoint(torch_module, ms_cell, out: PathLike, inputs: Inputs, targets: Optional[np.ndarray] = None,
                    options: Optional[CompareOptions] = None, **overrides) -> ParityReport:
    """Write the port's checkpoint to ``out`` (``.ckpt`` or ``.safetensors``) and prove it: every check of
    :func:`parity.compare_models` runs with the file, read back from disk, as the port's weights, in the current
    MindSpore mode; ``out`` is written only when they all pass (see the module docstring).

    Arguments as :func:`parity.compare_models` (``name_map=...`` and the other options as keywords). Returns its
    report; ``report.names["checkpoint"]`` holds the path, whether it was written and what the file leaves out.
    """
    from .comparison import compare_models

    o = (options or CompareOptions()).with_overrides(**overrides)
    staged = stage_checkpoint(torch_module, ms_cell, out, o.name_map)
    try:
        report = compare_models(torch_module, ms_cell, inputs, targets, o, ms_state=staged.state)
        if report.passed:
            staged.commit()
    finally:
        staged.discard()
    report.names["checkpoint"] = checkpoint_summary(staged)
    return report


def checkpoint_summary(staged: StagedFile) -> dict:
    """The JSON-ready account of a staged checkpoint (for a report's ``names``)."""
    return {"path": str(staged.path), "written": staged.committed, "tensors": len(staged.state),
            "left_out_torch": staged.left_out_torch, "left_out_ms": staged.left_out_ms}


# --- MindIR ---------------------------------------------------------------------------------------------------


class MindIRSide:
    """A MindIR file loaded back (``mindspore.load`` + ``nn.GraphCell``): the eval outputs, as the port's side of
    the ``eval_logits`` check computes them."""

    def __init__(self, path: PathLike) -> None:
        import mindspore as ms
        from mindspore import nn

        self.cell = nn.GraphCell(ms.load(str(path)))

    def eval_outputs(self, inputs: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
        from .mindspore_side import MindSporeSide, flatten_outputs

        outs = flatten_outputs(self.cell(*[MindSporeSide.tensor(x) for x in inputs]))
        return dict(zip(output_names(len(outs)), (o.asnumpy() for o in outs)))


def stage_mindir(ms_cell, state: Mapping[str, np.ndarray], inputs: Inputs, out: PathLike) -> StagedFile:
    """Export ``ms_cell`` with weights ``state`` (MindSpore names), in eval mode, for ``inputs``' shapes and dtypes
    (``mindspore.export(..., file_format='MINDIR')``) to a staging file beside ``out``."""
    import mindspore as ms

    from .comparison import _as_inputs
    from .mindspore_side import MindSporeSide, load_weights

    out = Path(out)
    if out.suffix.lower() != ".mindir":
        raise ValueError(f"{out}: a MindIR file ends in .mindir (mindspore.export appends it otherwise)")
    load_weights(ms_cell, state)
    ms_cell.set_train(False)
    staged = StagedFile(out, _staging(out))
    try:
        ms.export(ms_cell, *[MindSporeSide.tensor(x) for x in _as_inputs(inputs)],
                  file_name=str(staged.staging), file_format="MINDIR")
    except BaseException:
        staged.discard()
        raise
    return staged


def check_mindir(path: PathLike, torch_module, ms_cell, inputs: Inputs, targets: Optional[np.ndarray] = None,
                 options: Optional[CompareOptions] = None, **overrides) -> CheckResult:
    """The eval outputs of the MindIR file at ``path``, loaded back, against the torch float64 reference under the
    same floor and rule as the ``eval outputs`` row (``ms_cell`` names the parameters for the name map; it does not
    run). A file that does not load or run is a failed row."""
    o = (options or CompareOptions()).with_overrides(**overrides)
    c = prepare(torch_module, ms_cell, inputs, targets, o)
    ref, floors, _ = c.reference_floors("eval_logits")
    try:
        side = MindIRSide(path)
    except Exception as exc:  # any failure to load is the file failing its check
        return failed(MINDIR_LABEL, f"MindSpore failed to load it: {str(exc).splitlines()[0][:200]}")
    ms_rows, error = run_port(c.runners["eval_logits"], side, c.xs)
    if ms_rows is None:
        return failed(MINDIR_LABEL, error)
    label = LABELS["eval_logits"][0]
    return compare_to_floor(MINDIR_LABEL, ms_rows[label], ref[label], floors[label])
