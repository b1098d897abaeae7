"""The report's experiment grid: configurations, their Table 2 rows, tables and loss curves.

    python grid.py                         # the command; this module is what it runs
    python -c "from flowercam.report import grid; print(grid.configurations([1e-4]))"

A row reports two epochs by the two rules of flowercam.train.runs: table_epoch (Table 2's) and
best_checkpoint (the figures'); grid_runs.json names both.
"""

import dataclasses
import shutil
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flowercam import core, dist
from flowercam.core import atomic_save_json, atomic_write
from flowercam.model import normalization
from flowercam.report import table2
from flowercam.train import records, runs, training

LRS = (1e-5, 5e-5, 1e-4, 2e-4)  # the report's four learning rates

REPORT_TYPES = ("CAM", "ReCAM", "ReCAM-published")  # the grid's heads unless told


def configurations(lrs, model_types=REPORT_TYPES, cut="pool5", default_cut="pool5") -> list[dict]:
    """CAM at every lr, then ReCAM with each normaliser, then ReCAM-published (lambda
    heads.RECAM_LAMBDA), then CAM-paper, at every lr, of the model_types asked for (5 x 4 = 20
    by default); cut: where every head reads the backbone (named in the config unless it is the
    backbone's default_cut; VGG16's: pool5)."""
    kinds = [("CAM", None)] + [("ReCAM", how) for how in normalization.NORMALIZERS]
    kinds += [("ReCAM-published", None), ("CAM-paper", None)]
    at = "" if cut == default_cut else f"@{cut}"
    configs = []
    for model_type, how in kinds:
        if model_type not in model_types:
            continue
        for lr in lrs:
            name = f"{model_type}{'-' + how if how else ''}{at}-lr{lr:g}"
            configs.append({"config": name, "model_type": model_type, "normalize_by": how,
                            "lr": lr, "cut": cut})
    return configs


def summarize(config, history, run_dir) -> dict:
    """Table row: Table 2's epoch (runs.table_epoch) + the figures' checkpoint (best_checkpoint)."""
    best = runs.table_epoch(history)
    halted = [r["epoch"] for r in history if r.get("overfit")]
    saved = any("checkpoint" in r for r in history)
    checkpoint = runs.best_checkpoint(run_dir) if saved else None
    return {**config, "table_epoch": best["epoch"], "top1": best["valid_top1"],
            "top3": best["valid_top3"], "top5": best["valid_top5"],
            "valid_loss": best["valid_loss"], "train_loss": best["train_loss"],
            "epochs_run": len(history), "halted_at": halted[0] if halted else None,
            "run_dir": str(run_dir),
            "best_checkpoint": str(checkpoint) if checkpoint else None}


def plot_curves(path, results):
    """One panel per configuration (4 columns): train/valid loss, a line at the overfit halt."""
    cols = 4
    rows = max(1, -(-len(results) // cols))
    fig = Figure(figsize=(4 * cols, 3 * rows))  # no pyplot: no GUI backend, no global state
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (row, history) in zip(axes.flat, results, strict=False):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
        ax.plot(epochs, [r["valid_loss"] for r in history], "o-", ms=3, label="valid")
        ax.axvline(row["table_epoch"], color="green", linestyle=":", label="table's epoch")
        if row["halted_at"]:
            ax.axvline(row["halted_at"], color="red", linestyle="--", label="overfit stop")
        ax.set_title(row["config"], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))


def run_grid(configs, sources, settings_of, output_dir, train_cfg, config_extra) -> list:
    """Train every configuration on the shared sources -> [(table row, history)].

    settings_of(config) -> checkpoint settings; train_cfg: training.TrainConfig (lr: each's);
    config_extra: what each run's config.json records besides its configuration.
    Under torchrun each rank trains every world()-th configuration (dist.shard); rank 0 gets
    every result in configuration order, the other ranks None.
    """
    results = []
    for config in dist.shard(configs):
        settings = settings_of(config)
        record = {**config_extra, **config, "grid": True, "epochs": train_cfg.epochs,
                  "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
                  "settings": settings.to_dict()}
        run_dir = earlier_run(output_dir, record)
        if run_dir is None:
            run_dir = runs.make_run_dir(output_dir, settings, tag=f"lr{config['lr']:g}")
            core.atomic_save_json(run_dir / "config.json", record)
        history = runs.read_log(run_dir, missing_ok=True)
        if not finished(history, train_cfg.epochs):
            cfg = dataclasses.replace(train_cfg, lr=config["lr"], resume=True)
            history = _train(settings, sources, run_dir, cfg)
        results.append((summarize(config, history, run_dir), history))
    parts = dist.gather(results)
    return None if parts is None else dist.unshard(parts)


# what makes an earlier grid run folder this configuration's (config.json): a rerun of an
# interrupted grid continues it (or keeps it when finished), never trains it again elsewhere
GRID_KEYS = ("config", "settings", "lr", "epochs", "batch_size", "seed", "split",
             "split_sha256", "backbone_weights_sha256", "precision", "cut")


def earlier_run(output_dir, record) -> Path | None:
    """The run folder of output_dir an earlier grid.py made for this very configuration (equal
    on GRID_KEYS), or None."""
    for path in sorted(Path(output_dir).glob(f"*/{records.CONFIG_NAME}")):
        try:
            config = records.run_config(path.parent)
        except core.UserError:
            continue  # a damaged folder is not taken for this configuration's
        if config.get("grid") and all(config.get(k) == record.get(k) for k in GRID_KEYS):
            return path.parent
    return None


def finished(history, epochs) -> bool:
    """All epochs run, or halted by the overfit rule (training.train's two ends)."""
    return len(history) >= epochs or bool(history and history[-1].get("overfit"))


def _train(settings, sources, run_dir, cfg):
    """training.train resumed from run_dir's state (none: from the start); a configuration
    stopped before its first epoch leaves no folder behind, as main.py does."""
    try:
        return training.train(settings, *sources, run_dir, cfg)  # locks run_dir
    except BaseException:
        if not runs.read_log(run_dir, missing_ok=True):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def write_outputs(results_dir, results, epochs, report_facts=None):
    """table2.md/.csv (beside the report's figures when report_facts names its facts file),
    loss_curves.png and grid_runs.json in results_dir."""
    results_dir = Path(results_dir)
    table = [row for row, _ in results]
    rows = table2.with_report(table, table2.read_report(report_facts))
    table2.write_csv(results_dir / "table2.csv", rows)
    table2.write_markdown(results_dir / "table2.md", rows, epochs)
    plot_curves(results_dir / "loss_curves.png", results)
    atomic_save_json(results_dir / "grid_runs.json", {
        r["config"]: {"run_dir": r["run_dir"], "best_checkpoint": r["best_checkpoint"],
                      "table_epoch": r["table_epoch"]} for r in table})
