"""The validated tau read from an earlier run's cam_metrics.json (evaluate.py --tau-from), instead
of measuring the tau set's maps again.

    python evaluate.py -d $R --cam-metrics --masked-only --split-name valid --methods ISCAM
    python evaluate.py -d $R --cam-metrics --masked-only --split-name test --methods ISCAM \\
        --tau-from $R/cam_metrics.json      # the test images only: half the maps

A run's oracle tau of a row (IoU, MaxBoxAcc, MaxBoxAccV2 per delta) is what runner.tau_set would
choose on that run's images (localization.choose_taus): the same index on the same grid. The file is
used only when it can stand for the tau set: same checkpoint and data split, another subset, all of
its images measured (no --limit), the maps made the same way (target, scales, flip, layers), the
masks read the same way, and every row measured there with localization figures, or, for a run
of pseudo-mask figures only, with pseudo-mask figures (their oracle tau is the IoU's: pseudo.py).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from flowercam.core import UserError, is_int, is_number
from flowercam.metrics.localization import DELTAS, THRESHOLDS, TauSet
from flowercam.model.checkpoints import content_sha256

SAME_MAPS = ("target", "scales", "flip", "layers")  # options that change a row's maps
SAME_MASKS = ("masks_dir", "mask_values", "ignore_values")


def _read(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: give the cam_metrics.json of a run on the "
                        "other subset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a readable cam_metrics.json ({error})") from None




def _same_file(recorded, checkpoint):
    """Whether the recorded checkpoint path (relative to the working directory, as older runs
    wrote it) is the file `checkpoint`."""
    try:
        return isinstance(recorded, str) and os.path.samefile(recorded, checkpoint)
    except OSError:
        return False


def _check_run(path, run, checkpoint, split, subset, options):
    """UserError naming the first way the file's run cannot stand for the tau set."""
    if not isinstance(run, dict):
        raise UserError(f"{path} is a {type(run).__name__}, not a cam_metrics.json mapping")
    if not (isinstance(run.get("localization"), dict) and isinstance(run.get("options"), dict)):
        raise UserError(f"{path} has no localization figures: measure them there "
                        "(--figures localization)")
    theirs = run.get("checkpoint_sha256")
    if theirs is None and _same_file(run.get("checkpoint"), checkpoint):
        # a run measured before checkpoint_sha256 was recorded (the kept runs under
        # output/reference/): its path is all there is to match, and the user is told so
        print(f"warning: {path} records no checkpoint hash (measured by an older version): "
              f"matched to {checkpoint} by path only", file=sys.stderr)
    elif not isinstance(theirs, str):
        raise UserError(f"{path} does not record its checkpoint's content (checkpoint_sha256) "
                        f"and names another file than {checkpoint}: measure that run again")
    elif theirs != content_sha256(checkpoint):
        raise UserError(f"{path} measured another checkpoint than {checkpoint} (its content "
                        f"differs, though it was {run.get('checkpoint')}): use that "
                        "checkpoint's run")
    if run.get("split") != split or run.get("subset") == subset:
        raise UserError(f"{path} measured {run.get('subset')} of split {run.get('split')}; the "
                        f"tau needs another subset of split {split} than {subset}")
    theirs = run["options"]
    if theirs.get("limit") is not None:
        raise UserError(f"{path} measured a --limit {theirs['limit']} sample: the validated tau "
                        "is chosen on all mask images of its subset")
    for key in SAME_MAPS:
        if theirs.get(key) != options[key]:
            raise UserError(f"{path} made its maps with {key} {theirs.get(key)}, this run "
                            f"with {options[key]}: measure both the same way")
    for key in SAME_MASKS:
        if run["localization"].get(key) != options[key]:
            raise UserError(f"{path} read its masks with {key} {run['localization'].get(key)}, "
                            f"this run with {options[key]}")


def _index(path, row, tau):
    if not is_number(tau) or not 0 <= tau <= 1:
        raise UserError(f"{path}: row {row}'s tau must be a number from 0 to 1, got {tau!r}: "
                        "measure that run again")
    k = int(np.argmin(np.abs(THRESHOLDS - tau)))
    if abs(THRESHOLDS[k] - tau) > 1e-9:
        raise UserError(f"{path}: row {row}'s tau {tau} is not on the threshold grid")
    return k


def _row_taus(path, run, row, boxes):
    """(k_iou, k_acc, k_v2) of one row, from its oracle tau in the file; boxes False (this run
    has no localization figures): (k_iou, None, None), read from the pseudo-mask figures of a run
    without localization ones (the same tau, chosen on the same per-image foreground IoU)."""
    found = {**_mapping(run.get("methods")), **_mapping(run.get("baselines"))}.get(row)
    overall = _mapping(_mapping(found).get("overall"))
    oracle = overall.get("oracle_tau")
    pseudo = _mapping(_mapping(overall.get("pseudo_masks")).get("oracle_tau")).get("fg_iou")
    if not boxes and not isinstance(oracle, dict) and isinstance(pseudo, dict):
        return _index(path, row, pseudo.get("tau")), None, None
    if not isinstance(oracle, dict) or "miou" not in oracle:
        raise UserError(f"{path} has no localization figures of {row}: measure it there too")
    try:
        v2 = oracle["max_box_acc_v2"]["tau"]
        taus = oracle["miou"]["tau"], oracle["max_box_acc"]["tau"]
    except (KeyError, TypeError):
        raise UserError(f"{path}: row {row}'s oracle_tau lacks miou, max_box_acc or "
                        "max_box_acc_v2 taus: measure that run again") from None
    if not isinstance(v2, list) or len(v2) != len(DELTAS):
        raise UserError(f"{path}: row {row}'s MaxBoxAccV2 taus must be a list of {len(DELTAS)}, "
                        f"got {v2!r}: measure that run again")
    return (_index(path, row, taus[0]), _index(path, row, taus[1]),
            [_index(path, row, t) for t in v2])


def _mapping(value):
    return value if isinstance(value, dict) else {}


def _written(cfg, masks):
    """This run's SAME_MAPS and SAME_MASKS values as cam_metrics.json writes them."""
    values = {**{k: getattr(cfg, k) for k in SAME_MAPS}, **masks.recorded()}
    return json.loads(json.dumps(values))  # tuples -> lists, as in the file


def read_tau_set(cfg, rows, checkpoint, masks):
    """The tau set of runner.tau_set read from cfg.tau_from: a TauSet (taus: {row: (k_iou, k_acc,
    k_v2)}), without the set's own arrays (so no tau-set tables).

    cfg: the run's MetricsConfig (split resolved); rows: every row measured; masks: its MaskSpec."""
    path = cfg.tau_from
    if masks is None:
        raise UserError("a validated tau from a file needs masks and localization or pseudo-mask "
                        "figures")
    run = _read(path)
    _check_run(path, run, checkpoint, cfg.split, cfg.split_name, _written(cfg, masks))
    count = run["localization"].get("images_with_mask")
    if not (is_int(count) and count >= 1):
        raise UserError(f"{path}: localization.images_with_mask must be a positive count, got "
                        f"{count!r}: measure that run again")
    boxes = "localization" in cfg.families
    return TauSet(run["subset"], count,
                  {row: _row_taus(path, run, row, boxes) for row in rows}, source=str(path))
