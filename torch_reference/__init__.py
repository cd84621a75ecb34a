"""The PyTorch side: real ``torchvision.models`` driven by the same configs as ``ms_transfer``.

The names below are imported on first use, so that importing a light submodule (:mod:`.pth_format`, which the
MindSpore side imports to read ``.pth`` files) does not load torch.
"""
import importlib

__all__ = ["build_model", "numpy_state", "load_numpy_state", "ScannedImageFolder", "create_loader"]
_HOMES = {"build_model": ".models", "numpy_state": ".models", "load_numpy_state": ".models",
          "ScannedImageFolder": ".data", "create_loader": ".data"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
