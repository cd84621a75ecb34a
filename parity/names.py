"""Which MindSpore parameter holds which torch tensor, for any pair of models (no framework imported here).

The default rules are this project's: a ResNet recognised by :func:`ms_transfer.core.naming.detect_arch` goes
through the one naming table; anything else is matched name by name, with MindSpore's BatchNorm / LayerNorm
spelling (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) tried where torch says ``weight``, ``bias``,
``running_mean``, ``running_var``. A user dict (``{torch_name: ms_name}``, the rest by the rules) or a callable
(``torch_name -> ms_name or None``) replaces them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ms_transfer.core import naming

NameMap = Union[None, Mapping[str, str], Callable[[str], Optional[str]]]

#: torch suffix -> MindSpore spellings tried in order (the exact name is always tried first)
SUFFIX_RULES: Dict[str, Tuple[str, ...]] = {
    "weight": ("gamma",),
    "bias": ("beta",),
    "running_mean": ("moving_mean",),
    "running_var": ("moving_variance",),
}
#: torch buffers with no MindSpore counterpart: left out of the map, never reported as unmatched
IGNORED_TORCH = (naming.NUM_BATCHES_TRACKED,)


class NameMapError(ValueError):
    """Some tensors have no counterpart: the message lists them on both sides and says how to fix it."""


@dataclass
class NameMatch:
    """The resolved map and what it left over."""

    torch_to_ms: Dict[str, str]
    unmatched_torch: List[str] = field(default_factory=list)
    unmatched_ms: List[str] = field(default_factory=list)
    rule: str = "generic"
    scheme: Optional[str] = None   # the naming table's MindSpore-side scheme, when that rule matched

    @property
    def ms_to_torch(self) -> Dict[str, str]:
        return {m: t for t, m in self.torch_to_ms.items()}

    def raise_if_unmatched(self) -> None:
        if self.unmatched_torch or self.unmatched_ms:
            raise NameMapError(
                f"name map ({self.rule} rules) left tensors without a counterpart: "
                f"torch {_head(self.unmatched_torch)}; MindSpore {_head(self.unmatched_ms)}. Pass "
                "name_map={torch_name: ms_name, ...} (the rest keeps the default rules) or a callable "
                "torch_name -> ms_name")


def _head(names: Sequence[str], n: int = 6) -> str:
    if not names:
        return "none"
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _table_map(torch_shapes: Mapping[str, Sequence[int]], ms_names: Sequence[str]
               ) -> Tuple[Optional[Dict[str, str]], Optional[str]]:
    """The naming table's map and MindSpore-side scheme when the torch side is a ResNet it knows and the MindSpore
    side uses one of its schemes; ``(None, None)`` otherwise."""
    try:
        arch = naming.detect_arch(torch_shapes)
    except (ValueError, KeyError):
        return None, None
    ms_set = set(ms_names)
    for scheme in naming.SCHEMES[1:]:
        table = naming.name_map(arch, "torchvision", scheme)
        mapped = {t: table[t] for t in torch_shapes if t in table}
        if set(mapped.values()) == ms_set:
            return mapped, scheme
    return None, None


def _generic(torch_name: str, ms_set: set) -> Optional[str]:
    if torch_name in ms_set:
        return torch_name
    prefix, _, suffix = torch_name.rpartition(".")
    for alt in SUFFIX_RULES.get(suffix, ()):
        candidate = f"{prefix}.{alt}" if prefix else alt
        if candidate in ms_set:
            return candidate
    return None


def match_names(torch_shapes: Mapping[str, Sequence[int]], ms_names: Sequence[str],
                name_map: NameMap = None) -> NameMatch:
    """Resolve ``name_map`` (see the module docstring) between torch tensor names (with their shapes) and MindSpore
    parameter names. Unmatched names are reported, not raised: call :meth:`NameMatch.raise_if_unmatched`."""
    ms_set = set(ms_names)
    torch_names = [n for n in torch_shapes if n.rpartition(".")[2] not in IGNORED_TORCH]
    rule = "user callable" if callable(name_map) else "user dict + generic" if name_map else "generic"
    table, scheme = (_table_map({n: torch_shapes[n] for n in torch_names}, ms_names) if name_map is None
                     else (None, None))
    mapping: Dict[str, str] = {}
    for t in torch_names:
        if callable(name_map):
            m = name_map(t)
        elif table is not None:
            m, rule = table.get(t), "naming table"
        elif name_map and t in name_map:
            m = name_map[t]
        else:
            m = _generic(t, ms_set)
        if m is not None and m in ms_set:
            mapping[t] = m
    taken = set(mapping.values())
    if len(taken) != len(mapping):
        dup = sorted({m for m in mapping.values() if list(mapping.values()).count(m) > 1})
        raise NameMapError(f"name map sends several torch tensors to the same MindSpore parameter: {_head(dup)}")
    return NameMatch(mapping, [t for t in torch_names if t not in mapping],
                     [m for m in ms_names if m not in taken], rule, scheme)


def module_pairs(torch_modules: Mapping[str, Sequence[str]], ms_cells: Mapping[str, Sequence[str]],
                 match: NameMatch, module_map: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """torch module name -> MindSpore cell name, for localisation.

    ``torch_modules`` / ``ms_cells`` give each module's parameter names (recursive, full names). A module with
    parameters pairs with the cell holding exactly its mapped parameters; a parameterless module pairs with the
    cell of the same name, or as ``module_map`` says (default for the naming table's ResNets: its
    :data:`~ms_transfer.core.naming.PARAMETERLESS_NAMES`, e.g. ``maxpool`` -> ``max_pool``)."""
    if module_map is None and match.scheme:
        module_map = naming.parameterless_map("torchvision", match.scheme)
    by_params = {frozenset(params): name for name, params in ms_cells.items() if params}
    pairs: Dict[str, str] = {}
    t2m = match.torch_to_ms
    for name, params in torch_modules.items():
        if module_map and name in module_map:
            if module_map[name] in ms_cells:
                pairs[name] = module_map[name]
        elif params:
            key = frozenset(t2m.get(p) for p in params if p.rpartition(".")[2] not in IGNORED_TORCH)
            if None not in key and key in by_params:
                pairs[name] = by_params[key]
        elif name in ms_cells and not ms_cells[name]:
            pairs[name] = name
    return pairs
