"""--help of every script: the whole docstring (its sentence and its examples, not the first line
cut mid-sentence) and each default said once (issue 40, defect 13)."""

import argparse
import importlib

import pytest

SCRIPTS = ("augment", "dataloader", "cache", "main", "evaluate", "grid", "inference", "segment",
           "models",
           "benchmarks.cams", "benchmarks.training", "benchmarks.cuts", "benchmarks.scaling",
           "benchmarks.architecture", "benchmarks.results")


def parsers(parser):
    """The parser and its sub-commands' parsers (evaluate.py's modes), each once."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += parsers(sub)
    return found


def flat(text):
    return " ".join(text.split())


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_whole_docstring(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as stop:
        module.get_args_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    for paragraph in module.__doc__.strip().split("\n\n"):  # the sentence, the examples, notes
        assert flat(paragraph) in flat(out)
    example = next(line for line in module.__doc__.splitlines() if "python " in line)
    assert example.rstrip() in out.splitlines()  # examples keep their lines and indentation


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_default_is_said_once(name):
    """Was: "default: the newest run under model/ (default: None)"."""
    for parser in parsers(importlib.import_module(name).get_args_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                continue
            shown = formatter._expand_help(action)
            for nothing in ("None", "False", "[]", "()"):
                assert f"(default: {nothing})" not in shown, shown
            if "default" in action.help.lower():
                assert "(default: " not in shown.replace(action.help % vars(action), ""), shown


def test_a_zero_default_is_still_said(capsys):
    """0 == False in Python: a seed's default 0 must not be taken for "no default"."""
    with pytest.raises(SystemExit):
        importlib.import_module("evaluate").get_args_parser().parse_args(["sanity", "--help"])
    assert "resamples (default: 0)" in flat(capsys.readouterr().out)


@pytest.mark.parametrize("name", ("benchmarks.cuts", "benchmarks.training", "benchmarks.scaling",
                                  "benchmarks.cams"))
def test_the_benchmarks_take_main_pys_backbone_flag(name):
    """Issue 38: the benchmarks load through the registry, --backbone as main.py says it (same
    help, default None = vgg16) and --backbone-weights a state dict file."""
    def action(parser, flag):
        return next(a for a in parser._actions if flag in a.option_strings)
    main = importlib.import_module("main").get_args_parser()
    parser = importlib.import_module(name).get_args_parser()
    ours, theirs = action(parser, "--backbone"), action(main, "--backbone")
    assert (ours.help, ours.default, ours.metavar) == (theirs.help, None, theirs.metavar)
    assert "state dict file" in action(parser, "--backbone-weights").help
    args = parser.parse_args(["--backbone", "resnet50", "--backbone-weights", "r.pth"])
    assert (args.backbone, args.backbone_weights) == ("resnet50", "r.pth")
