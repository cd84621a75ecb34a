"""Training-step parity: N optimizer steps of both frameworks' *real trainers* on the same fixed batches.

``ms_transfer.mindspore_backend.backend.MindSporeBackend`` and ``torch_reference.backend.TorchBackend`` (the backends of
the one training loop) are built
from one :class:`~ms_transfer.core.config.TrainConfig` per regime, start from the same weights and see the same
batches (no random augmentation). Compared after ``N`` steps, against the float64 torch reference with the
noise-floor rule of :mod:`parity.engine.tolerance` (floor = jittered torch float32 runs of the same trainer):

* the loss of every step (computed before that step's update),
* the update of every parameter (after - before; frozen ones must stay exactly 0),
* the update of every BatchNorm running statistic.

Updates rather than values are compared because the jitter of the floor samples (``2^-17`` relative, see
:mod:`parity.engine.tolerance`) would otherwise dominate the floor and hide any update-rule mistake smaller than it.

Regimes: ``finetune`` (all trainable, batch-statistics BN), ``fixed_feature`` (trunk frozen, its BNs in eval
mode, only the head module trains: ``fc``, a VGG's ``classifier``), ``partial`` (ResNets: ``layer4`` + ``fc``
trainable, ``fc`` at 10x the LR) and ``last_layer_adam`` (cats vs dogs with VGG16's regime: only the class layer, ``fc`` or
``classifier.6``, trains, with Adam at its defaults). The first three use momentum SGD with weight decay and a
cosine per-step schedule, so the momentum convention, which tensors are decayed, the LR multipliers and the
schedule all reach the compared numbers. :func:`regimes_for` picks the regimes that exist for an arch.

Dropout is switched off in both trainers (``p = 0``: the layers pass their input through): the frameworks draw
different masks, so an active dropout would make the two runs differ by O(1). The dropout layers themselves are
checked by ``python -m parity`` without ``--train-steps`` (:mod:`parity.engine.dropout`).

Hyper-parameters, measured on ResNet18 at 64 px with 3 steps:

* ``lr = 1e-3``: train-mode BN over tiny batches makes a few steps chaotic, a ReLU-mask flip early on grows
  with every update; at lr 1e-2 (batch 2) the float32 floor of the step-3 loss was 4% and no realistic bug
  could stand out; at 1e-3 (batch 4) it is ~1e-5 and correct ports stay at ratio <= 1.
* ``weight_decay = 2e-2`` (a strong value for finetuning, chosen for the check): decay adds ``lr * wd * gamma``
  to a BN gamma's update, next to ``lr * grad``. A decay applied to the wrong tensors (MindSpore's default
  ``nn.Momentum`` skipping gamma/beta) gave, over seeds 0-3 with the seeded numpy weights of ``parity.suite.problems``:
  wd 1e-4 -> L2 ratio ~3 (below the bound 4); wd 5e-3 -> L2 ratio 15-21, scale ratio 2.5-4.9; wd 2e-2 -> L2 ratio
  17-25, scale ratio 30-100 (the scale statistic measures exactly that systematic missing term). Correct ports
  stay at ratio <= 0.95 with 2e-2 on the same seeds.
* batch 4 (the CLI's default with ``--train-steps``): batch 2 leaves 8 values per channel for the stage-4
  BNs at 64 px, which made even plain float32 runs hit mask flips.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ms_transfer.core.config import TrainConfig
from ms_transfer.core.naming import head_names
from ms_transfer.core.recipe import plan_stages, stage_lrs

if TYPE_CHECKING:
    from .problems import Problem

#: regime -> TrainConfig overrides
REGIMES: Mapping[str, Dict] = {
    "finetune": dict(strategy="finetune"),
    "fixed_feature": dict(strategy="fixed_feature"),
    "partial": dict(strategy="partial", partial_from="layer4", lr_mult={"fc.*": 10.0}),
    # cats vs dogs with VGG16: everything frozen but the (new) class layer, torch.optim.Adam's defaults; the unfreeze pattern is
    # the arch's class layer (filled in by regime_config)
    "last_layer_adam": dict(strategy="finetune", freeze=["*"], optimizer="adam", lr=1e-3, weight_decay=0.0,
                            schedule="constant"),
}
TRAIN_LR = 1e-3
TRAIN_MOMENTUM = 0.9
TRAIN_WEIGHT_DECAY = 2e-2
TRAIN_BATCH = 4

Batches = List[Tuple[np.ndarray, np.ndarray]]
Result = Dict[str, Dict[str, np.ndarray]]


def regime_config(regime: str, arch: str, batch: int, image_size: int, seed: int, padding: str = "torch"
                  ) -> TrainConfig:
    """The one config both trainers get for ``regime``."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {', '.join(REGIMES)}")
    values = {**dict(optimizer="momentum", lr=TRAIN_LR, momentum=TRAIN_MOMENTUM, weight_decay=TRAIN_WEIGHT_DECAY,
                     schedule="cosine"), **REGIMES[regime]}
    if regime == "last_layer_adam":
        values["unfreeze"] = [head_names("ms_transfer", arch)[0].rsplit(".", 1)[0] + ".*"]
    return TrainConfig(arch=arch, epochs=1, batch_size=batch, image_size=image_size, seed=seed, pretrained=None,
                       padding=padding, compile_cache="off", **values).validate(source=f"regime {regime}")


def regimes_for(arch: str) -> List[str]:
    """The default regimes of ``arch``: ``partial`` needs ResNet stages, ``last_layer_adam`` is cats vs dogs' (VGG16)."""
    if arch.startswith("resnet"):
        return ["finetune", "fixed_feature", "partial"]
    return ["finetune", "fixed_feature", "last_layer_adam"]


def without_dropout_torch(model):
    """Every torch dropout layer at ``p = 0`` (identity in train mode too)."""
    from torch_reference._torch import torch
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return model


def without_dropout_ms(net):
    """Every MindSpore ``nn.Dropout`` at ``p = 0`` (its construct then returns the input; read when compiling)."""
    from mindspore import nn
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Dropout):
            cell.p = 0.0
    return net


def fixed_batches(problem: Problem, steps: int, seed: int) -> Batches:
    """``steps`` seeded batches shaped like the problem's (the first one is the problem's own)."""
    rng = np.random.RandomState(seed + 7)
    batches = [(problem.x, problem.y)]
    for _ in range(steps - 1):
        x = rng.standard_normal(problem.x.shape).astype(np.float32)
        batches.append((x, rng.randint(0, problem.num_classes, size=len(problem.y)).astype(np.int64)))
    return batches


def update(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """``after - before`` in ``after``'s dtype; a tensor the steps left unchanged (a frozen one) as a read-only
    broadcast zero, which holds no memory. A regime that trains only VGG11's class layer leaves its 25,088 x 4,096
    layer unchanged: the float64 reference and the four float32 floor samples kept 2.8 GB of zeros, 4.7 GB above
    the test process's memory at that test's peak before (issue 22)."""
    if np.array_equal(after, before):
        return np.broadcast_to(np.zeros((), after.dtype), after.shape)
    return after - np.asarray(before, after.dtype)


def _train_step(trainer, model, x, y) -> float:
    return trainer.train_step(x, y)[0]


def torch_training(cfg: TrainConfig, state: Mapping[str, np.ndarray], batches: Batches, num_classes: int,
                   dtype: str, step: Optional[Callable] = None) -> Result:
    """``len(batches)`` steps of ``TorchBackend`` in ``dtype`` (float64: the reference; float32: a floor sample).
    ``step(trainer, model, x, y)`` takes one optimizer step and returns its loss (default: the trainer's own
    ``train_step``; ``parity.suite.data_parallel`` passes its per-rank-slice step)."""
    from torch_reference._torch import torch

    from torch_reference.backend import TorchBackend
    from torch_reference.models import build_model, load_numpy_state

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = without_dropout_torch(build_model(cfg.arch, num_classes, cfg.padding).to(torch_dtype))
    load_numpy_state(model, state)
    trainer = TorchBackend(cfg).adopt(model, cfg.arch, cfg.padding)
    stage = plan_stages(cfg)[0]
    trainer.enter_stage(stage, stage_lrs(cfg, stage, len(batches)))
    step = step or _train_step
    losses = [step(trainer, model, torch.from_numpy(x).to(torch_dtype), torch.from_numpy(y)) for x, y in batches]
    # the updates are taken against ``state``, which the model was loaded from (its cast to float64 is exact): no copy
    # of the model before the steps
    after = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = {k for k, _ in model.named_parameters()}
    return {"losses": {"": np.array(losses)},
            "params": {k: update(after[k], state[k]) for k in params},
            "stats": {k: update(after[k], state[k]) for k in after if k.endswith(("running_mean", "running_var"))}}


# --- training bugs, injected into the MindSpore side ------------------------------------------------------

def _momentum_convention(cfg: TrainConfig) -> TrainConfig:
    """Momentum given as ``1 - momentum`` (BatchNorm's convention mixed up with the optimizer's)."""
    return _with(cfg, momentum=1.0 - cfg.momentum)


def _head_lr_ignored(cfg: TrainConfig) -> TrainConfig:
    """The per-pattern LR multipliers (``fc.*`` x10) dropped."""
    return _with(cfg, lr_mult={})


def _with(cfg: TrainConfig, **changes) -> TrainConfig:
    values = cfg.to_dict()
    values.update(changes)
    return TrainConfig(**values)


def _bn_weight_decay_skipped(trainer) -> None:
    """MindSpore's default for ``weight_decay=<float>``: every ``gamma``/``beta`` is skipped (torch decays all)."""
    from mindspore import nn

    from ms_transfer.mindspore_backend.optim import lr_groups
    cfg = trainer.cfg
    base = trainer.lrs
    groups = []
    for mult, params in lr_groups(trainer.model.trainable_params(), cfg.lr_mult):
        bn = [p for p in params if p.name.endswith(("gamma", "beta"))]
        rest = [p for p in params if not p.name.endswith(("gamma", "beta"))]
        groups += [{"params": ps, "lr": [mult * v for v in base], "weight_decay": wd}
                   for ps, wd in ((rest, cfg.weight_decay), (bn, 0.0)) if ps]
    trainer.replace_optimizer(nn.Momentum(groups, learning_rate=base, momentum=cfg.momentum))


def _frozen_bn_updates(trainer) -> None:
    """Frozen BatchNorms left in training mode: batch statistics in the forward, running stats drift."""
    from mindspore import nn
    for _, cell in trainer.model.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.use_batch_statistics = None


def _adam_tf_epsilon(trainer) -> None:
    """MindSpore's own ``nn.Adam`` in place of torch's rule: eps added to the uncorrected ``sqrt(v)`` (TensorFlow's
    form; see ms_transfer.mindspore_backend.optim). Seen in the ``last_layer_adam`` regime."""
    from mindspore import nn

    from ms_transfer.mindspore_backend.optim import lr_groups
    base = trainer.lrs
    groups = [{"params": ps, "lr": [mult * v for v in base], "weight_decay": trainer.cfg.weight_decay}
              for mult, ps in lr_groups(trainer.model.trainable_params(), trainer.cfg.lr_mult)]
    trainer.replace_optimizer(nn.Adam(groups, learning_rate=base))


#: name -> (config mutation before the trainer is built, trainer mutation after the stage is entered)
TRAIN_BUGS: Mapping[str, Tuple[Optional[Callable], Optional[Callable]]] = {
    "momentum_convention": (_momentum_convention, None),
    "bn_weight_decay_skipped": (None, _bn_weight_decay_skipped),
    "frozen_bn_updates": (None, _frozen_bn_updates),
    "head_lr_ignored": (_head_lr_ignored, None),
    "adam_tf_epsilon": (None, _adam_tf_epsilon),
}


def mindspore_training(cfg: TrainConfig, state: Mapping[str, np.ndarray], batches: Batches, num_classes: int,
                       inject: Optional[str] = None) -> Result:
    """``len(batches)`` steps of ``MindSporeBackend`` (current MindSpore mode/device), torchvision names."""
    import mindspore as ms

    from ms_transfer.mindspore_backend.backend import MindSporeBackend
    from ms_transfer.mindspore_backend.checkpoint import load_state_into
    from ms_transfer.mindspore_backend.context import release_compiled_graphs
    from ms_transfer.core import naming
    from ms_transfer.models import build_model

    before_build, after_enter = TRAIN_BUGS[inject] if inject else (None, None)
    if before_build:
        cfg = before_build(cfg)
    net = without_dropout_ms(build_model(cfg.arch, num_classes, cfg.padding))
    load_state_into(net, state, strict=True)
    trainer = MindSporeBackend(cfg).adopt(net)
    stage = plan_stages(cfg)[0]
    trainer.enter_stage(stage, stage_lrs(cfg, stage, len(batches)))
    if after_enter:
        after_enter(trainer)
    losses = [trainer.train_step(ms.Tensor(x), ms.Tensor(y.astype(np.int32)))[0] for x, y in batches]
    # against ``state``, loaded into every parameter (strict) as it is: float32 to float32
    params = {p.name: update(p.asnumpy(), state[p.name]) for p in net.get_parameters()}
    # MindSpore's graph executors keep the last compiled step's parameters until the next compile: let go of them
    # with the step's graphs (VGG11's training-step parity held 0.48 GiB after its run)
    release_compiled_graphs()

    def tv(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        renamed, unknown = naming.rename(arrays, cfg.arch, "ms_transfer", "torchvision")
        assert not unknown, unknown
        return renamed
    stats = {k: v for k, v in params.items() if k.endswith(("moving_mean", "moving_variance"))}
    weights = {k: v for k, v in params.items() if k not in stats}
    return {"losses": {"": np.array(losses)}, "params": tv(weights), "stats": tv(stats)}


def check_names(regime: str, steps: int) -> Dict[str, str]:
    """Result key -> row label of the parity table."""
    return {"losses": f"{regime}: loss, {steps} steps", "params": f"{regime}: param updates",
            "stats": f"{regime}: BN stat updates"}
