"""A small pre-norm transformer block, written once in PyTorch and once in MindSpore.

    x (batch, seq, d_model) -> x + attention(LayerNorm(x)) -> x + MLP(LayerNorm(x)) -> mean over seq -> Linear

Attention is written with explicit q / k / v Linear layers in both frameworks rather than
``torch.nn.MultiheadAttention``: torch's module packs q, k and v into one ``in_proj_weight`` and runs a fused
kernel in inference, MindSpore's ``nn.MultiheadAttention`` names and packs its weights its own way, so the two
would need a hand-written weight split; with explicit layers every weight has the same name on both sides and
each step (the softmax above all) is a layer that localisation can name.

The MindSpore constructor spells out the three defaults a port gets wrong (see docs/framework-differences.md):
``nn.LayerNorm``'s epsilon (MindSpore 1e-7, torch 1e-5), ``nn.GELU``'s approximation (MindSpore tanh, torch
exact erf) and the softmax axis (over the keys: the last one).
"""
import math

import numpy as np
import torch
from mindspore import nn, ops

D_MODEL, HEADS, HIDDEN, CLASSES, SEQ = 32, 4, 64, 5, 16

#: torch -> MindSpore names: none needed (Linear/Dense names match; LayerNorm's weight/bias are gamma/beta,
#: which the generic rule knows)
NAME_MAP: dict = {}


def example_inputs(batch: int = 4, seed: int = 0) -> np.ndarray:
    """Float32 inputs of shape (batch, SEQ, D_MODEL), standard normal."""
    return np.random.RandomState(seed).standard_normal((batch, SEQ, D_MODEL)).astype(np.float32)


# --- PyTorch -----------------------------------------------------------------------------------------------


class TorchSelfAttention(torch.nn.Module):
    def __init__(self, d_model: int = D_MODEL, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.q = torch.nn.Linear(d_model, d_model)
        self.k = torch.nn.Linear(d_model, d_model)
        self.v = torch.nn.Linear(d_model, d_model)
        self.out = torch.nn.Linear(d_model, d_model)
        self.softmax = torch.nn.Softmax(dim=-1)

    def forward(self, x):
        b, s, d = x.shape

        def split(t):   # (b, s, d) -> (b, heads, s, d / heads)
            return t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = self.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads))
        return self.out((att @ v).transpose(1, 2).reshape(b, s, d))


class TorchModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(D_MODEL)
        self.attn = TorchSelfAttention()
        self.norm2 = torch.nn.LayerNorm(D_MODEL)
        self.fc1 = torch.nn.Linear(D_MODEL, HIDDEN)
        self.act = torch.nn.GELU()
        self.fc2 = torch.nn.Linear(HIDDEN, D_MODEL)
        self.head = torch.nn.Linear(D_MODEL, CLASSES)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return self.head(x.mean(dim=1))


# --- MindSpore ---------------------------------------------------------------------------------------------


class MindSporeSelfAttention(nn.Cell):
    def __init__(self, d_model: int = D_MODEL, heads: int = HEADS, softmax_axis: int = -1):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Dense(d_model, d_model)    # weight (out, in), as torch's Linear
        self.k = nn.Dense(d_model, d_model)
        self.v = nn.Dense(d_model, d_model)
        self.out = nn.Dense(d_model, d_model)
        self.softmax = nn.Softmax(axis=softmax_axis)   # over the keys

    def construct(self, x):
        b, s, d = x.shape
        q = ops.transpose(self.q(x).reshape(b, s, self.heads, self.head_dim), (0, 2, 1, 3))
        k = ops.transpose(self.k(x).reshape(b, s, self.heads, self.head_dim), (0, 2, 3, 1))   # keys transposed
        v = ops.transpose(self.v(x).reshape(b, s, self.heads, self.head_dim), (0, 2, 1, 3))
        att = self.softmax(ops.matmul(q, k) * self.scale)
        return self.out(ops.transpose(ops.matmul(att, v), (0, 2, 1, 3)).reshape(b, s, d))


class MindSporeModel(nn.Cell):
    """The port. The keyword arguments default to torch's behaviour; each names a MindSpore default that differs
    (pass MindSpore's to see what the parity checks make of it)."""

    def __init__(self, layer_norm_eps: float = 1e-5, gelu_approximate: bool = False, softmax_axis: int = -1):
        super().__init__()
        self.norm1 = nn.LayerNorm((D_MODEL,), epsilon=layer_norm_eps)   # MindSpore's default epsilon is 1e-7
        self.attn = MindSporeSelfAttention(softmax_axis=softmax_axis)
        self.norm2 = nn.LayerNorm((D_MODEL,), epsilon=layer_norm_eps)
        self.fc1 = nn.Dense(D_MODEL, HIDDEN)
        self.act = nn.GELU(approximate=gelu_approximate)                # MindSpore's default is the tanh form
        self.fc2 = nn.Dense(HIDDEN, D_MODEL)
        self.head = nn.Dense(D_MODEL, CLASSES)

    def construct(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return self.head(x.mean(axis=1))
