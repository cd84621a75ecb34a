"""One flag convention across the commands (issue 24 §2): ``--batch-size`` (old spellings hidden, still parsed),
``--json PATH``, the same ``--mode`` / ``--device`` / ``--padding`` choices, the ``ms-transfer`` / ``ms-parity``
console scripts, help text that is true and plain, and the exit codes 0 / 1 / 2.

Cheap: parsers are built in this process (no model is built, trained or compiled); the only subprocesses are
``--help`` runs.
"""
from __future__ import annotations

import argparse

import pytest

from ms_transfer import bench
from parity.suite import cli as parity_cli


@pytest.mark.parametrize("build", [bench.build_parser, parity_cli.build_parser], ids=["bench", "parity"])
def test_batch_size_and_its_hidden_old_spelling_parse_to_the_same_value(build):
    parser = build()
    new, old = parser.parse_args(["--batch-size", "6"]), parser.parse_args(["--batch", "6"])
    dest = "batch" if build is bench.build_parser else "batch_size"
    assert getattr(new, dest) == getattr(old, dest) == 6
    assert getattr(parser.parse_args([]), dest) is None       # unset: the command's own default applies
    assert parser.get_default(dest) is None
    shown = parser.format_help()
    assert "--batch-size" in shown and "--batch " not in shown and "--batch\n" not in shown
    hidden = [a for a in parser._actions if "--batch" in a.option_strings]
    assert [a.help for a in hidden] == [argparse.SUPPRESS]


def test_the_old_batch_spelling_is_not_an_own_model_flag_either(capsys):
    """``--batch`` / ``--batch-size`` belong to the built-in models: with ``--torch-model`` either spelling is
    refused with the new name (the batch of an own pair is the first dimension of ``--input-shape``)."""
    for flag in ("--batch", "--batch-size"):
        code = parity_cli.main(["--torch-model", "m:f", "--ms-model", "m:g", "--input-shape", "2,3", flag, "4"])
        assert code == 2 and "--batch-size belong(s) to the built-in models" in capsys.readouterr().err


# --json PATH ----------------------------------------------------------------------------------------------------

def _reference_parsers():
    """``(command, parser)`` of every command, from the docs' CLI reference hook (the one list of commands)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "docs" / "hooks" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.parsers())


@pytest.fixture(scope="module")
def parsers():
    return _reference_parsers()


def test_json_takes_an_output_path_on_every_command(parsers):
    from ms_transfer.core.flags import json_path
    with_json = {command: a for command, p in parsers for a in p._actions if "--json" in a.option_strings}
    assert {"python -m ms_transfer.predict", "python -m ms_transfer.evaluate", "python -m parity",
            "python -m ms_transfer.bench"} <= set(with_json)
    wrong = {c: a for c, a in with_json.items() if a.type is not json_path or a.nargs is not None or a.metavar != "PATH"}
    assert not wrong, f"--json that is not the shared output path: {sorted(wrong)}"


def test_predict_json_never_overwrites_an_image(tmp_path, capsys):
    """``predict --ckpt C --json a.jpg b.jpg`` (``--json`` was a switch) is refused before anything runs, and
    ``a.jpg`` is byte-identical afterwards; so is an existing file that is not ``.json``; a bare ``--json`` names
    the new spelling."""
    from ms_transfer.predict import main as predict_main
    image, notes = tmp_path / "a.jpg", tmp_path / "notes.txt"
    image.write_bytes(b"\xff\xd8\xff\xe0 a jpeg's bytes")
    notes.write_text("keep me")
    before = image.read_bytes()
    for argv in (["--ckpt", str(tmp_path / "run.ckpt"), "--json", str(image), str(tmp_path / "b.jpg")],
                 ["--ckpt", str(tmp_path / "run.ckpt"), "--json", str(notes), str(image)],
                 ["--ckpt", str(tmp_path / "run.ckpt"), "--json", str(tmp_path / "new.png"), str(image)]):
        with pytest.raises(SystemExit) as exit_:
            predict_main(argv)
        assert exit_.value.code == 2
        assert "--json takes the output path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        predict_main(["--ckpt", str(tmp_path / "run.ckpt"), "--json", "--top-k", "2", str(image)])
    assert exit_.value.code == 2 and "to print JSON use --format json" in capsys.readouterr().err
    assert image.read_bytes() == before and notes.read_text() == "keep me"
    assert not (tmp_path / "new.png").exists()


def test_write_json_creates_its_folder_and_a_rerun_may_replace_its_result(tmp_path):
    from ms_transfer.core.flags import json_path, write_json
    target = json_path(str(tmp_path / "out" / "result.json"))
    write_json(target, {"accuracy": 1.0})
    write_json(None, {"ignored": True})
    assert target.read_text() == '{\n  "accuracy": 1.0\n}'
    bare = tmp_path / "result"            # an earlier run's JSON at a path without the suffix: replaced again
    write_json(json_path(str(bare)), [1])
    assert json_path(str(bare)) == bare
    with pytest.raises(argparse.ArgumentTypeError, match="not JSON"):
        json_path(str(tmp_path))          # a folder


# --mode, --device, --padding -------------------------------------------------------------------------------------

def _choices(parsers, flag):
    """``command -> (choices, default, help)`` of ``flag``; the trainers' flags default to "unset" (the config's
    value applies), so theirs is the schema's."""
    from ms_transfer.core.config import TrainConfig
    return {command: (a.choices, getattr(TrainConfig(), a.dest) if a.default == argparse.SUPPRESS else a.default,
                      a.help) for command, p in parsers for a in p._actions if flag in a.option_strings}


def test_mode_device_and_padding_offer_the_same_choices_everywhere(parsers):
    from ms_transfer.core.flags import DEVICES, MODES, PADDINGS
    modes, devices, paddings = (_choices(parsers, f) for f in ("--mode", "--device", "--padding"))
    assert len(modes) >= 5 and len(devices) >= 6 and len(paddings) >= 3, (modes, devices, paddings)
    for command, (choices, default, help_) in modes.items():
        assert list(choices) in (list(MODES), [*MODES, "both"]), command
        # a default other than graph says why, in the help
        assert default == "graph" or f"default: {default}: " in help_, (command, default, help_)
        assert "both" not in choices or "checks the two modes" in help_, command
    for command, (choices, default, _) in devices.items():
        assert list(choices) == list(DEVICES) == ["CPU", "GPU", "Ascend"] and default == "CPU", command
    for command, (choices, default, _) in paddings.items():
        assert list(choices) == list(PADDINGS) and default == "auto", command


def test_parity_padding_auto_is_torch():
    """``auto`` means what it means in training: the weights entry's convention, else torch (parity's seeded weights
    are no entry)."""
    from ms_transfer.core.weights import resolve_padding
    assert resolve_padding("auto", None)[0] == "torch"
    assert parity_cli.build_parser().parse_args(["--padding", "auto"]).padding == "auto"


def test_the_torch_side_refuses_ascend_with_the_fix():
    from ms_transfer.core.config import ConfigError
    from torch_reference.backend import torch_device
    assert str(torch_device("CPU")) == "cpu"
    with pytest.raises(ConfigError, match=r"Ascend is MindSpore's.*--device CPU.*--check-reference"):
        torch_device("Ascend")


def test_a_device_this_mindspore_cannot_run_on_is_bad_input(tmp_path):
    """This machine's MindSpore is a CPU build: ``--device Ascend`` exits 2 with the fix, not a traceback (in a
    subprocess: a refused device_target is process state)."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "ms_transfer.predict", "--ckpt", str(tmp_path / "run.ckpt"),
                             "--device", "Ascend", str(tmp_path / "a.jpg")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "device Ascend: this MindSpore cannot run on it" in result.stderr and "Traceback" not in result.stderr


# console scripts -------------------------------------------------------------------------------------------------

def _scripts():
    """``[project.scripts]`` of pyproject.toml as ``{name: "module:function"}`` (read as text: Python 3.9/3.10 have
    no tomllib)."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[)", text, re.S | re.M).group(1)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section, re.M))


def test_console_scripts_point_at_importable_mains():
    import importlib
    scripts = _scripts()
    assert {"ms-transfer": "ms_transfer.cli:main", "ms-parity": "parity.__main__:run"}.items() <= scripts.items()
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_ms_transfer_help_lists_every_subcommand_and_bad_input_exits_2(capsys):
    from ms_transfer import cli
    assert set(cli.COMMANDS) == {"train", "evaluate", "predict", "convert", "study", "bench"}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: ms-transfer")
    for name, (module, _) in cli.COMMANDS.items():
        assert f"  {name} " in out and f"python -m {module}" in out, name
    for argv in ([], ["no-such-command"], ["--epochs", "3"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv


def test_ms_transfer_forwards_the_flags_to_the_command(tmp_path, capsys):
    """``ms-transfer convert --help`` is ``python -m ms_transfer.convert --help``; a bad input there keeps the
    command's own exit code (convert: a missing source, 2)."""
    from ms_transfer import cli
    with pytest.raises(SystemExit) as exit_:
        cli.main(["convert", "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m ms_transfer.convert")
    assert cli.main(["convert", "no_such_file.pth", str(tmp_path / "out.ckpt")]) == 2
    assert "no_such_file.pth" in capsys.readouterr().err


# --help tells the truth ------------------------------------------------------------------------------------------

MARKUP = r":[a-z]+:`|`"   # Sphinx roles, reStructuredText ``literals`` and markdown `code`


def test_every_flag_has_help_and_no_help_has_markup(parsers):
    import re
    missing, marked = [], []
    for command, parser in parsers:
        missing += [f"{command} {'/'.join(a.option_strings) or a.dest}" for a in parser._actions if not a.help]
        marked += [f"{command}: ...{m.string[max(0, m.start() - 40):m.end() + 20]}..."
                   for m in re.finditer(MARKUP, parser.format_help())]
    assert not missing, f"flags without help: {missing}"
    assert not marked, "markup in --help:\n" + "\n".join(marked)


def test_the_trainers_help_shows_the_defaults_that_apply(parsers):
    """Without ``--config`` the default config's values apply: every default ``--help`` shows is the value a run
    with no flags resolves to (the schema's ``None`` is never shown), and ``--lr-mult``'s example is in the flag's
    own form."""
    import re
    from ms_transfer.core.config import DEFAULT_CONFIG, _shown, resolve_config
    applied = resolve_config([]).to_dict()
    for command, parser in parsers:
        if not command.endswith(".train"):
            continue
        text = " ".join(parser.format_help().split())
        assert "default: None" not in text and "(default config: resnet50_tutorial;" in text, command
        assert "e.g. 'fc.*=10'" in text and DEFAULT_CONFIG.stem in text
        for action in parser._actions:
            shown = re.search(r"\((?:default config|default): ([^;)]+)", " ".join(action.help.split()))
            if action.dest in applied and shown:
                assert shown.group(1) == _shown(applied[action.dest]), (command, action.dest, shown.group(1))
        padding = next(a for a in parser._actions if a.dest == "padding")
        assert " ".join(padding.help.split()).endswith("resnet50_tutorial weights: same)")


# exit codes ------------------------------------------------------------------------------------------------------

def test_bad_input_exits_2_on_every_command(tmp_path, capsys):
    """A few bad inputs, one per command, each refused before any model is built: exit 2 with ``error:``
    (argparse's ``error:`` for a bad flag value). Predict's unreadable image is tests/test_evaluate_predict.py's
    (it needs a trained checkpoint), ms_transfer.evaluate's is test_evaluate_cli (it sets MindSpore's mode, process
    state this file leaves alone)."""
    from ms_transfer import study, train
    from torch_reference import evaluate
    from ms_transfer.core.flags import EXIT_BAD_INPUT
    missing = str(tmp_path / "missing")
    cases = {
        "train": lambda: train.main(["--config", missing + ".yaml"]),
        "torch_reference.evaluate": lambda: evaluate.main(["--ckpt", missing + ".ckpt", "--data-dir", missing]),
        "study": lambda: study.main(["--config", missing + ".yaml"]),
        "bench": lambda: bench.main(["--arch", "no_such_arch"]),
        "bench batch": lambda: bench.main(["--batch-size", "0"]),
        "parity": lambda: parity_cli.main(["--batch-size", "1"]),
    }
    for name, run in cases.items():
        try:
            code = run()
        except SystemExit as exit_:
            code = exit_.code
        assert code == EXIT_BAD_INPUT == 2, name
        assert "error: " in capsys.readouterr().err, name
