"""The pretrained-weights table: contents checked against torchvision itself, loopback downloads into the cache
(once, verified, re-fetched when damaged, clear offline errors), and resolution from a training config."""
import dataclasses
import hashlib
import io
import itertools
import re
import time

import pytest
import torch
import torch.hub
import torchvision

import ms_transfer.core.recipe as recipe
import ms_transfer.core.weights as weights
from ms_transfer.core.archs import list_archs
from ms_transfer.core.checkpoint_io import CheckpointError
from ms_transfer.core.config import TrainConfig, resolve_config
from ms_transfer.core.download import DownloadError
from ms_transfer.core.weights import (TUTORIAL_CKPT_URL, WEIGHTS, get_weights, register_weights, resolve_padding,
                                      resolve_pretrained, url_cache_path)

#: every ResNet weights enum torchvision has, and the versions it offers (checked against torchvision below)
TV_RESNETS = {"resnet18": ("V1",), "resnet34": ("V1",), "resnet50": ("V1", "V2"), "resnet101": ("V1", "V2"),
              "resnet152": ("V1", "V2"), "resnext50_32x4d": ("V1", "V2"), "resnext101_32x8d": ("V1", "V2"),
              "resnext101_64x4d": ("V1",), "wide_resnet50_2": ("V1", "V2"), "wide_resnet101_2": ("V1", "V2")}
#: every VGG depth's ImageNet weights (VGG16's IMAGENET1K_FEATURES is left out: NaN classifier, 0-255 inputs)
TV_VGGS = {f"vgg{d}{bn}": ("V1",) for d in (11, 13, 16, 19) for bn in ("", "_bn")}
_unique = itertools.count()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Never touch the internet: a download of anything but the loopback server fails the test."""
    real = weights.download_file

    def guarded(url, dest, **kw):
        if not url.startswith("http://127.0.0.1:"):
            pytest.fail(f"test tried to download {url}")
        return real(url, dest, **kw)
    monkeypatch.setattr(weights, "download_file", guarded)
    monkeypatch.setattr(recipe, "download_file", guarded)


def _tv_enum(arch):
    return torchvision.models.get_model_weights(arch)


# --- (a) the table ------------------------------------------------------------------------------------------

def test_tutorial_entry():
    e = get_weights("resnet50_tutorial")
    assert (e.name, e.arch, e.naming, e.padding, e.num_classes) == (
        "resnet50_tutorial", "resnet50", "ms_transfer", "same", 1000)
    assert e.url == TUTORIAL_CKPT_URL and e.filename == "resnet50_224_new.ckpt"
    assert get_weights("tutorial") is e and get_weights("RESNET50_224_NEW") is e
    padding, why = resolve_padding("auto", e)
    assert padding == "same" and "resnet50_tutorial" in why
    assert resolve_padding("torch", e)[0] == "torch" and resolve_padding("auto", None)[0] == "torch"


def test_torchvision_entries_match_torchvision():
    """URL, sha256 prefix, eval transform and accuracy of every torchvision ResNet and VGG entry, read from
    torchvision."""
    for arch, versions in {**TV_RESNETS, **TV_VGGS}.items():
        enum = _tv_enum(arch)
        listed = [m.name for m in enum if m.name != "IMAGENET1K_FEATURES"]
        assert listed == [f"IMAGENET1K_{v}" for v in versions], arch  # no entry forgotten
        for tv in (m for m in enum if m.name != "IMAGENET1K_FEATURES"):
            version = tv.name.rsplit("_", 1)[1]
            e = get_weights(f"{arch}_imagenet1k_{version.lower()}")
            assert get_weights(str(tv)) is e  # "ResNet50_Weights.IMAGENET1K_V2" is an alias
            assert e.arch == arch and e.url == tv.url
            assert e.url.startswith("https://download.pytorch.org/models/")
            # torch.hub's own rule for the hash prefix in the file name (what load_state_dict_from_url checks)
            prefix = torch.hub.HASH_REGEX.search(tv.url.rsplit("/", 1)[1]).group(1)
            assert len(prefix) == 8 and e.sha256 == prefix
            assert e.filename == tv.url.rsplit("/", 1)[1]
            transform = tv.transforms()
            assert [e.resize_size] == list(transform.resize_size)
            # torchvision's V2 recipes evaluate at 232 (ResNeXt-101 64x4d has only such a V1)
            assert e.resize_size == (232 if version == "V2" or arch == "resnext101_64x4d" else 256)
            assert [e.crop_size] == list(transform.crop_size) == [224]
            assert list(e.mean) == list(transform.mean) and list(e.std) == list(transform.std)
            assert e.num_classes == len(tv.meta["categories"]) == 1000
            assert e.meta["acc@1"] == tv.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            assert (e.naming, e.padding, e.classes) == ("torchvision", "torch", "imagenet1k")
            assert resolve_padding("auto", e)[0] == "torch"
    assert len([e for e in WEIGHTS.values() if e.naming == "torchvision"]) == sum(map(len, TV_RESNETS.values())) + 8
    assert set(TV_RESNETS) | set(TV_VGGS) == set(list_archs("resnet")) | set(list_archs("vgg"))  # every arch listed


def test_aliases_are_case_insensitive():
    e = get_weights("resnet50_imagenet1k_v2")
    for alias in ("ResNet50_Weights.IMAGENET1K_V2", "resnet50_weights.imagenet1k_v2", "RESNET50_IMAGENET1K_V2"):
        assert get_weights(alias) is e
    assert get_weights("ResNet18_Weights.IMAGENET1K_V1").url.endswith("resnet18-f37072fd.pth")
    assert weights.list_weights("resnet50") == sorted(
        (x for x in WEIGHTS.values() if x.arch == "resnet50"), key=lambda x: x.name)
    assert weights.entry_for_url(e.url) is e and weights.entry_for_url("http://example.invalid/x.pth") is None


def test_duplicate_registration_raises_and_changes_nothing():
    before, aliases = dict(WEIGHTS), dict(weights._ALIASES)
    tutorial = get_weights("resnet50_tutorial")
    with pytest.raises(ValueError, match="'resnet50_tutorial' is already registered"):
        register_weights(tutorial)
    with pytest.raises(ValueError, match="already registered"):  # names are case-insensitive too
        register_weights(dataclasses.replace(tutorial, name="RESNET50_TUTORIAL"))
    with pytest.raises(ValueError, match=r"'ResNet50_Weights\.IMAGENET1K_V2' is already registered.*"
                                         r"resnet50_imagenet1k_v2"):
        register_weights(dataclasses.replace(tutorial, name="brand_new_entry"), "ResNet50_Weights.IMAGENET1K_V2")
    assert WEIGHTS == before and weights._ALIASES == aliases  # no half-registered entry


# --- (b) loopback downloads into the cache ------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_pth():
    """A real torchvision resnet18 state dict, serialized as a ``.pth`` file's bytes."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18().state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def temp_entry():
    """``temp_entry(url, sha256)``: a registered copy of the resnet18 V1 entry with a fresh name; removed after."""
    added = []

    def make(url, sha256, name=None):
        name = name or f"test_tmp_resnet18_{next(_unique)}"
        entry = dataclasses.replace(get_weights("resnet18_imagenet1k_v1"), name=name, url=url, sha256=sha256,
                                    aliases=())
        added.append(name)
        return register_weights(entry, f"Test_Alias.{name}")

    yield make
    for name in added:
        WEIGHTS.pop(name, None)
        for alias in [a for a, n in weights._ALIASES.items() if n == name]:
            del weights._ALIASES[alias]


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_entry_downloads_once_and_is_verified(tmp_path, serve_files, temp_entry, resnet18_pth):
    base, hits = serve_files({"/models/resnet18-test.pth": resnet18_pth})
    entry = temp_entry(base + "/models/resnet18-test.pth", hashlib.sha256(resnet18_pth).hexdigest())
    target = tmp_path / "weights" / entry.name / "resnet18-test.pth"
    for spec in (entry.name, entry.name.upper(), f"Test_Alias.{entry.name}"):
        assert resolve_pretrained(spec, tmp_path) == (str(target), entry)
    assert hits == ["/models/resnet18-test.pth"]  # fetched once, then served from the cache
    assert target.read_bytes() == resnet18_pth and _files(tmp_path) == ["resnet18-test.pth"]
    state = torch.load(target, weights_only=True)
    assert state["layer4.1.bn2.running_var"].shape == (512,)  # a real, loadable torchvision state dict

    # a damaged cached file is noticed (verified again before use) and fetched anew
    damaged = bytearray(resnet18_pth)
    damaged[len(damaged) // 2] ^= 0xFF
    target.write_bytes(bytes(damaged))
    assert resolve_pretrained(entry.name, tmp_path) == (str(target), entry)
    assert len(hits) == 2 and target.read_bytes() == resnet18_pth
    assert _files(tmp_path) == ["resnet18-test.pth"]

    # download=False uses the cache, and says where to place the file when the cache lacks it
    assert resolve_pretrained(entry.name, tmp_path, download=False) == (str(target), entry)
    with pytest.raises(DownloadError, match=re.escape(str(tmp_path / "other" / "weights" / entry.name))):
        resolve_pretrained(entry.name, tmp_path / "other", download=False)
    assert len(hits) == 2


def test_torchvision_style_sha256_prefix_is_accepted(tmp_path, serve_files, temp_entry, resnet18_pth):
    base, hits = serve_files({"/resnet18-x.pth": resnet18_pth})
    entry = temp_entry(base + "/resnet18-x.pth", hashlib.sha256(resnet18_pth).hexdigest()[:8].upper())
    path, _ = resolve_pretrained(entry.name, tmp_path)
    assert open(path, "rb").read() == resnet18_pth and len(hits) == 1


def test_wrong_sha256_leaves_nothing_in_the_cache(tmp_path, serve_files, temp_entry, resnet18_pth, monkeypatch):
    base, hits = serve_files({"/r18.pth": resnet18_pth})
    good = hashlib.sha256(resnet18_pth).hexdigest()
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    # a fresh cache
    entry = temp_entry(base + "/r18.pth", bad)
    with pytest.raises(DownloadError, match="sha256"):
        resolve_pretrained(entry.name, tmp_path)
    assert len(hits) == 1 and _files(tmp_path) == []  # neither the file nor a .part

    # the same entry whose cached (good) file no longer matches its sha256: removed, fetched, refused
    entry = temp_entry(base + "/r18.pth", good)
    path, _ = resolve_pretrained(entry.name, tmp_path)
    assert _files(tmp_path) == ["r18.pth"] and len(hits) == 2
    monkeypatch.setitem(WEIGHTS, entry.name, dataclasses.replace(entry, sha256=bad))
    with pytest.raises(DownloadError, match="sha256") as info:
        resolve_pretrained(entry.name, tmp_path)
    assert len(hits) == 3 and _files(tmp_path) == []
    assert path in str(info.value)  # where to place a good file by hand


def test_offline_fails_fast_naming_url_and_target(tmp_path, temp_entry):
    url = "http://127.0.0.1:9/x.pth"  # nothing listens on the discard port
    entry = temp_entry(url, "0" * 64)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        resolve_pretrained(entry.name, tmp_path)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and str(tmp_path / "weights" / entry.name / "x.pth") in message
    assert _files(tmp_path) == []


def test_unknown_names_and_missing_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"unknown pretrained weights 'resnet51_imagenet'.*resnet50_tutorial"):
        resolve_pretrained("resnet51_imagenet", tmp_path)
    with pytest.raises(CheckpointError, match=r"unknown pretrained weights.*resnet18_imagenet1k_v1"):
        get_weights("nope")
    monkeypatch.chdir(tmp_path)
    for spec in ("missing.pth", str(tmp_path / "missing.pth"), "sub/dir/w.ckpt"):
        with pytest.raises(CheckpointError, match=r"no such file.*resnet50_tutorial"):
            resolve_pretrained(spec, tmp_path / "cache")
    assert _files(tmp_path) == []
    (tmp_path / "mine.pth").write_bytes(b"x")  # an existing file passes through unchanged, no entry
    assert resolve_pretrained(str(tmp_path / "mine.pth"), tmp_path / "cache") == (str(tmp_path / "mine.pth"), None)


def test_url_cache_path_is_keyed_by_the_whole_url(tmp_path):
    a = url_cache_path("http://a.example/models/w.pth", tmp_path)
    b = url_cache_path("http://b.example/models/w.pth?x=1", tmp_path)
    assert a.name == b.name == "w.pth" and a != b and a.parent.parent == tmp_path / "urls"


# --- (c) from a training config (python -m ms_transfer.train) ----------------------------------------------

def test_training_config_resolves_entries_and_urls(tmp_path, serve_files, temp_entry, resnet18_pth):
    base, hits = serve_files({"/m/resnet18-cfg.pth": resnet18_pth, "/plain/other.pth": resnet18_pth})
    entry = temp_entry(base + "/m/resnet18-cfg.pth", hashlib.sha256(resnet18_pth).hexdigest())
    expected = str(recipe.CACHE_DIR / "weights" / entry.name / "resnet18-cfg.pth")

    cfg = TrainConfig(arch="resnet18", pretrained=entry.name, output_dir=str(tmp_path / "run")).validate()
    assert recipe.pretrained_weights(cfg) == (expected, entry)
    assert hits == ["/m/resnet18-cfg.pth"]
    # the command line: --pretrained NAME and --pretrained-url URL (explicit flags over the default config)
    assert recipe.pretrained_weights(resolve_config(["--pretrained", entry.name])) == (expected, entry)
    cfg = TrainConfig(arch="resnet18", pretrained_url=entry.url).validate()
    assert recipe.pretrained_weights(cfg) == (expected, entry)  # the entry's URL goes through the entry
    assert hits == ["/m/resnet18-cfg.pth"]

    other = base + "/plain/other.pth"
    cfg = TrainConfig(arch="resnet18", pretrained_url=other).validate()
    for _ in range(2):
        assert recipe.pretrained_weights(cfg) == (str(url_cache_path(other, recipe.CACHE_DIR)), None)
    assert hits == ["/m/resnet18-cfg.pth", "/plain/other.pth"]
    assert open(url_cache_path(other, recipe.CACHE_DIR), "rb").read() == resnet18_pth
    assert recipe.pretrained_weights(TrainConfig(pretrained="none", pretrained_url=other).validate()) == (None, None)


def test_pretrained_url_flag_wins_over_the_default_configs_entry(serve_files, resnet18_pth):
    """``--pretrained-url URL`` with the default config (whose YAML says ``pretrained: resnet50_tutorial``) must
    download URL, not the tutorial's checkpoint: flags take precedence over the YAML."""
    base, hits = serve_files({"/flag/w.pth": resnet18_pth})
    url = base + "/flag/w.pth"
    cfg = resolve_config(["--pretrained-url", url, "--arch", "resnet18"])
    assert recipe.pretrained_weights(cfg) == (str(url_cache_path(url, recipe.CACHE_DIR)), None)
    assert hits == ["/flag/w.pth"]
