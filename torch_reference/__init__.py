"""The PyTorch side: real ``torchvision.models`` driven by the same configs as ``ms_transfer``.

torch and torchvision are the ``torch`` extra (``pip install 'ms_transfer[torch]'``; ``make venv`` installs it).
The names below are imported on first use, so that importing a light submodule (:mod:`.pth_format`, which the
MindSpore side imports to read ``.pth`` files) does not load torch, and the MindSpore-only install imports this
package fine; the modules that need torch get it through :func:`require_torch`, whose error says how to install it.
"""
import importlib

__all__ = ["build_model", "numpy_state", "load_numpy_state", "ScannedImageFolder", "create_loader", "require_torch",
           "TORCH_EXTRA", "is_missing_torch"]
_HOMES = {"build_model": ".models", "numpy_state": ".state", "load_numpy_state": ".state",
          "ScannedImageFolder": ".data", "create_loader": ".data"}

#: what the MindSpore-only install is told when something needs PyTorch (``{what}``: what needed it)
TORCH_EXTRA = ("{what} needs PyTorch, which is not installed: install the torch extra, pip install "
               "'ms_transfer[torch]' (in a checkout: pip install -e '.[torch]', or make venv). Without it ms_transfer "
               "trains in MindSpore, converts .ckpt <-> .safetensors and checks reference bundles "
               "(python -m parity --check-reference)")


def is_missing_torch(exc: BaseException) -> bool:
    """Whether ``exc`` is the import error of an absent torch / torchvision (the MindSpore-only install)."""
    return isinstance(exc, ImportError) and (getattr(exc, "name", None) or "").split(".")[0] in ("torch",
                                                                                                   "torchvision")


def require_torch(what: str = "the PyTorch side (torch_reference)"):
    """The ``torch`` module, or ``ModuleNotFoundError`` (``name="torch"``) saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        if not is_missing_torch(exc):
            raise
        raise ModuleNotFoundError(TORCH_EXTRA.format(what=what), name="torch") from None
    return torch


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
