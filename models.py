"""Frozen VGG16 backbone, the report's CAM / ReCAM heads, checkpoints, and the shared CLI helpers.

    python -c "import models; print(models.load_backbone('../shared/weights/vgg16_imagenet_features.pth'))"
    python -c "import models; h, s, _ = models.load_checkpoint('model/RUN/epoch_3.pth'); print(s)"
"""

import json
import os
import sys
import tempfile


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the thing and what to do."""


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
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")


def atomic_torch_save(obj, path):
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))
