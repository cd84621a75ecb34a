"""Which MindSpore parameter holds which torch tensor, for any pair of models (no framework imported here).

Default rules, in order: the **generic** rule -- names matched one by one, with MindSpore's BatchNorm / LayerNorm
spelling (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) tried where torch says ``weight``, ``bias``,
``running_mean``, ``running_var`` -- and, when it leaves tensors unmatched, the **registered** rules
(:func:`register_name_rule`): a model family's own naming, registered by the code that knows it (this project's
suite registers the naming table of torchvision's ResNets; see :mod:`parity.engine.plugins` for when). The first
rule that pairs every tensor wins. A user dict (``{torch_name: ms_name}``, the rest by the generic rule) or a
callable (``torch_name -> ms_name or None``) replaces them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .plugins import load_deferred

NameMap = Union[None, Mapping[str, str], Callable[[str], Optional[str]]]

#: torch suffix -> MindSpore spellings tried in order (the exact name is always tried first)
SUFFIX_RULES: Dict[str, Tuple[str, ...]] = {
    "weight": ("gamma",),
    "bias": ("beta",),
    "running_mean": ("moving_mean",),
    "running_var": ("moving_variance",),
}
#: torch buffers with no MindSpore counterpart (BatchNorm's batch counter): left out of the map, never reported
IGNORED_TORCH = ("num_batches_tracked",)


class NameMapError(ValueError):
    """Some tensors have no counterpart: the message lists them on both sides and says how to fix it."""


@dataclass
class NameMatch:
    """The resolved map and what it left over. ``module_map``: parameterless torch modules -> MindSpore cells
    named differently (e.g. ``maxpool`` -> ``max_pool``), as the rule that matched knows them (localisation pairs
    layers with parameters through the map, the others by name or by this)."""

    torch_to_ms: Dict[str, str]
    unmatched_torch: List[str] = field(default_factory=list)
    unmatched_ms: List[str] = field(default_factory=list)
    rule: str = "generic"
    module_map: Dict[str, str] = field(default_factory=dict)

    @property
    def ms_to_torch(self) -> Dict[str, str]:
        return {m: t for t, m in self.torch_to_ms.items()}

    @property
    def complete(self) -> bool:
        """Every tensor on both sides has its counterpart."""
        return not (self.unmatched_torch or self.unmatched_ms)

    def raise_if_unmatched(self) -> None:
        if not self.complete:
            raise NameMapError(
                f"name map ({self.rule} rules) left tensors without a counterpart: "
                f"torch {_head(self.unmatched_torch)}; MindSpore {_head(self.unmatched_ms)}. Pass "
                "name_map={torch_name: ms_name, ...} (the rest keeps the default rules) or a callable "
                "torch_name -> ms_name")


#: ``rule(torch_shapes, ms_names) -> NameMatch or None``: a complete match (every tensor on both sides paired;
#: ``torch_shapes`` without :data:`IGNORED_TORCH`), or ``None`` when the pair is not a model the rule knows
NameRule = Callable[[Mapping[str, Sequence[int]], Sequence[str]], Optional[NameMatch]]
_RULES: List[NameRule] = []


def register_name_rule(rule: NameRule) -> NameRule:
    """Add ``rule`` to the default rules tried after the generic one (registering it again changes nothing);
    returns it, so it can decorate the rule."""
    if rule not in _RULES:
        _RULES.append(rule)
    return rule


def name_rules() -> List[NameRule]:
    """The registered rules, deferred owners imported first (:mod:`parity.engine.plugins`)."""
    load_deferred()
    return list(_RULES)


def _head(names: Sequence[str], n: int = 6) -> str:
    if not names:
        return "none"
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


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
    mapping: Dict[str, str] = {}
    for t in torch_names:
        if callable(name_map):
            m = name_map(t)
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
    match = NameMatch(mapping, [t for t in torch_names if t not in mapping], [m for m in ms_names if m not in taken],
                      rule)
    if name_map is None and not match.complete:
        shapes = {n: torch_shapes[n] for n in torch_names}
        for registered in name_rules():
            found = registered(shapes, list(ms_names))
            if found is not None and found.complete:
                return found
    return match


def module_pairs(torch_modules: Mapping[str, Sequence[str]], ms_cells: Mapping[str, Sequence[str]],
                 match: NameMatch, module_map: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """torch module name -> MindSpore cell name, for localisation.

    ``torch_modules`` / ``ms_cells`` give each module's parameter names (recursive, full names). A module with
    parameters pairs with the cell holding exactly its mapped parameters; a parameterless module pairs with the
    cell of the same name, or as ``module_map`` says (default: the matching rule's
    :attr:`NameMatch.module_map`, e.g. ``maxpool`` -> ``max_pool`` for the naming table's ResNets)."""
    if module_map is None:
        module_map = match.module_map
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
