"""Command: see flowercam/training.py (moved there; this script only runs it)."""

from flowercam.core import run_main
from flowercam.training import get_args_parser, main

if __name__ == "__main__":
    run_main(main, get_args_parser())
