"""Shared plumbing: one-line user errors, the CLI runner, atomic writes, writable folders, and
reading back a file written with torch.save.

    python -c "from flowercam import core; core.atomic_save_json('/tmp/x.json', {'a': 1})"
    python -c "from flowercam import core; core.check_writable_dir('/tmp/out')"
"""

import argparse
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

TMP_PREFIX = ".tmp-"  # atomic_write's temporary files: never a final name


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the thing and what to do, in
    the library's terms. topic (e.g. "data", "masks", "model") lets a command add its own flag
    advice (run_main's hints)."""

    def __init__(self, message, topic=None):
        super().__init__(message)
        self.topic = topic


NO_DEFAULT = (None, False, argparse.SUPPRESS)  # "(default: None)" says nothing (0 does: is, not ==)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (a script's whole docstring: its sentence and its examples,
    never re-wrapped), and "(default: X)" after a flag's help unless the help already says its
    default or there is none to say (None, False, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        empty = isinstance(action.default, (list, tuple)) and not action.default
        if "default" in text.lower() or empty or any(action.default is v for v in NO_DEFAULT):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house habits: --help shows the description whole (pass the script's
    __doc__) and each default once; a bad option is one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # no usage block: one line and exit 2, like a UserError
        self.exit(2, f"error: {message} (see --help)\n")


def is_number(value) -> bool:
    """An int or float read from JSON (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(record, specs, source, advice):
    """Every field of `record` (a dict read back from disk) that specs names must pass its check
    (specs: {field: (check(value) -> bool, what it must be)}); else one UserError naming `source`,
    the field and `advice`. A field missing from record is left to the caller."""
    for field, (check, want) in specs.items():
        if field in record and not check(record[field]):
            raise UserError(f"{source}: {field} must be {want}, got {record[field]!r}: {advice}")


def run_main(main, parser, argv=None, hints=None):
    """Parse arguments and run main(args); user errors become one line on stderr and exit code 2,
    with the command's advice for the error's topic appended (hints: {topic: advice})."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except UserError as err:
        hint = (hints or {}).get(err.topic)
        print(f"error: {err}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


DISK_ERRNOS = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space in your quota",
               errno.EFBIG: "raise the file-size limit (ulimit -f) or free space",
               errno.EROFS: "choose a writable folder (the file system is read-only)"}


def disk_error(path, err) -> UserError:
    """A full disk / quota / file-size limit / read-only file system as one line naming path."""
    return UserError(f"cannot write {path} ({os.strerror(err.errno)}): "
                     f"{DISK_ERRNOS[err.errno]}, then rerun")


@contextlib.contextmanager
def disk_errors(path):
    """Turn a disk-full class OSError inside the block into disk_error(path)."""
    try:
        yield
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise disk_error(path, err) from None
        raise


class _GuardedFile:
    """The temporary file as write_fn sees it. No fileno(): Pillow and numpy then write through
    write(), where a full disk raises, not through the raw descriptor (Pillow's encoder silently
    truncates there). The first OSError is kept for libraries that re-raise it as something else
    (torch.save: RuntimeError "unexpected pos")."""

    def __init__(self, file):
        self._file, self.error = file, None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._file, name)


def atomic_write(path, write_fn, mode="wb", durable=True):
    """Call write_fn(file) on a temporary file beside `path`, fsync it, rename it over `path`,
    fsync the folder: `path` is the old or the complete new content, even after a power cut.
    durable=False skips the two fsyncs (about 16 ms a file here) for bulk writers that sync once
    at the end (augment.py: os.sync before "complete"). A full disk (DISK_ERRNOS) is a UserError
    naming path; the temporary file is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    check_name_length(path)
    try:
        os.makedirs(folder, exist_ok=True)
        # the temporary name keeps the end of the final one (its extension: Pillow reads the
        # format from it) but never makes a name too long where the final one fits
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX,
                                   suffix=os.path.basename(path)[-TMP_SUFFIX:])
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise disk_error(path, err) from None
        if err.errno == errno.ENAMETOOLONG:
            raise UserError(f"cannot write {path}: the path is too long for this file system "
                            "(File name too long): choose a shorter --output-dir") from None
        raise UserError(f"cannot write {path} ({err.strerror or err}): "
                        "choose a writable output folder") from None
    guard = None
    try:
        with os.fdopen(fd, mode) as f:
            guard = _GuardedFile(f)
            write_fn(guard)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
        if durable:
            fsync_dir(folder)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = err if isinstance(err, OSError) else getattr(guard, "error", None)
        if cause is not None and cause.errno in DISK_ERRNOS:
            raise disk_error(path, cause) from None
        raise


NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, APFS, NTFS: 255)
TMP_SUFFIX = 64  # characters of the final name kept at the end of a temporary one


def check_name_length(path):
    """A file name longer than the file system allows is one line saying so (not "choose a
    writable folder"): outputs are named after their inputs, e.g. an image's name."""
    name = os.path.basename(os.fspath(path))
    size = len(os.fsencode(name))
    if size > NAME_MAX:
        raise UserError(f"cannot write {name[:40]}...{name[-20:]}: its name is {size} bytes long, "
                        f"more than the {NAME_MAX} a file name may have: shorten the name it is "
                        "made from (e.g. rename the input image)")


def fit_name(stem, suffix) -> str:
    """stem + suffix as a file name of at most NAME_MAX bytes: a stem too long keeps its start
    and ends in ~ and 8 hex digits of its hash (distinct stems stay distinct)."""
    name = stem + suffix
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    tag = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
    room = NAME_MAX - len(os.fsencode(tag + suffix))
    short = os.fsencode(stem)[:room].decode(errors="ignore")  # never half a character
    return short + tag + suffix


def fsync_dir(folder):
    """Make a rename inside folder durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_temporaries(folder):
    """Delete leftover atomic_write temporaries (TMP_PREFIX*) of an interrupted earlier run."""
    for leftover in Path(folder).glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def check_writable_dir(path, flag="--output-dir", advice="choose a writable folder"):
    """Fail now, not after the work is done, if an output folder cannot be made or written;
    folders made for the check are removed again (nothing is left behind on an error later).
    flag names the folder in the message (a flag, or words such as "the run folder")."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder: {advice}")
    first_new = next((p for p in [*reversed(path.parents), path] if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {flag} {path} ({err.strerror or err}): "
                        f"{advice}") from None
    finally:
        if first_new is not None and first_new.is_dir():
            shutil.rmtree(first_new, ignore_errors=True)


def check_writable_file(path, flag):
    """An output file's path: not a folder, and its folder writable (checked before the work)."""
    if Path(path).is_dir():
        raise UserError(f"{flag} {path} is a folder: give a file name inside it")
    check_writable_dir(Path(path).absolute().parent, f"the folder of {flag}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (weights files are hundreds of MB): what
    runs, checkpoints and caches record of a file, so a file replaced at the same path is told."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch(path, what, missing, unreadable=None):
    """torch.load(path) on the CPU with weights_only=True (plain tensors and containers only);
    UserError "{what} {path} not found: {missing}" or "cannot read {what} {path} (Error):
    {unreadable or missing}". Checkpoints, segmenters, seeds caches and weights files read
    through it; what the object holds is the caller's to check."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} not found: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read {what} {path} ({type(err).__name__}): "
                        f"{unreadable or missing}") from None
