"""What a run records and how it is found again: its config.json, the data folder and the backbone
weights it trained on, and the defaults using a run takes from them.

    python -c "from flowercam.train import records; print(records.run_config('model/RUN'))"
    python -c "from flowercam.train import records; print(records.run_defaults('model/RUN'))"

config.json (CONFIG_NAME; written by main.py and grid.py, checked field by field when read back:
CONFIG_FIELDS) holds the run's flags, its head settings, and two records: the data folder,
absolute, with the sha256 of its split's ids (data_record), and the backbone weights file,
absolute, with its sha256 (weights_record). Using a run again (evaluate.py, --cam-metrics,
inference.py, --resume) finds them by path and checks them by hash (run_data_dir, run_weights): a
folder or file gone or changed since is a UserError, never a silent stand-in; --data-dir and
--backbone-weights may name copies, checked the same way. The run folder itself (checkpoints, the
training log, the best checkpoint): flowercam/train/runs.py.
"""

import hashlib
import json
import math
import os
import re
from pathlib import Path

from flowercam.core import UserError, check_fields, file_sha256, is_int, is_number
from flowercam.data import dataset
from flowercam.model import heads, normalization, vgg
from flowercam.model.heads import HeadSettings

CONFIG_NAME = "config.json"
CONFIG_NEEDS = ("split", "data_dir")  # what using a run reads from it (main.py writes them all)
_OPTIONAL_STR = (lambda v: v is None or (isinstance(v, str) and bool(v)), "a path or null")
# what main.py and grid.py write in config.json: checked when it is read back
CONFIG_FIELDS = {
    "split": (lambda v: v in (1, 2, 3) and is_int(v), "1, 2 or 3"),
    "data_dir": (lambda v: isinstance(v, str) and bool(v), "a folder path"),
    "lr": (lambda v: is_number(v) and 0 < v < math.inf, "a positive number"),
    "epochs": (lambda v: is_int(v) and v >= 1, "a positive integer"),
    "batch_size": (lambda v: is_int(v) and v >= 1, "a positive integer"),
    "seed": (is_int, "an integer"),
    "backbone_weights": _OPTIONAL_STR,
    "precision": (lambda v: v in ("fp32", "bf16"), "fp32 or bf16"),
    "no_cache": (lambda v: isinstance(v, bool), "true or false"),
    "model_type": (lambda v: v in heads.MODEL_TYPES, f"one of {', '.join(heads.MODEL_TYPES)}"),
    "normalize_by": (lambda v: v is None or v in normalization.NORMALIZERS,
                     f"null or one of {', '.join(normalization.NORMALIZERS)}"),
    # null: the backbone's default cut (main.py's default); the backbone checks a name at load
    "cut": (lambda v: v is None or (isinstance(v, str) and bool(v)),
            "a cut of the backbone (e.g. pool5) or null"),
    "recam_lambda": (lambda v: is_number(v) and 0 <= v < math.inf, "a number >= 0"),
    "train_images": (lambda v: is_int(v) and v >= 0, "a count"),
    "valid_images": (lambda v: is_int(v) and v >= 0, "a count"),
}


def run_config(path) -> dict:
    """config.json of a run directory or of a checkpoint's folder; {} when there is none (a
    checkpoint on its own). One that is unreadable, not JSON, or lacks CONFIG_NEEDS is a
    UserError naming it: a run's settings are never guessed."""
    path = Path(path)
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if not config_path.exists():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"run config {config_path} is unreadable ({err}): restore it, or delete "
                        "it to use the defaults (split 1)") from None
    missing = [k for k in CONFIG_NEEDS if not isinstance(config, dict) or k not in config]
    if missing:
        raise UserError(f"run config {config_path} lacks {', '.join(missing)}: restore it, or "
                        "delete it to use the defaults (split 1)")
    check_fields(config, CONFIG_FIELDS, f"run config {config_path}", "restore it, or start a "
                 "new run")
    if "settings" in config:
        HeadSettings.from_dict(config["settings"], f"run config {config_path} settings")
    return config


def run_settings(path) -> HeadSettings | None:
    """The HeadSettings a run recorded in its config.json (None: no config.json); a wrong one is
    a UserError naming the file and the field."""
    config = run_config(path)
    if not config:
        return None
    path = Path(path)
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if "settings" not in config:
        raise UserError(f"run config {config_path} lacks settings: restore it, or start a new run")
    return HeadSettings.from_dict(config["settings"], f"run config {config_path} settings")


def split_sha256(data_dir, split) -> str:
    """The content hash of one split of a data folder (its train/valid/test ids)."""
    ids = dataset.load_split(data_dir, split)
    return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()


def data_record(data_dir, split) -> dict:
    """What a run records of its data (config.json): the folder, absolute, and its split's hash."""
    return {"data_dir": os.path.abspath(data_dir), "split_sha256": split_sha256(data_dir, split)}


def run_data_dir(path, given=None) -> str:
    """The data folder to use a run (or a checkpoint of it) with: the one it recorded, or `given`
    (--data-dir) when that holds the same split; a recorded folder gone or changed, or a given
    one of another split, is a UserError. Runs from before the record: given, else theirs,
    else data."""
    config = run_config(path)
    recorded, digest = config.get("data_dir"), config.get("split_sha256")
    if digest is None:
        return given or recorded or "data"
    source = f"run config {_config_path(path)}"
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise UserError(f"{source}: split_sha256 must be a sha256, got {digest!r}: restore it")
    chosen = recorded if given is None else given
    if not Path(chosen, "splits.json").is_file():
        gone = "is gone" if not Path(chosen).exists() else "holds no splits.json"
        raise UserError(f"data folder {chosen} ({'the run' if given is None else '--data-dir'}"
                        f"'s) {gone}: restore it, or pass --data-dir to a copy of it")
    if split_sha256(chosen, config["split"]) != digest:
        whose = (f"changed since {Path(path)} was trained on it" if given is None else
                 f"is not the one {Path(path)} was trained on ({recorded})")
        raise UserError(f"split {config['split']} of {chosen} {whose}: pass --data-dir to the "
                        "data folder it was trained on")
    return chosen


def _config_path(path):
    path = Path(path)
    return (path if path.is_dir() else path.parent) / CONFIG_NAME


def weights_record(backbone_weights) -> dict:
    """What a run records of its backbone weights (config.json): the file it read (the flag, else
    env BACKBONE_WEIGHTS), absolute, and its sha256; both None for torchvision's download."""
    path = vgg.resolve_backbone_weights(backbone_weights)
    if path is None or not os.path.isfile(path):
        return {"backbone_weights": path, "backbone_weights_sha256": None}
    return {"backbone_weights": os.path.abspath(path), "backbone_weights_sha256": file_sha256(path)}


def run_weights(path, given=None) -> str | None:
    """The backbone weights to use a run with: `given` (--backbone-weights), else the file it
    recorded, found again by path and checked by its sha256 (a file gone or changed since is a
    UserError); a given file must be that same file. None: the usual lookup (env, download)."""
    config = run_config(path)
    recorded, digest = config.get("backbone_weights"), config.get("backbone_weights_sha256")
    if digest is None:
        return given or recorded
    source = f"run config {_config_path(path)}"
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise UserError(f"{source}: backbone_weights_sha256 must be a sha256, got {digest!r}: "
                        "restore it")
    if given:
        if os.path.isfile(given) and file_sha256(given) != digest:
            raise UserError(f"--backbone-weights {given} is not the file {Path(path)} was "
                            f"trained with ({recorded}; sha256 differs): pass that one")
        return given
    if not os.path.isfile(recorded):
        raise UserError(f"backbone weights {recorded}, which {Path(path)} was trained with, are "
                        "gone: restore the file, or pass --backbone-weights to a copy of it")
    if file_sha256(recorded) != digest:
        raise UserError(f"backbone weights {recorded} changed since {Path(path)} was trained "
                        "with them (sha256 differs): restore the file, or pass "
                        "--backbone-weights to a copy of the original")
    return recorded


def run_defaults(path, split=None, backbone_weights=None) -> tuple[int, str | None]:
    """(split, backbone weights) for using a run or checkpoint: the given values, else those its
    run trained with (config.json), else (no config.json at all) split 1 and the usual weights
    lookup. Evaluating on the run's own split keeps its training images out of the validation
    figures."""
    config = run_config(path)
    return int(split or config.get("split") or 1), run_weights(path, backbone_weights)
