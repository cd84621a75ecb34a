"""Measure what each MindSpore-vs-PyTorch default costs a port, on the example models (docs/framework-differences.md).

    python -m examples.own_models.differences [--mode pynative|graph]     # from the checkout

For each difference, the port is built with MindSpore's default (or the layout mistake) where torch's is right,
compared with :func:`parity.compare_models` (every check, seeded torch weights, ``example_inputs()``), and one
markdown row is printed: the relative L2 error of the eval outputs, the rows that fail with their ratio (error /
noise floor, failing above 4) and the layer localisation names. The clean ports' detection power
(``sensitivity=True``: the smallest uniform output error the eval check detects) is printed first, to read the
error column against. Optimizer defaults are measured directly (``compare_models`` runs its own momentum SGD,
not yours). ~2 min on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

import numpy as np
import torch
from mindspore import nn

import parity
from examples import parity_own_model as cnn
from examples.own_models import text_rnn, transformer
from ms_transfer.mindspore_backend.context import set_context
from ms_transfer.mindspore_backend.optimizers import TorchAdam
from parity.engine.comparison import synthetic_grads
from parity.engine.torch_side import numpy_state


def _seeded(factory: Callable) -> torch.nn.Module:
    torch.manual_seed(0)
    return factory()


def compare(torch_factory, ms_net, inputs, name_map=None, edit=None, **options):
    """``compare_models`` on a seeded torch model and ``ms_net``; ``edit(ported) -> state`` changes the weights the
    port receives (a converter's layout mistake)."""
    t = _seeded(torch_factory)
    if edit is not None:
        ported, _ = parity.port_weights(numpy_state(t), {p.name: p.shape for p in ms_net.get_parameters()}, name_map)
        options["ms_state"] = edit(ported)
    return parity.compare_models(t, ms_net, inputs, name_map=name_map, localize="on_failure", **options)


def row(report) -> str:
    """``rel. L2 error of eval outputs | failing rows (ratio) | localised to``."""
    ev = next(r for r in report.results if r.check == "eval outputs")
    failing = [f"{r.check} ({max(r.ratio, r.scale_ratio):.3g})" for r in report.results if not r.passed]
    where = sorted({loc.first for loc in report.localization if loc.first is not None})
    return (f"{ev.rel_l2:.2g} | {', '.join(failing) or 'none: passes'} | "
            f"{', '.join(where) if where else '-'}")


# --- variants of the example models (the same models with another activation; the CNN's port with MindSpore's
# --- conv and BN defaults)

class TorchLeaky(transformer.TorchModel):
    def __init__(self):
        super().__init__()
        self.act = torch.nn.LeakyReLU()          # torch's negative_slope 0.01


class MsLeakyDefault(transformer.MindSporeModel):
    def __init__(self):
        super().__init__()
        self.act = nn.LeakyReLU()                # MindSpore's alpha 0.2


class MsSamePadding(cnn.MindSporeNet):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, has_bias=False)   # MindSpore's pad_mode='same'


class MsTorchMomentum(cnn.MindSporeNet):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(16, momentum=0.1)   # torch's momentum value, MindSpore's convention


def transposed(key: str):
    """A weight edit: ``key`` stored transposed (a Keras/TF ``(in, out)`` kernel loaded as is)."""
    return lambda s: {**s, key: np.ascontiguousarray(s[key].T)}


def onnx_gates(state):
    """A weight edit: the LSTM's gate blocks in ONNX's order (input, output, forget, cell) instead of torch's
    (i, f, g, o)."""
    out = dict(state)
    for k, v in state.items():
        if k.startswith("lstm."):
            i, f, g, o = np.split(v, 4, axis=0)
            out[k] = np.concatenate([i, o, f, g], axis=0)
    return out


def optimizer_rows() -> list:
    """MindSpore's ``nn.Adam`` and ``nn.Momentum(weight_decay=float)`` against torch's, 3 steps on the transformer's
    parameters with the engine's seeded gradients: relative L2 error of the updates (float32 both sides)."""
    import mindspore as ms

    set_context("pynative")   # plain parameter lists, no cell to compile: the update rule is the same in both modes
    t = _seeded(transformer.TorchModel)
    state = {k: v for k, v in numpy_state(t).items()}
    grads = synthetic_grads(state, 3, seed=0)

    def torch_updates(make):
        params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in state.items()}
        opt = make(list(params.values()))
        for g in grads:
            for k, p in params.items():
                p.grad = torch.from_numpy(g[k])
            opt.step()
        return {k: p.detach().numpy() - state[k] for k, p in params.items()}

    def ms_updates(make):
        # MindSpore's LayerNorm names its weight/bias gamma/beta: what nn.Momentum's default decay filter looks at
        names = {k: k.replace("norm1.weight", "norm1.gamma").replace("norm1.bias", "norm1.beta")
                 .replace("norm2.weight", "norm2.gamma").replace("norm2.bias", "norm2.beta") for k in state}
        params = [ms.Parameter(ms.Tensor(v.copy()), name=names[k]) for k, v in state.items()]
        opt = make(params)
        for g in grads:
            opt(tuple(ms.Tensor(g[k]) for k in state))
        return {k: p.asnumpy() - state[k] for k, p in zip(state, params)}

    def rel(a, b):
        num = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)
        return np.sqrt(num / sum(float(np.sum(b[k] ** 2)) for k in b))

    adam_t = torch_updates(lambda p: torch.optim.Adam(p, lr=1e-3))
    sgd_t = torch_updates(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-2))
    return [
        ("`nn.Adam` eps (TensorFlow's form: on the uncorrected `sqrt(v)`)",
         rel(ms_updates(lambda p: nn.Adam(p, learning_rate=1e-3)), adam_t),
         rel(ms_updates(lambda p: TorchAdam(p, 1e-3, steps=3)), adam_t)),
        ("`nn.Momentum(weight_decay=1e-2)` skips parameters named gamma/beta",
         rel(ms_updates(lambda p: nn.Momentum(p, 0.01, 0.9, weight_decay=1e-2)), sgd_t),
         rel(ms_updates(lambda p: nn.Momentum([{"params": p, "weight_decay": 1e-2}], 0.01, 0.9)), sgd_t)),
    ]


def dropout_row() -> str:
    """``nn.Dropout(0.2)``: MindSpore's first positional argument is ``keep_prob``; the engine's dropout row."""
    from parity.engine.dropout import compare_dropout, ms_dropout_stats, torch_dropout_ps
    stats = ms_dropout_stats(nn.Dropout(0.2))
    result = compare_dropout(torch_dropout_ps(torch.nn.Dropout(0.2)), stats)
    _, rate, kept = stats[0]
    return (f"drops {rate:.3f} and keeps x{kept:.3g} for torch's 0.2 and x1.25 | "
            f"dropout (train mode) ({result.ratio:.3g} sd) | -")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="Measure MindSpore-vs-PyTorch default differences on the example models")
    p.add_argument("--mode", choices=("pynative", "graph"), default="pynative")
    args = p.parse_args(argv)
    set_context(args.mode)
    tr_x, rnn_x, rnn_map = transformer.example_inputs(), text_rnn.example_inputs(), text_rnn.NAME_MAP
    cnn_x = np.random.RandomState(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    cnn_map = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}

    print("clean ports (sensitivity: smallest uniform error of the eval outputs each check detects):")
    for name, (tf, mf, x, nm) in {"transformer": (transformer.TorchModel, transformer.MindSporeModel, tr_x, None),
                                  "text_rnn": (text_rnn.TorchModel, text_rnn.MindSporeModel, rnn_x, rnn_map),
                                  "CNN": (cnn.TorchNet, cnn.MindSporeNet, cnn_x, cnn_map)}.items():
        r = compare(tf, mf(), x, nm, sensitivity=True)
        ev = next(s for s in r.sensitivity if s.check == "eval outputs")
        print(f"  {name}: {row(r)}; eval outputs detect a uniform error from {ev.uniform:.2g}")

    cases = [
        ("transformer", "`nn.LayerNorm` epsilon 1e-7 (torch 1e-5), unit-variance inputs",
         transformer.TorchModel, transformer.MindSporeModel(layer_norm_eps=1e-7), tr_x, None, None),
        ("transformer", "`nn.LayerNorm` epsilon 1e-7 (torch 1e-5), inputs of std 0.05",
         transformer.TorchModel, transformer.MindSporeModel(layer_norm_eps=1e-7), tr_x * 0.05, None, None),
        ("transformer", "`nn.GELU()` is the tanh approximation (torch: exact erf)",
         transformer.TorchModel, transformer.MindSporeModel(gelu_approximate=True), tr_x, None, None),
        ("transformer", "`nn.LeakyReLU()` slope 0.2 (torch 0.01)", TorchLeaky, MsLeakyDefault(), tr_x, None, None),
        ("transformer", "softmax over the wrong axis (queries, -2)",
         transformer.TorchModel, transformer.MindSporeModel(softmax_axis=-2), tr_x, None, None),
        ("transformer", "a square Dense weight in (in, out) layout (Keras/TF `kernel`), `attn.q`",
         transformer.TorchModel, transformer.MindSporeModel(), tr_x, None, transposed("attn.q.weight")),
        ("text_rnn", "LSTM gates in ONNX order (i, o, f, c) instead of torch's/MindSpore's (i, f, g, o)",
         text_rnn.TorchModel, text_rnn.MindSporeModel(), rnn_x, rnn_map, onnx_gates),
        ("CNN", "`nn.Conv2d` default `pad_mode='same'` at stride 2 (torch: explicit `padding=1`)",
         cnn.TorchNet, MsSamePadding(), cnn_x, cnn_map, None),
        ("CNN", "`nn.BatchNorm2d(momentum=0.1)`: torch's value in MindSpore's convention",
         cnn.TorchNet, MsTorchMomentum(), cnn_x, cnn_map, None),
    ]
    print("\n| model | difference | rel. L2 error, eval outputs | failing rows (ratio) | localised to |")
    print("|---|---|---|---|---|")
    for model, what, tf, ms_net, x, nm, edit in cases:
        print(f"| {model} | {what} | {row(compare(tf, ms_net, x, nm, edit))} |")
    print(f"| layer | `nn.Dropout(0.2)`: positional `keep_prob` (torch: `p`) | {dropout_row()} |")
    print("\noptimizers (relative L2 error of 3 updates vs torch's; with the fix):")
    for what, err, fixed in optimizer_rows():
        print(f"  {what}: {err:.2g} (fixed: {fixed:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
