"""docs/usage.md names every command, every mode of evaluate.py and every flag of each, with the
docstrings' examples (regenerate: python tests/usage_doc.py > docs/usage.md)."""

import argparse
import importlib
import re

import pytest
from usage_doc import BENCHMARKS, COMMANDS, REPO, parsers, prog, render

DOC = REPO / "docs" / "usage.md"
FIX = "regenerate it: python tests/usage_doc.py > docs/usage.md"


@pytest.mark.parametrize("name", COMMANDS + BENCHMARKS)
def test_usage_doc_lists_every_flag_and_mode(name):
    doc = DOC.read_text()
    for title, parser in parsers(name):
        section = doc.split(f"`{title}`\n\n```text\n", 1)
        assert len(section) == 2, f"docs/usage.md has no section for {title}: {FIX}"
        text = section[1].split("```", 1)[0]
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:  # internal (e.g. a benchmark's --child)
                continue
            for option in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                    f"docs/usage.md's {title} lacks {option}: {FIX}")
    for line in importlib.import_module(name).__doc__.splitlines():
        if "python " in line:
            assert line.rstrip() in doc, f"docs/usage.md lacks the example {line.strip()}: {FIX}"


def test_render_is_the_doc_up_to_machine_defaults():
    """The file is the generator's output (lines with a default that depends on the machine,
    e.g. augment's worker count = the CPU count, may differ)."""
    ours, theirs = render().splitlines(), DOC.read_text().splitlines()
    assert len(ours) == len(theirs), FIX
    differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    wrong = [(a, b) for a, b in differ if re.sub(r"\d+", "N", a) != re.sub(r"\d+", "N", b)]
    assert not wrong, f"{FIX}; generated vs file: {wrong[:3]}"
    assert prog("benchmarks.cams") == "python -m benchmarks.cams"
