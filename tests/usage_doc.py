"""docs/usage.md from the commands' own parsers: each command's --help (its docstring with the
examples, then every flag with its default), evaluate.py's three modes each with theirs.

    python tests/usage_doc.py > docs/usage.md     # after a flag changes (tests/test_usage_doc.py)
"""

import argparse
import importlib
import io
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the scripts live at the repo root

COMMANDS = ("augment", "dataloader", "cache", "main", "grid", "evaluate", "inference", "segment",
            "models")
BENCHMARKS = ("benchmarks.cams", "benchmarks.training", "benchmarks.cuts", "benchmarks.scaling",
              "benchmarks.backbones",
              "benchmarks.architecture", "benchmarks.results")
WIDTH = "100"  # argparse wraps --help to $COLUMNS

INTRO = """# Usage: every command, its modes and its flags

Generated from the commands' own parsers by `python tests/usage_doc.py > docs/usage.md`;
`tests/test_usage_doc.py` checks that it names every flag of every command and mode. The same
text is each command's `--help` (`python evaluate.py MODE --help` for one mode of evaluate.py).

Rules every command keeps:
- Numbers are checked when parsed: `nan`, `inf`, a negative seed or a zero batch size is one
  line (`error: ...`) and exit code 2 before anything runs or is written; so is an unknown flag.
- A flag is honoured or refused, never silently ignored: evaluate.py's modes each take their own
  flags (a flag of another mode is one line naming the modes it belongs to).
- Errors about your files or settings are one line naming the thing and what to do, exit code 2.
- Outputs are written atomically: an interrupted command leaves the old file or the new one.

| command | what it does |
|---|---|
"""


def prog(name) -> str:
    return f"python -m {name}" if "." in name else f"{name}.py"


def parsers(name):
    """[(title, parser)] of one command: the command, then each of its modes."""
    sys.argv[0] = prog(name)  # argparse names the program after sys.argv[0]
    parser = importlib.import_module(name).get_args_parser()
    found = [(prog(name), parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"{prog(name)} {mode}", sub) for mode, sub in action.choices.items()]
    return found


def help_text(parser) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        parser.print_help()
    return out.getvalue().rstrip()


def summary(name) -> str:
    """The docstring's first sentence (two if the first is a word or two), on one line."""
    first = importlib.import_module(name).__doc__.strip().split("\n\n")[0]
    sentences = " ".join(first.split()).split(". ")
    text = sentences[0] if len(sentences[0]) > 20 else ". ".join(sentences[:2])
    return text.rstrip(".").replace("|", "\\|")


def render() -> str:
    os.environ["COLUMNS"] = WIDTH
    lines = [INTRO.rstrip("\n")]
    lines += [f"| `{prog(n)}` | {summary(n)} |" for n in COMMANDS + BENCHMARKS]
    for heading, names in (("Commands", COMMANDS), ("Benchmarks", BENCHMARKS)):
        lines += ["", f"## {heading}"]
        for name in names:
            for i, (title, parser) in enumerate(parsers(name)):
                lines += ["", f"{'###' if i == 0 else '####'} `{title}`", "", "```text",
                          help_text(parser), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
