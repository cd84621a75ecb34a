"""The MindSpore backend: everything that trains, evaluates and stores a model with MindSpore.

:class:`~ms_transfer.mindspore_backend.backend.MindSporeBackend` implements the framework-neutral
:class:`ms_transfer.core.backend.Backend` that :func:`ms_transfer.core.loop.fit` drives; around it live the process
preparation (``context``: the oneDNN ISA cap decided by ``onednn``, the one module that changes the environment
at import), the ``mindspore.dataset`` pipeline (``data``), optimizers and freezing (``optim``), the frozen-trunk
fast path (``frozen_trunk``), data parallelism (``parallel``), checkpoints (``checkpoint``, the ``.ckpt`` format in
``ckpt_format``) and the compile cache (``compile_cache``). The models themselves are :mod:`ms_transfer.models`,
the neutral core :mod:`ms_transfer.core`, the torch counterpart :mod:`torch_reference`, and the command-line entry
points ``ms_transfer/<name>.py``. Importing this package imports none of its modules (so no MindSpore).
"""
