"""The parity engine: any torch / MindSpore pair, no architecture (see :mod:`parity`). Nothing here imports
``ms_transfer.models``, ``ms_transfer.core.archs`` / ``naming``, ``torch_reference.models`` or :mod:`parity.suite`
(``tests/test_parity_engine.py`` checks it): architecture knowledge is registered with it
(:mod:`parity.engine.plugins`)."""
