"""The map metrics of --cam-metrics as a registry with one contract (as clovaai/wsolevaluation's
accumulate / compute): each Metric says what it measures per image on a batch of one row's maps
(measure), which figures it summarises from those per-image arrays (stats: flowercam.metrics.
statistics records, so that every figure gets its bootstrap interval and its paired differences
the same way) and the columns cam_metrics.md shows them in.

    python -c "from flowercam.metrics import registry; print([m.name for m in registry.METRICS])"
    python evaluate.py -d model/RUN --cam-metrics --limit 20   # every metric of the --figures

Adding a metric is one entry in METRICS plus its test (docs/metrics.md): measuring.py calls every
measure, summary.py every stats (overall, per class, paired, on the tau set) and tables.py prints
every column; cam_metrics.json keeps the arrays named in per_image. Bump METRICS_VERSION when a
metric measures differently: an interrupted run does not resume from batches measured before.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from flowercam.metrics import formulas, localization, pseudo, road
from flowercam.metrics.statistics import Mean, OverRows

# the version of what the batches hold: part of every resume key (resume.run_settings)
METRICS_VERSION = 3  # 2: the published pointing game, IC beyond a tolerance; 3: the curves

TABLES = ("faithfulness", "tau_free", "at_tau", "pseudo")  # the column groups of cam_metrics.md


@dataclasses.dataclass(frozen=True)
class Column:
    """One figure's column: its key in a row's figures, header (↓: lower is better), format,
    and whether the cell shows the figure's tau."""

    key: str
    header: str
    fmt: str
    show_tau: bool = False

    @property
    def lower_is_better(self) -> bool:
        return "↓" in self.header


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What the scoring forwards of the faithfulness figures read (a part of MetricsConfig)."""

    steps: int = 8
    seed: int = 0


@dataclasses.dataclass
class Batch:
    """One row's maps on one batch, and what they are measured against."""

    maps: torch.Tensor  # [B,H,W] in [0,1]
    pixels: torch.Tensor  # [B,3,H,W] in [0,1]
    targets: torch.Tensor  # [B] the class each map explains
    y: torch.Tensor  # [B] the target's probability on the whole image
    y_blur: torch.Tensor  # [B] ... on the blurred image (NaN: no curve for that image)
    y_base: torch.Tensor  # [B] ... on the deletion baseline (NaN: no curve)
    blurred: torch.Tensor  # [B,3,H,W] insertion's start
    baseline: torch.Tensor  # [B,3,H,W] deletion's end
    fg: np.ndarray  # [B,H,W] bool foreground (ignored pixels never)
    valid: np.ndarray  # [B,H,W] bool not ignored
    keep: np.ndarray  # [B] bool: images with perturbation curves (--perturb-limit)
    scored: bool  # False: no scoring forward (a pass without faithfulness)
    score_fn: Callable  # (images01 [M,3,H,W], targets [M]) -> probabilities [M]
    generator: torch.Generator  # the pixel ranks' tie order (one stream per pass)
    scoring: Scoring

    @property
    def np_maps(self) -> np.ndarray:
        return self.maps.numpy()


@dataclasses.dataclass(frozen=True)
class Metric:
    """measure(batch) -> {array name: [B, ...]} per image; stats(arrays, idx, taus) -> {figure:
    statistics.Mean | OverRows | nested dict} of the images idx (arrays: every per-image array of
    the row, with y [N] and correct [N]; taus: the row's validated tau indices or None);
    tau_set(arrays, idx) -> the figures on the tau set's own mask images (at their oracle tau),
    nested where they go in a row's figures. masked: idx holds only images with a mask (and the
    metric is left out when there is none); always: measured and summarised whatever --figures
    asks (its figures then have n 0)."""

    name: str
    family: str  # the --figures family that asks for it (config.FAMILIES)
    measure: Callable
    stats: Callable
    table: str | None = None  # TABLES: where its columns go
    columns: tuple[Column, ...] = ()
    per_image: tuple[str, ...] = ()  # arrays kept per image in cam_metrics.json
    masked: bool = False
    always: bool = False
    tau_set: Callable | None = None

    def wanted(self, families) -> bool:
        return self.always or self.family in families


def _nan(batch):
    return np.full(len(batch.maps), np.nan)


# ---------------------------------------------------------------- faithfulness


def _measure_confidence(batch):
    """O [B]: the target's probability on the image times its map (NaN unscored)."""
    if not batch.scored:
        return {"o": _nan(batch)}
    return {"o": batch.score_fn(batch.pixels * batch.maps[:, None], batch.targets).numpy()}


def _confidence_stats(a, idx, taus):
    y, o = a["y"][idx], a["o"][idx]
    return {"average_drop": Mean(formulas.drop_per_image(y, o)),
            "increase_in_confidence": Mean(np.where(np.isnan(o), np.nan,  # unscored: NaN
                                                    formulas.increase_per_image(y, o)))}


def _measure_curves(batch):
    """Deletion and insertion AUC [B] and curves [B,steps+1] (report.html plots their means) of
    the images batch.keep (NaN for the others)."""
    dele, ins = _nan(batch), _nan(batch)
    curves = np.full((2, len(dele), batch.scoring.steps + 1), np.nan)  # deletion, insertion
    keep = batch.keep & batch.scored
    if keep.any():
        idx = torch.from_numpy(np.flatnonzero(keep))
        pixels, maps, targets = batch.pixels[idx], batch.maps[idx], batch.targets[idx]
        d = formulas.deletion_curve(batch.score_fn, pixels, maps, targets, batch.scoring.steps,
                                    batch.baseline[idx], batch.generator,
                                    ends=(batch.y[idx], batch.y_base[idx]))
        i = formulas.insertion_curve(batch.score_fn, pixels, maps, targets, batch.scoring.steps,
                                     batch.blurred[idx], batch.generator,
                                     ends=(batch.y_blur[idx], batch.y[idx]))
        dele[keep], ins[keep] = formulas.auc(d.numpy()), formulas.auc(i.numpy())
        curves[0, keep], curves[1, keep] = d.numpy(), i.numpy()
    return {"deletion": dele, "insertion": ins, "deletion_curve": curves[0],
            "insertion_curve": curves[1]}


def _curves_stats(a, idx, taus):
    return {"deletion_auc": Mean(a["deletion"][idx]), "insertion_auc": Mean(a["insertion"][idx])}


def _measure_road(batch):
    return road.per_image(batch.score_fn, batch.maps, batch.pixels, batch.targets, batch.keep,
                          batch.scoring.seed)


def _road_stats(a, idx, taus):
    return {k: Mean(a[k][idx]) for k in road.FIGURES}


# ---------------------------------------------------------------- localization


def _measure_pointing(batch):
    return {"hit": formulas.pointing_game_per_image(batch.np_maps, batch.fg, batch.valid)}


def _pointing_stats(a, idx, taus=None):
    return {"pointing_game": Mean(a["hit"][idx] * 100)}


def _measure_peak(batch):
    return {"hit_peak": formulas.peak_on_foreground_per_image(batch.np_maps, batch.fg,
                                                              batch.valid)}


def _peak_stats(a, idx, taus=None):
    return {"pointing_game_peak": Mean(a["hit_peak"][idx] * 100)}


def _pxap_stats(a, idx, taus=None):
    tp, fp, n_fg = a["tp"][idx], a["fp"][idx], a["n_fg"][idx]
    return {"pxap": OverRows(lambda r: formulas.pxap_from_counts(tp[r], fp[r], n_fg[r]),
                             len(idx), len(idx))}


def _measure_boxes(batch):  # connected components at every tau: most of the tables' time
    largest, every = localization.box_tables(batch.np_maps, batch.fg, batch.valid)
    return {"box_largest": largest, "box_all": every}


def _box_stats(a, idx, taus):
    out = {"oracle_tau": localization.oracle_stats(a, idx)}
    if taus is not None:
        out["validated_tau"] = localization.validated_stats(a, idx, taus)
    return out


def _tau_set(stats):  # a tau-free figure's stats on the tau set, under tau_set_oracle
    return lambda a, idx: {"tau_set_oracle": stats(a, idx)}


def _pseudo_stats(a, idx, taus):
    return {"pseudo_masks": pseudo.stats(a, idx, taus)}


def _pseudo_tau_set(a, idx):
    return {"pseudo_masks": {"tau_set_oracle": pseudo.oracle_stats(a, idx)}}


def _no_arrays(batch):  # PxAP and the pseudo-masks read the mask tables every batch has
    return {}


METRICS = [
    Metric("confidence", "faithfulness", _measure_confidence, _confidence_stats, "faithfulness",
           (Column("average_drop", "AD % ↓", "{:.1f}"),
            Column("increase_in_confidence", "IC % ↑", "{:.1f}")),
           per_image=("o",), always=True),
    Metric("deletion_insertion", "faithfulness", _measure_curves, _curves_stats, "faithfulness",
           (Column("deletion_auc", "deletion AUC ↓", "{:.3f}"),
            Column("insertion_auc", "insertion AUC ↑", "{:.3f}")),
           per_image=("deletion", "insertion"), always=True),
    Metric("road", "road", _measure_road, _road_stats, "faithfulness",
           (Column("road_morf", "ROAD MoRF ↓", "{:.3f}"),
            Column("road_lerf", "ROAD LeRF ↑", "{:.3f}"),
            Column("road_combined", "ROAD (LeRF-MoRF)/2 ↑", "{:.3f}")),
           per_image=road.FIGURES),
    Metric("pointing_game", "localization", _measure_pointing, _pointing_stats, "tau_free",
           (Column("pointing_game", "pointing % ↑", "{:.1f}"),), per_image=("hit",),
           masked=True, tau_set=_tau_set(_pointing_stats)),
    Metric("pointing_game_peak", "localization", _measure_peak, _peak_stats, "tau_free",
           (Column("pointing_game_peak", "peak on fg % ↑", "{:.1f}"),), per_image=("hit_peak",),
           masked=True, tau_set=_tau_set(_peak_stats)),
    Metric("pxap", "localization", _no_arrays, _pxap_stats, "tau_free",
           (Column("pxap", "PxAP % ↑", "{:.1f}"),), masked=True, tau_set=_tau_set(_pxap_stats)),
    Metric("boxes", "localization", _measure_boxes, _box_stats, "at_tau",
           (Column("miou", "IoU % ↑", "{:.1f}", True),
            Column("max_box_acc", "MaxBoxAcc % ↑", "{:.1f}", True),
            Column("max_box_acc_v2", "MaxBoxAccV2 % ↑", "{:.1f}"),
            Column("top1_loc", "Top-1 Loc % ↑", "{:.1f}"),
            Column("gt_known_loc", "GT-known Loc % ↑", "{:.1f}")),
           masked=True, tau_set=_tau_set(localization.oracle_stats)),
    Metric("pseudo_masks", "pseudo-masks", _no_arrays, _pseudo_stats, "pseudo",
           (Column("fg_iou", "fg IoU % ↑", "{:.1f}", True),
            Column("bg_iou", "bg IoU % ↑", "{:.1f}"), Column("miou", "mIoU % ↑", "{:.1f}"),
            Column("precision", "precision % ↑", "{:.1f}"),
            Column("recall", "recall % ↑", "{:.1f}"), Column("f1", "F1 % ↑", "{:.1f}")),
           masked=True, tau_set=_pseudo_tau_set),
]


def active(families) -> list[Metric]:
    """The metrics a pass of these --figures families measures, in registry order."""
    return [m for m in METRICS if m.wanted(families)]


def columns(table) -> list[Column]:
    """The columns of one TABLES group, in registry order."""
    return [c for m in METRICS if m.table == table for c in m.columns]


def per_image_arrays() -> list[str]:
    """The per-image arrays cam_metrics.json keeps, in registry order."""
    return [k for m in METRICS for k in m.per_image]


def merge(into, more):
    """Nested dict `more` merged into `into` (in place; a nested key extends, others append)."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def measure(batch, families) -> dict:
    """{array: [B, ...]} of every metric these families ask for, on one row's batch."""
    out = {}
    for metric in active(families):
        out.update(metric.measure(batch))
    return out


def stats(arrays, idx, taus, families) -> dict:
    """Every figure of one row on the images idx, as statistics (nested as in the JSON)."""
    masked, out = idx[arrays["has_mask"][idx]], {}
    for metric in active(families):
        if metric.masked and len(masked) == 0:
            continue
        merge(out, metric.stats(arrays, masked if metric.masked else idx, taus))
    return out


def tau_set_stats(arrays, families) -> dict:
    """Every figure of one row on the tau set's own mask images, at their own oracle tau."""
    idx, out = np.flatnonzero(arrays["has_mask"]), {}
    for metric in active(families):
        if metric.tau_set is not None and len(idx):
            merge(out, metric.tau_set(arrays, idx))
    return out
