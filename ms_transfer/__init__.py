"""ms_transfer: MindSpore transfer learning that is numerically the same model as torchvision.

Importing the package has no side effects and loads neither MindSpore nor torch: the framework-neutral core
lives in :mod:`ms_transfer.core`; the MindSpore side (models, pipeline, backend) is imported on use.
"""
__version__ = "0.2.0"
