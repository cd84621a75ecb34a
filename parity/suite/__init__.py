"""This project's parity suite on the engine (see :mod:`parity`): torchvision's ResNets / VGGs and the seeds'
networks against the MindSpore ports, the porting-bug tables, training-step and data-parallel parity, the
val-pipeline check and the ``python -m parity`` command line."""
