"""Small models written independently in PyTorch and MindSpore, as a user porting their own model would.

Each module exposes zero-argument factories ``TorchModel`` and ``MindSporeModel``, the torch -> MindSpore
``NAME_MAP`` the pair needs (empty when the generic rule suffices) and ``example_inputs(batch=...)``:

``transformer``  a pre-norm transformer block on float inputs (batch, seq, d_model), mean-pooled to a few classes
``text_rnn``     Embedding -> LSTM (batch_first) -> last hidden state -> Linear, on integer token ids (batch, seq)
"""
