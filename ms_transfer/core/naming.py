"""The one parameter-name mapping table between torchvision, this project (the MindSpore tutorial's names)
and mindcv, plus architecture / naming-scheme detection from a state dict's keys and shapes.

Every conversion direction goes through :data:`MODULE_NAMES` and :data:`BN_PARAMS`: a parameter is first
described structurally (stem conv, block ``i``'s BN ``j``, downsample BN, head...) and then rendered in
any scheme, so adding a scheme means adding one column here.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .archs import get_arch, head_module, list_archs, pair_spec, resnet_layout, seq_spec, vgg_spec

#: every architecture the project builds (:mod:`ms_transfer.core.archs`), in registration order
ALL_ARCHS: Tuple[str, ...] = tuple(list_archs())
#: the plain ResNets (torchvision's ``resnet18`` .. ``resnet152``) as ``arch -> (block kind, blocks per stage)``;
#: ResNeXt and Wide ResNet are the same family with grouped / widened bottlenecks (:func:`resnet_layout`)
ARCH_SPECS: Dict[str, Tuple[str, Tuple[int, int, int, int]]] = {
    name: (layout.block, layout.depths) for name in list_archs("resnet")
    for layout in [get_arch(name).layout] if (layout.groups, layout.width_per_group) == (1, 64)}
#: the architectures recognised by their exact set of tensor names (plain module paths)
_PLAIN_ARCHS: Tuple[str, ...] = tuple(a for a in ALL_ARCHS if get_arch(a).naming == "plain")

SCHEMES = ("torchvision", "ms_transfer", "mindcv")
#: Scheme aliases accepted on the command line.
SCHEME_ALIASES = {"torch": "torchvision", "tv": "torchvision", "tutorial": "ms_transfer", "ms": "ms_transfer"}

#: module role -> its name in each scheme (``{i}`` is the conv/BN index inside a block).
MODULE_NAMES: Dict[str, Dict[str, str]] = {
    "stem_conv":  {"torchvision": "conv1",      "ms_transfer": "conv1",       "mindcv": "conv1"},
    "stem_bn":    {"torchvision": "bn1",        "ms_transfer": "norm",        "mindcv": "bn1"},
    "block_conv": {"torchvision": "conv{i}",    "ms_transfer": "conv{i}",     "mindcv": "conv{i}"},
    "block_bn":   {"torchvision": "bn{i}",      "ms_transfer": "norm{i}",     "mindcv": "bn{i}"},
    "downsample": {"torchvision": "downsample", "ms_transfer": "down_sample", "mindcv": "down_sample"},
    "head":       {"torchvision": "fc",         "ms_transfer": "fc",          "mindcv": "classifier"},
}
#: parameterless modules named differently across schemes (parity's first-divergence localisation pairs layers
#: with parameters through the tensor names above, and these by this table)
PARAMETERLESS_NAMES: Dict[str, Dict[str, str]] = {
    "stem_pool": {"torchvision": "maxpool", "ms_transfer": "max_pool", "mindcv": "max_pool"},
}
#: BatchNorm tensors in canonical order: affine weight, affine bias, running mean, running variance.
BN_PARAMS: Dict[str, Tuple[str, str, str, str]] = {
    "torchvision": ("weight", "bias", "running_mean", "running_var"),
    "ms_transfer": ("gamma", "beta", "moving_mean", "moving_variance"),
    "mindcv": ("gamma", "beta", "moving_mean", "moving_variance"),
}
#: torch-only BN buffer: unused by the math when momentum is set; dropped going to MindSpore.
NUM_BATCHES_TRACKED = "num_batches_tracked"
HEAD_PARAMS = ("weight", "bias")
_BN_KINDS = ("bn_weight", "bn_bias", "bn_mean", "bn_var")


# A structural key: (module path as role tuples, tensor kind). Rendered to a dotted name per scheme.
Key = Tuple[Tuple, str]


def resolve_scheme(name: str) -> str:
    """Canonical scheme name for ``name`` (accepts aliases such as ``torch`` or ``tutorial``)."""
    scheme = SCHEME_ALIASES.get(name, name)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown naming scheme {name!r}; choose one of {', '.join(SCHEMES)} "
                         f"(aliases: {', '.join(sorted(SCHEME_ALIASES))})")
    return scheme


def _trunk_keys(spec, prefix: str) -> List[Key]:
    keys: List[Key] = []
    for layer, kind, _ in spec.layers:
        path = (("plain", f"{prefix}.{layer}"),)
        if kind == "conv":
            keys += [(path, "weight"), (path, "bias")]
        elif kind == "bn":
            keys += [(path, k) for k in _BN_KINDS]
    return keys


def _plain(path: str) -> Tuple:
    return (("plain", path),)


def _vgg_keys(arch: str) -> List[Key]:
    keys: List[Key] = []
    for index, kind, _ in vgg_spec(arch).feature_layers():
        if kind == "conv":
            keys += [(_plain(f"features.{index}"), "weight"), (_plain(f"features.{index}"), "bias")]
        elif kind == "bn":
            keys += [(_plain(f"features.{index}"), k) for k in _BN_KINDS]
    return keys


def _seq_keys(arch: str, include_head: bool) -> List[Key]:
    """Structural keys of a network with plain module paths (``("plain", "features.conv1")``): only the BatchNorm
    tensor names differ between schemes. The adder has a trunk per branch; VGG's head is ``classifier``."""
    spec = seq_spec(arch) or vgg_spec(arch)
    if vgg_spec(arch) is not None:
        keys, layers = _vgg_keys(arch), spec.head_layers(2)
    elif spec is None:
        spec = pair_spec(arch)
        keys = [k for branch in spec.branches for k in _trunk_keys(spec.branch_spec, branch)]
        layers = spec.head_layers(spec.outputs)
    else:
        keys, layers = _trunk_keys(spec, "features"), spec.head_layers(2)
    last, head = spec.classifier_index(), head_module(arch)
    for i, (kind, _) in enumerate(layers):
        if kind == "dense" and (include_head or i != last):
            keys += [(_plain(f"{head}.{i}"), "weight"), (_plain(f"{head}.{i}"), "bias")]
    return keys


def structural_keys(arch: str, include_head: bool = True) -> List[Key]:
    """Every parameter / buffer of ``arch`` as structural keys, in model order (``include_head=False``: without
    the classifier layer)."""
    if get_arch(arch).naming == "plain":
        return _seq_keys(arch, include_head)
    layout = resnet_layout(arch)
    block, layers = layout.block, layout.depths
    n_convs = 3 if block == "bottleneck" else 2
    keys: List[Key] = [((("stem_conv",),), "conv")]
    keys += [((("stem_bn",),), kind) for kind in _BN_KINDS]
    for stage, n_blocks in enumerate(layers, start=1):
        for b in range(n_blocks):
            prefix = (("layer", stage), ("index", b))
            for i in range(1, n_convs + 1):
                keys.append((prefix + (("block_conv", i),), "conv"))
                keys += [(prefix + (("block_bn", i),), kind) for kind in _BN_KINDS]
            if b == 0 and (stage > 1 or block == "bottleneck"):  # shape changes -> downsample branch
                keys.append((prefix + (("downsample",), ("index", 0)), "conv"))
                keys += [(prefix + (("downsample",), ("index", 1)), kind) for kind in _BN_KINDS]
    if include_head:
        keys += [((("head",),), "weight"), ((("head",),), "bias")]
    return keys


def render(key: Key, scheme: str) -> str:
    """Dotted parameter name of a structural key in ``scheme``."""
    path, kind = key
    parts = []
    for role in path:
        if role[0] == "plain":
            parts.append(role[1])
        elif role[0] == "layer":
            parts.append(f"layer{role[1]}")
        elif role[0] == "index":
            parts.append(str(role[1]))
        else:
            template = MODULE_NAMES[role[0]][scheme]
            parts.append(template.format(i=role[1]) if len(role) > 1 else template)
    if kind == "conv":
        parts.append("weight")
    elif kind in _BN_KINDS:
        parts.append(BN_PARAMS[scheme][_BN_KINDS.index(kind)])
    else:
        parts.append(kind)  # head weight / bias
    return ".".join(parts)


def name_table(arch: str, scheme: str, include_head: bool = True) -> Dict[str, Key]:
    """``{name in scheme: structural key}`` for every tensor of ``arch``."""
    return {render(k, scheme): k for k in structural_keys(arch, include_head)}


def head_names(scheme: str, arch: Optional[str] = None) -> Tuple[str, str]:
    """Names of the classifier weight and bias in ``scheme`` (the layer whose rows are the classes: ``fc`` of a
    ResNet, the last Dense of a small network's ``fc``, ``classifier.6`` of a VGG)."""
    spec = (seq_spec(arch) or pair_spec(arch) or vgg_spec(arch)) if arch else None
    if spec is not None:
        layer = f"{head_module(arch)}.{spec.classifier_index()}"
        return f"{layer}.weight", f"{layer}.bias"
    head = MODULE_NAMES["head"][scheme]
    return f"{head}.weight", f"{head}.bias"


def bn_tracked_names(arch: str) -> List[str]:
    """torchvision ``num_batches_tracked`` buffer names for ``arch`` (one per BatchNorm)."""
    return [name.rsplit(".", 1)[0] + "." + NUM_BATCHES_TRACKED
            for name, key in name_table(arch, "torchvision").items() if key[1] == "bn_mean"]


_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.")


def detect_arch(shapes: Mapping[str, Sequence[int]]) -> str:
    """Detect the architecture from parameter names and shapes (any supported naming scheme).

    ResNets: bottleneck vs basic block is read from the presence of ``conv3``, the depth from the number of blocks
    in each stage, and the variant of a depth (ResNet, ResNeXt, Wide ResNet) from the shape of the first block's
    3x3 conv. A VGG or a small network is recognised by its
    exact set of tensor names (with or without its classifier layer), which differs between the VGG depths and
    between the plain and ``_bn`` variants.
    """
    found = {name for name in shapes if not name.endswith("." + NUM_BATCHES_TRACKED)}   # torch-only buffers
    for arch in _PLAIN_ARCHS:
        for scheme in SCHEMES:
            if found in (set(name_table(arch, scheme)), set(name_table(arch, scheme, include_head=False))):
                return arch
    blocks: Dict[int, set] = defaultdict(set)
    bottleneck = False
    for name in shapes:
        m = _BLOCK_RE.match(name)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
            bottleneck |= name.split(".")[2] == "conv3"
    counts = tuple(len(blocks[s]) for s in range(1, 5))
    candidates = [a for a in list_archs("resnet") if resnet_layout(a).depths == counts
                  and (resnet_layout(a).block == "bottleneck") == bottleneck]
    # ResNet-50, ResNeXt-50 32x4d and Wide ResNet-50-2 share every name: the first block's 3x3 conv tells them apart
    # by its shape (inner width, width per group). Without shapes (names only), the plain ResNet of that depth.
    conv2 = tuple(next((shape for name, shape in shapes.items() if name.endswith("layer1.0.conv2.weight")), ()))
    if len(conv2) == 4:
        candidates = [a for a in candidates if resnet_layout(a).first_conv2_shape() == conv2]
    elif len(candidates) > 1:
        candidates = [a for a in candidates if a in ARCH_SPECS]
    if len(candidates) == 1:
        return candidates[0]
    known = ", ".join(f"{a}={list(resnet_layout(a).depths)} layer1.0.conv2 {list(resnet_layout(a).first_conv2_shape())}"
                      for a in list_archs("resnet"))
    found_conv2 = f", layer1.0.conv2 {list(conv2)}" if conv2 else ""
    raise ValueError(f"cannot detect the ResNet depth (and variant): found {list(counts)} blocks per stage "
                     f"({'bottleneck' if bottleneck else 'basic'} blocks{found_conv2}); known: {known}. "
                     f"Is this a ResNet checkpoint? Pass --arch explicitly if it is (VGGs and the seed networks are "
                     f"recognised by their exact tensor names: {', '.join(_PLAIN_ARCHS)}).")


def detect_scheme(names: Iterable[str], arch: str) -> str:
    """The naming scheme whose names for ``arch`` cover the most of ``names``."""
    names = set(names)
    scores = {s: len(names & set(name_table(arch, s))) for s in SCHEMES}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        sample = ", ".join(sorted(names)[:5])
        raise ValueError(f"no known naming scheme matches these keys (first: {sample}); expected "
                         f"torchvision (bn1, downsample), ms_transfer (norm, down_sample) or mindcv "
                         f"(bn1, down_sample, classifier) names")
    return best


def name_map(arch: str, src: str, dst: str) -> Dict[str, str]:
    """``{name in src: name in dst}`` for every tensor of ``arch``."""
    return {render(k, src): render(k, dst) for k in structural_keys(arch)}


def branch_copies(src_arch: str, dst_arch: str) -> Dict[str, List[str]]:
    """``{src name: [dst names]}`` (this project's names) when ``dst_arch`` is built from ``src_arch``'s trunk: the
    digit adder takes the recogniser's trunk into each branch (as independent copies: the digit-adder article warns that
    assigning one module to both branches shares its storage). Empty for unrelated architectures."""
    spec = pair_spec(dst_arch)
    if spec is None or spec.branch != src_arch:
        return {}
    src = [render(k, "ms_transfer") for k in _trunk_keys(spec.branch_spec, "features")]
    return {name: [name.replace("features.", f"{b}.", 1) for b in spec.branches] for name in src}


def parameterless_map(src: str, dst: str) -> Dict[str, str]:
    """Module-name map of :data:`PARAMETERLESS_NAMES` from scheme ``src`` to ``dst``."""
    src, dst = resolve_scheme(src), resolve_scheme(dst)
    return {names[src]: names[dst] for names in PARAMETERLESS_NAMES.values()}


def rename(state: Mapping[str, object], arch: str, src: str, dst: str) -> Tuple[Dict[str, object], List[str]]:
    """Rename ``state`` from scheme ``src`` to ``dst``; returns (renamed, names not in the table)."""
    mapping = name_map(arch, src, dst)
    out = {mapping[name]: value for name, value in state.items() if name in mapping}
    return out, [name for name in state if name not in mapping]

