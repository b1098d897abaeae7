#!/usr/bin/env bash
# The tests, in any new shell on a fresh clone: set up .venv (once), then ruff, the import
# contracts and the whole test suite (about 990 tests, about 12 min on 2 quiet cores). The
# browser test needs Chromium: installed here when missing and this is root, else it is skipped.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -q && apt-get install -y -q chromium) >/dev/null
    else
        echo "warning: no chromium (apt-get install chromium): the report's browser test is skipped"
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
