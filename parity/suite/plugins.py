"""What this project's suite registers with the engine, which knows no architecture: the naming table as a name
rule (torchvision's ResNets against a MindSpore port in this project's or mindcv's names, and the parameterless
layers named differently, e.g. ``maxpool`` / ``max_pool``), and this project's models as the builder of a
reference bundle's port.

:mod:`parity` defers this module (:func:`parity.engine.plugins.defer`): the engine imports it -- and with it the
architecture tables -- only when the generic name rule leaves tensors unmatched or a bundle comes without its
cell, so ``parity.compare_models`` on any other pair loads no architecture module.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ms_transfer.core import naming

from ..engine.bundle import register_model_builder
from ..engine.weight_map import NameMatch, register_name_rule


@register_name_rule
def naming_table(torch_shapes: Mapping[str, Sequence[int]], ms_names: Sequence[str]) -> Optional[NameMatch]:
    """The naming table's map when the torch side is an architecture it detects (in torchvision's names) and the
    MindSpore side uses one of its other schemes completely; ``None`` otherwise."""
    try:
        arch = naming.detect_arch(torch_shapes)
    except (ValueError, KeyError):
        return None
    ms_set = set(ms_names)
    for scheme in naming.SCHEMES[1:]:
        table = naming.name_map(arch, "torchvision", scheme)
        mapped = {t: table[t] for t in torch_shapes if t in table}
        if len(mapped) == len(torch_shapes) and set(mapped.values()) == ms_set:
            return NameMatch(mapped, rule="naming table", module_map=naming.parameterless_map("torchvision", scheme))
    return None


@register_model_builder
def project_model(model: Mapping) -> object:
    """The MindSpore port of a bundle written by ``python -m parity --save-reference`` (model spec
    ``{"arch", "num_classes", "padding"}``); ``None`` for another spec."""
    if "arch" not in model:
        return None
    from ms_transfer.models import build_model   # MindSpore: only when a bundle is checked

    return build_model(model["arch"], model["num_classes"], model.get("padding", "torch"))
