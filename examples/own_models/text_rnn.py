"""A recurrent text classifier on integer token ids, written once in PyTorch and once in MindSpore.

    tokens (batch, seq) -> Embedding -> LSTM (batch_first) -> last hidden state -> Linear

MindSpore 2.7's ``nn.LSTM`` has torch's parameter names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``), shapes and gate order (input, forget, cell, output: measured bit-identical on shared weights),
so only the embedding needs a name: torch's ``weight`` is MindSpore's ``embedding_table``. MindSpore's LSTM
holds an inner ``nn.Dropout`` (its inter-layer dropout, torch's ``dropout=`` argument): the parity checks pair it
with torch's argument, not with a torch dropout module.
"""
import numpy as np
import torch
from mindspore import nn

VOCAB, EMBED, HIDDEN, CLASSES, SEQ = 100, 16, 32, 4, 12

#: torch -> MindSpore names the generic rule does not know
NAME_MAP = {"embed.weight": "embed.embedding_table"}


def example_inputs(batch: int = 4, seed: int = 0) -> np.ndarray:
    """Token ids of shape (batch, SEQ), int64, uniform over the vocabulary."""
    return np.random.RandomState(seed).randint(0, VOCAB, size=(batch, SEQ)).astype(np.int64)


class TorchModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.embed(tokens))   # h: (layers, batch, hidden)
        return self.head(h[-1])


class MindSporeModel(nn.Cell):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, batch_first=True)   # batch_first defaults to False, as in torch
        self.head = nn.Dense(HIDDEN, CLASSES)

    def construct(self, tokens):
        _, (h, _) = self.lstm(self.embed(tokens))
        return self.head(h[-1])
