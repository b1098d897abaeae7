"""Issue #11, arguments: every number flag of every script is checked when parsed (nan, inf,
negative seeds are one line and exit code 2, before anything runs or is written)."""

import importlib
import math

import pytest
from training_data import run_cli

from flowercam import flags

SCRIPTS = ["augment", "cache", "dataloader", "grid", "main", "evaluate", "inference"]
CHECKED_FLOATS = {flags.positive_float, flags.unit_float}


def actions(script):
    return importlib.import_module(script).get_args_parser()._actions


@pytest.mark.parametrize("script", SCRIPTS)
def test_number_flags_use_checked_types(script):
    for action in actions(script):
        assert action.type is not float, f"{script} {action.option_strings}: bare float"
        if action.dest == "seed":
            assert action.type is flags.seed_int, f"{script} --seed is not flags.seed_int"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_float_flag_rejects_nan_and_inf(script, capsys):
    module = importlib.import_module(script)
    for action in actions(script):
        if action.type not in CHECKED_FLOATS and action.dest != "seed":
            continue
        bad = ["-1"] if action.dest == "seed" else ["nan", "inf", "-inf"]
        for text in bad:
            with pytest.raises(SystemExit) as stop:
                module.get_args_parser().parse_args([f"{action.option_strings[-1]}={text}"])
            err = capsys.readouterr().err.strip()
            assert stop.value.code == 2 and "\n" not in err and text in err


@pytest.mark.parametrize("text", ["nan", "inf", "1e400"])
def test_checked_floats_refuse_non_finite(text):
    for check in CHECKED_FLOATS:
        with pytest.raises(Exception, match="must be"):
            check(text)
    assert math.isfinite(flags.positive_float("1e300"))


def test_main_nan_lr_writes_nothing(tmp_path, capsys):
    """Was: `main.py -l nan` -> a traceback from Adam and a run folder left behind."""
    import main as main_cli

    code, _ = run_cli(main_cli, ["-l", "nan", "--output-dir", str(tmp_path / "model")])
    assert code == 2 and "--lr" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
