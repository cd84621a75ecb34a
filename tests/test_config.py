"""One config schema: YAML + flags, clear errors naming the key."""
import pytest

from ms_transfer.core.config import DEFAULT_CONFIG, ConfigError, TrainConfig, resolve_config


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_default_is_the_wolf_dog_finetune_tutorial_config():
    cfg = resolve_config([])
    assert DEFAULT_CONFIG.name == "wolf_dog_finetune.yaml"
    assert (cfg.arch, cfg.image_size, cfg.batch_size, cfg.lr, cfg.momentum, cfg.epochs, cfg.strategy) == \
        ("resnet50", 224, 18, 0.001, 0.9, 5, "finetune")
    fixed = resolve_config(["--config", str(DEFAULT_CONFIG.parent / "wolf_dog_fixed_feature.yaml")])
    assert (fixed.strategy, fixed.momentum) == ("fixed_feature", 0.5)


def test_flags_override_yaml(tmp_path):
    cfg = resolve_config(["--config", _yaml(tmp_path, "epochs: 3\nlr: 0.5\n"), "--epochs", "7",
                          "--unfreeze", "fc.*", "layer4.*", "--lr-mult", "fc.*=10"])
    assert (cfg.epochs, cfg.lr, cfg.unfreeze, cfg.lr_mult) == (7, 0.5, ["fc.*", "layer4.*"], {"fc.*": 10.0})


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'learning_rate'.*known keys: arch"):
        resolve_config(["--config", _yaml(tmp_path, "learning_rate: 0.1\n")])


@pytest.mark.parametrize("text, key", [("strategy: linear\n", "strategy"), ("epochs: two\n", "epochs"),
                                       ("epochs: 0\n", "epochs"), ("lr: -1\n", "lr"),
                                       ("lr_mult: {'fc.*': 0}\n", "lr_mult"), ("freeze: layer1\n", "freeze"),
                                       ("head_epochs: 5\nepochs: 5\n", "head_epochs")])
def test_bad_values_are_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        resolve_config(["--config", _yaml(tmp_path, text)])


def test_missing_config_and_bad_flag(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit):
        resolve_config(["--strategy", "linear"])
    assert "invalid choice" in capsys.readouterr().err


def test_pretrained_none_disables_download():
    cfg = resolve_config(["--pretrained", "none"])
    assert cfg.pretrained is None and cfg.pretrained_url is None
    assert TrainConfig().validate().pretrained_url is None
