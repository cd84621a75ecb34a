"""ms_transfer: MindSpore transfer learning that is numerically the same model as torchvision."""
