"""Command: see flowercam/dataset.py (moved there; this script only runs it)."""

from flowercam.core import run_main
from flowercam.dataset import get_args_parser, main

if __name__ == "__main__":
    run_main(main, get_args_parser())
