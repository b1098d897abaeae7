"""A command run under torchrun by test_distributed.py with a fault injected: cache.py whose
backbone kills its own process (SIGKILL) on rank KILL_RANK after KILL_AFTER batches.

    KILL_RANK=1 KILL_AFTER=1 torchrun --standalone --nproc-per-node 2 tests/dist_jobs.py \
        --data-dir DATA --backbone-weights W.pth --batch-size 3
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scripts at the root

import cache  # noqa: E402
from flowercam import dist  # noqa: E402
from flowercam.model import vgg  # noqa: E402

FORWARD = vgg.Backbone.forward
CALLS = []


def dying_forward(self, x):
    CALLS.append(len(x))
    if dist.rank() == int(os.environ["KILL_RANK"]) and len(CALLS) > int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return FORWARD(self, x)


if __name__ == "__main__":
    vgg.Backbone.forward = dying_forward
    dist.run_main(cache.main, cache.get_args_parser())
