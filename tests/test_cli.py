"""Every script: --help renders, and an unknown option is one line and exit code 2."""

import importlib

import pytest

SCRIPTS = ("augment", "dataloader", "cache", "main", "evaluate", "grid", "inference",
           "benchmarks.cams", "benchmarks.training")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_renders(name, capsys):
    parser = importlib.import_module(name).get_args_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    assert stop.value.code == 0 and "--" in capsys.readouterr().out


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_is_one_line(name, capsys):
    parser = importlib.import_module(name).get_args_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--no-such-flag"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error:") and "\n" not in err
    assert "--no-such-flag" in err
