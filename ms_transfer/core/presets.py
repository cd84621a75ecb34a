"""Preprocessing presets as data, defined once: the normalisation presets (ImageNet's mean/std among them) and the
eval resize of torchvision's ImageNet recipe.

A leaf module (no imports from the project): the dataset layer (:mod:`ms_transfer.core.data`), the weights table
(:mod:`ms_transfer.core.weights`), the plots and both backends import these constants from here.
"""
from __future__ import annotations

#: ImageNet normalisation constants on the 0-1 scale (multiply by 255 for uint8 inputs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: normalisation presets (0-1 scale): ImageNet's, cats vs dogs' mean = std = 0.5, none (pixels / 255, the MNIST seeds)
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3),
                  "none": ((0.0,) * 3, (1.0,) * 3)}
#: the shorter side before the ``crop`` policy's center crop, for a 224 px crop (torchvision's ImageNet recipe)
DEFAULT_EVAL_RESIZE = 256
