"""What evaluate.py --cam-metrics measures, as one frozen dataclass (no argparse in the library),
and the parts of it that each stage of the run reads (MetricsConfig.part).

    python -c "from flowercam.metrics.config import MetricsConfig as C; print(C(model_dir='m'))"
    python evaluate.py cam-metrics --help    # the flags that fill it (each flag's dest is a field;
                                             # the defaults are this dataclass's)
"""

import dataclasses

import numpy as np

from flowercam.core import UserError
from flowercam.refine import methods as refiners

DELETION_BASELINES = ("zeros", "black", "blur")
TARGETS = ("label", "predicted")
MAP_BASELINES = ("center", "full", "random", "sobel")  # maps scored beside the methods
# (metrics/maprows.py; they need no classifier)
DEFAULT_BASELINES = ("center", "full")  # random's box tables cost ~25 s per image: asked for
FEW_SHOT_BASELINES = ("few-shot-1", "few-shot-2", "few-shot-5")  # fewshot.py: trained on masks
FAMILIES = ("faithfulness", "localization", "pseudo-masks", "road")
# road (metrics/road.py: 10 sparse solves per image and map) only when asked for
DEFAULT_FAMILIES = ("faithfulness", "localization", "pseudo-masks")
THRESHOLD_COUNT = 100  # map thresholds of the localization figures (Choe et al. 2020)


def default_thresholds(n=THRESHOLD_COUNT):
    """Choe et al. 2020: tau = 0, 1/n, ..., (n-1)/n; a pixel is predicted foreground when
    map >= tau. The one threshold grid of every pixel and box figure."""
    return np.arange(n) / n


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """Inputs of runner.run; None = resolved at run time (see the comments)."""

    model_dir: str | None = None  # run folder: its best checkpoint (runs.best_checkpoint)
    checkpoint: str | None = None  # or one head checkpoint
    data_dir: str = "data"
    split: int | None = None  # None: the run's (config.json), else 1
    split_name: str = "valid"
    backbone_weights: str | None = None  # None: the run's, else env / torchvision
    no_cache: bool = False
    num_workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # scoring forwards only; maps are fp32
    methods: tuple[str, ...] | None = None  # None: every method the head supports
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    scales: tuple[float, ...] = (1.0,)  # multi-scale aggregation of every map (compute.Aggregation)
    flip: bool = False  # and of horizontally flipped images
    layers: tuple[str, ...] | None = None  # LayerCAM's layers; None: the report's (pool3, pool4)
    limit: int | None = None
    steps: int = 8
    perturb_limit: int = 34
    deletion_baseline: str = "zeros"
    target: str = "label"
    masks_dir: str | None = None  # None: DATA_DIR/masks when it exists, else no localization
    # None: what the masks' folder records (flowercam/data/masks.py: resolve_masks)
    mask_values: tuple[int, ...] | None = None
    ignore_values: tuple[int, ...] | None = None
    masked_only: bool = False  # measure only the images that have a mask
    validate_tau_on: str | None = None  # None: "valid" for split_name test; "none": off
    tau_from: str | None = None  # or the validated tau of an earlier run's cam_metrics.json
    families: tuple[str, ...] = DEFAULT_FAMILIES  # faithfulness costs most of the time
    compare: tuple[tuple[str, str], ...] = ()  # (a, b): paired differences a - b (and vs center)
    bootstrap: int = 1000
    map_batch_size: int = 8
    metrics_batch_size: int = 16
    seed: int = 0
    refine: tuple[str, ...] = ("none",)  # flowercam.refine.methods.REFINERS; none = plain map
    refine_workers: int = 0  # refinement worker processes (0: in this process)
    segmenter: str | None = None  # a segment.py checkpoint: rows segmenter (and +REFINER)
    output_dir: str | None = None  # None: the checkpoint's folder
    resume: bool = True  # continue a partial run of the same settings (resume.py)


    def part(self, cls):
        """The stage record cls (ModelChoice, ImageChoice, ...) filled from this config."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def recorded(self) -> dict:
        """The options cam_metrics.json records (its "options")."""
        return {k: getattr(self, k) for k in RECORDED}

    def check(self):
        """UserError when a value is out of range (in the config's own terms)."""
        for name in ("steps", "map_batch_size", "metrics_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.perturb_limit < 0:
            raise UserError("perturb_limit must be >= 0 (0 = every measured image)")
        if self.bootstrap < 0:
            raise UserError("bootstrap must be >= 0 (0 = no intervals)")
        for name, allowed in (("baselines", MAP_BASELINES + FEW_SHOT_BASELINES),
                              ("families", FAMILIES)):
            unknown = set(getattr(self, name)) - set(allowed)
            if unknown:
                raise UserError(f"unknown {name} {sorted(unknown)}: use {', '.join(allowed)}")
        refiners.check(self.refine)
        if self.refine_workers < 0:
            raise UserError("refine_workers must be >= 0 (0 = refine in this process)")
        if not self.families:
            raise UserError(f"no figures to measure: pick from {', '.join(FAMILIES)}")
        if self.tau_from is not None and self.validate_tau_on is not None:
            raise UserError("the validated tau comes from a subset's maps or from a file, not "
                            "both: give one")
        if self.validate_tau_on is not None and self.validate_tau_on == self.split_name:
            raise UserError(f"the validated tau cannot be chosen on {self.validate_tau_on}, the "
                            "subset measured (that is the oracle tau): choose the other or none")


# the options cam_metrics.json records, in its order
RECORDED = ("steps", "precision", "target", "deletion_baseline", "bootstrap", "limit",
            "perturb_limit", "seed", "device", "baselines", "validate_tau_on", "tau_from", "scales",
            "flip", "layers", "compare", "refine", "refine_workers", "families", "segmenter")


# ---------------------------------------------------------------- the parts each stage reads


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which model (selection.open_model) and where the results go (selection.output_folder)."""

    model_dir: str | None
    checkpoint: str | None
    data_dir: str
    split: int | None
    backbone_weights: str | None
    device: str
    output_dir: str | None


@dataclasses.dataclass(frozen=True)
class ImageChoice:
    """Which images are measured and which masks they are read with (selection)."""

    data_dir: str
    split: int | None
    split_name: str
    limit: int | None
    seed: int
    masked_only: bool
    masks_dir: str | None
    mask_values: tuple[int, ...] | None
    ignore_values: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class MapOptions:
    """How each row's maps are made (maprows, baselines)."""

    device: str
    target: str
    scales: tuple[float, ...]
    flip: bool
    layers: tuple[str, ...] | None
    refine: tuple[str, ...]
    refine_workers: int
    baselines: tuple[str, ...]
    seed: int


@dataclasses.dataclass(frozen=True)
class PassOptions:
    """What the batch loop of one pass over the images reads (measuring)."""

    data_dir: str
    split: int | None
    split_name: str
    no_cache: bool
    num_workers: int
    device: str
    precision: str
    target: str
    map_batch_size: int
    metrics_batch_size: int
    steps: int
    perturb_limit: int
    deletion_baseline: str
    families: tuple[str, ...]
    seed: int


@dataclasses.dataclass(frozen=True)
class SummaryOptions:
    """What the summary reads (summary.summarise): intervals, pairs, the figures asked."""

    bootstrap: int
    seed: int
    compare: tuple[tuple[str, str], ...]
    families: tuple[str, ...]


def default(name):
    """The default of one MetricsConfig field (for --help texts)."""
    return next(f.default for f in dataclasses.fields(MetricsConfig) if f.name == name)
