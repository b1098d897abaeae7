"""Shared plumbing: one-line user errors, the CLI runner, atomic writes, writable folders.

    python -c "from flowercam import core; core.atomic_save_json('/tmp/x.json', {'a': 1})"
    python -c "from flowercam import core; core.check_writable_dir('/tmp/out')"
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the thing and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house habits: defaults shown in --help, a bad option is one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # no usage block: one line and exit 2, like a UserError
        self.exit(2, f"error: {message} (see --help)\n")


def run_main(main, parser, argv=None):
    """Parse arguments and run main(args); user errors become one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def atomic_write(path, write_fn, mode="wb"):
    """Call write_fn(file) on a temporary file beside `path`, then rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}): "
                        "choose a writable output folder") from None
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable_dir(path, flag="--output-dir"):
    """Fail now, not after the work is done, if an output folder cannot be made or written;
    folders made for the check are removed again (nothing is left behind on an error later)."""
    path = Path(path).absolute()
    first_new = next((p for p in [*reversed(path.parents), path] if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {flag} {path} ({err.strerror or err}): "
                        "choose a writable folder") from None
    finally:
        if first_new is not None and first_new.is_dir():
            shutil.rmtree(first_new, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")

