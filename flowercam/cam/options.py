"""A CAM method's options: their record (default + check) and the checks they share.

    python -c "from flowercam.cam import options; print(options.positive_int('n')(3, {}))"
    .venv/bin/pytest tests/test_cams.py -q -k options
"""

import dataclasses
from collections.abc import Callable

from flowercam.core import UserError


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method: its default and its check (value, the options resolved so far ->
    the checked value, UserError otherwise)."""

    default: object
    check: Callable = lambda value, opts: value


def choice(name, choices):
    """An Option check: the value must be one of `choices`."""
    def check(value, opts):
        check_choice(name, value, choices)
        return value
    return check


def boolean(name):
    def check(value, opts):
        if not isinstance(value, bool):
            raise UserError(f"{name} {value!r} must be true or false")
        return value
    return check


def number(name, low=0.0):
    def check(value, opts):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value < float("inf")):
            raise UserError(f"{name} {value!r} must be a finite number >= {low:g}")
        return float(value)
    return check


def non_negative_int(name):
    def check(value, opts):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{name} {value!r} must be a whole number >= 0")
        return value
    return check


def positive_int(name):
    def check(value, opts):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
                or value < 1:
            raise UserError(f"{name} {value!r} must be a whole number >= 1")
        return int(value)
    return check


def check_choice(name, value, choices):
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}: use one of {', '.join(map(str, choices))}")
