"""The PyTorch side: real ``torchvision.models`` driven by the same configs as ``ms_transfer``."""
from .data import ScannedImageFolder, create_loader
from .models import build_model, numpy_state, load_numpy_state

__all__ = ["build_model", "numpy_state", "load_numpy_state", "ScannedImageFolder", "create_loader"]
