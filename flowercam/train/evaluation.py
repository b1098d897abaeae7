"""Top-1/3/5 accuracy and loss of every saved epoch of a training run, and the checks that a
checkpoint fits the data and backbone it is used with.

    python evaluate.py -d model/RUN         # the command; this module is what it runs
    python -c "from flowercam.train import evaluation as e; \
print(e.evaluate_run('model/RUN', 'valid', e.training.SourceOptions()))"
"""

import dataclasses

from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.core import UserError
from flowercam.data import dataset
from flowercam.model import checkpoints
from flowercam.train import records, runs, training


def load_heads(paths) -> tuple[list, dict]:
    """Load every checkpoint -> ([(epoch, path, head)], settings); UserError if they disagree."""
    heads, settings = [], None
    for epoch, path in paths:
        head, these, _ = checkpoints.load_checkpoint(path)
        if settings is not None and these != settings:
            raise UserError(f"{path} is a checkpoint of another kind than {paths[0][1]}: "
                            "keep one run's checkpoints per directory")
        settings = these
        heads.append((epoch, path, head))
    return heads, settings


def check_classes(settings, data_dir):
    """The checkpoint's classes (names and order) must be data_dir's: a checkpoint never meets
    the wrong classes. UserError naming the first few that differ; a checkpoint without names
    (older versions) is checked by count."""
    names = dataset.class_names(data_dir)
    trained = settings.class_names
    if trained is None and settings.num_classes == len(names):
        return
    if trained is None or len(trained) != len(names):
        raise UserError(f"checkpoint has {settings.num_classes} classes but {data_dir} has "
                        f"{len(names)}: use the data folder it was trained on")
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(trained, names, strict=True)) if a != b]
    if differ:
        shown = ", ".join(f"class {i}: {a!r} vs {b!r}" for i, a, b in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise UserError(f"checkpoint was trained on other classes than {data_dir} ({shown}{more}"
                        "; checkpoint vs data folder): use the data folder it was trained on")


def check_data(settings, data_dir, backbone):
    """The checkpoint must fit the data and backbone it is evaluated with."""
    check_classes(settings, data_dir)
    size = features.input_size(data_dir)
    if settings.input_size != size:
        raise UserError(f"checkpoint was trained at {settings.input_size} px but {data_dir} "
                        f"holds {size} px images: pass the --data-dir it was trained on")
    if settings.backbone_id and settings.backbone_id != backbone.backbone_id:
        raise UserError(f"checkpoint was trained on backbone {settings.backbone_id}, got "
                        f"{backbone.backbone_id}: pass the --backbone-weights it was trained with")


def evaluate_run(model_dir, subset, opts: training.SourceOptions, backbone_weights=None,
                 batch_size=64) -> dict:
    """Evaluate every checkpoint of model_dir on `subset` of opts.split -> the eval.json dict.

    opts.split None / backbone_weights None: the run's own (records.run_defaults).
    """
    heads, settings = load_heads(runs.run_checkpoints(model_dir))
    check_classes(settings, opts.data_dir)  # before the backbone loads
    split, weights = records.run_defaults(model_dir, opts.split, backbone_weights)
    opts = dataclasses.replace(opts, split=split)
    name = registry.name_of(settings)
    backbone = registry.load_backbone(name, weights, opts.device)
    backbone = backbone.at(checkpoints.cut_of(settings, backbone))
    registry.check_fits(name, heads[0][2], backbone, f"run {model_dir}")
    check_data(settings, opts.data_dir, backbone)
    (source,) = training.make_sources(opts, backbone, subsets=(subset,))
    rows = []
    for epoch, path, head in heads:
        scores = training.evaluate(head.to(opts.device), source, batch_size)
        rows.append({"epoch": epoch, "checkpoint": path.name, **scores})
        print(f"epoch {epoch:3d}: loss {scores['loss']:.4f}  top-1 {scores['top1']:.2f}  "
              f"top-3 {scores['top3']:.2f}  top-5 {scores['top5']:.2f}")
    return {"model_type": settings.model_type, "normalize_by": settings.normalize_by,
            "split": split, "split_name": subset, "images": len(source),
            "precision": opts.precision, "epochs": rows}
