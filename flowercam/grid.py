"""The report's experiment grid in one command: CAM and ReCAM (3 normalisers) x 4 learning rates.

    python grid.py --backbone-weights ../shared/weights/vgg16_imagenet_features.pth  # 16 runs
    python grid.py --lrs 1e-3 1e-4 --epochs 10 --output-dir model/grid-test --results-dir /tmp/out
    python grid.py --precision bf16 --seed 1

Every configuration trains on one shared feature cache (built once) and gets its own run directory
under --output-dir. Writes RESULTS/table2.md and .csv (per configuration the best validation
top-1 epoch among epochs that are not overfitting, i.e. train loss >= half the valid loss),
loss_curves.png and grid_runs.json (configuration -> run dir and best checkpoint).
"""

import argparse
import csv
import io
from pathlib import Path

from flowercam import core, dataset, features, models, training
from flowercam.core import UserError, atomic_save_json, atomic_write, run_main

LRS = (1e-3, 5e-4, 1e-4, 5e-5)  # the report's exact values are not known: these are our choice
COLUMNS = ("config", "model_type", "normalize_by", "lr", "best_epoch", "top1", "top3", "top5",
           "valid_loss", "train_loss", "epochs_run", "halted_at", "run_dir", "best_checkpoint")


def configurations(lrs) -> list[dict]:
    """CAM at every lr, then ReCAM with each normaliser at every lr (4 x 4 = 16 by default)."""
    kinds = [("CAM", None)] + [("ReCAM", how) for how in models.NORMALIZERS]
    configs = []
    for model_type, how in kinds:
        for lr in lrs:
            name = f"{model_type}{'-' + how if how else ''}-lr{lr:g}"
            configs.append({"config": name, "model_type": model_type, "normalize_by": how,
                            "lr": lr})
    return configs


def eligible(row) -> bool:
    """The report ignores epochs whose training loss is below half the validation loss."""
    return row["valid_loss"] <= training.OVERFIT_RATIO * row["train_loss"]


def summarize(config, history, run_dir) -> dict:
    """Table row: best eligible top-1 epoch (ties: lower valid loss) + the best saved checkpoint."""
    rows = [r for r in history if eligible(r)] or history
    best = max(rows, key=lambda r: (r["valid_top1"], -r["valid_loss"]))
    halted = [r["epoch"] for r in history if r.get("overfit")]
    saved = any("checkpoint" in r for r in history)
    checkpoint = core.best_checkpoint(run_dir) if saved else None  # the rule every script uses
    return {**config, "best_epoch": best["epoch"], "top1": best["valid_top1"],
            "top3": best["valid_top3"], "top5": best["valid_top5"],
            "valid_loss": best["valid_loss"], "train_loss": best["train_loss"],
            "epochs_run": len(history), "halted_at": halted[0] if halted else None,
            "run_dir": str(run_dir),
            "best_checkpoint": str(checkpoint) if checkpoint else None}


def write_csv(path, table):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    atomic_write(path, lambda f: f.write(buf.getvalue()), mode="w")


def write_markdown(path, table, epochs):
    lines = [f"# Table 2: validation accuracy of the grid (best top-1 epoch of at most {epochs}; "
             "epochs with train loss < valid loss / 2 ignored)", "",
             "| configuration | lr | epoch | top-1 % | top-3 % | top-5 % | valid loss | halted |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['model_type']}{' ' + r['normalize_by'] if r['normalize_by'] else ''} "
                     f"| {r['lr']:g} | {r['best_epoch']} | {r['top1']:.2f} | {r['top3']:.2f} | "
                     f"{r['top5']:.2f} | {r['valid_loss']:.4f} | {r['halted_at'] or '-'} |")
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def plot_curves(path, results):
    """One panel per configuration (4 columns): train/valid loss, a line at the overfit halt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = 4
    rows = max(1, -(-len(results) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (row, history) in zip(axes.flat, results, strict=False):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
        ax.plot(epochs, [r["valid_loss"] for r in history], "o-", ms=3, label="valid")
        ax.axvline(row["best_epoch"], color="green", linestyle=":", label="table's epoch")
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
    plt.close(fig)


def run_grid(args, sources, settings_of) -> list:
    """Train every configuration on the shared sources -> [(table row, history)]."""
    train_src, valid_src = sources
    results = []
    for config in configurations(args.lrs):
        settings = settings_of(config)
        run_dir = training.make_run_dir(args.output_dir, settings, tag=f"lr{config['lr']:g}")
        atomic_save_json(run_dir / "config.json", {**vars(args), **config, "settings": settings,
                                                   "grid": True})
        history = training.train(settings, train_src, valid_src, run_dir, config["lr"],
                                 args.epochs, args.batch_size, args.seed, args.device)
        results.append((summarize(config, history, run_dir), history))
    return results


def write_outputs(results_dir, results, epochs):
    results_dir = Path(results_dir)
    table = [row for row, _ in results]
    write_csv(results_dir / "table2.csv", table)
    write_markdown(results_dir / "table2.md", table, epochs)
    plot_curves(results_dir / "loss_curves.png", results)
    atomic_save_json(results_dir / "grid_runs.json", {
        r["config"]: {"run_dir": r["run_dir"], "best_checkpoint": r["best_checkpoint"],
                      "best_epoch": r["best_epoch"]} for r in table})


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--lrs", default=list(LRS), type=float, nargs="+", help="learning rates of the grid")
    add("-e", "--epochs", default=40, type=int, help="maximum epochs per configuration")
    add("--batch-size", default=8, type=int, help="training batch size")
    add("-s", "--seed", default=0, type=int, help="seed of every configuration")
    add("--device", default="cpu", help="torch device (cpu, cuda)")
    add("--data-dir", default="data", help="folder prepared by augment.py")
    add("--output-dir", default="model", help="where the run directories are created")
    add("--results-dir", default="output", help="where table2.md/.csv and loss_curves.png go")
    add("--backbone-weights", default=None,
        help="VGG16 weights file (default: env BACKBONE_WEIGHTS, else torchvision download)")
    add("--split", default=1, type=int, choices=(1, 2, 3), help="which train/valid/test split")
    add("--precision", default="fp32", choices=features.PRECISIONS, help="backbone precision")
    add("--num-workers", default=2, type=int, help="image decoding processes (cache build)")
    return parser


def main(args):
    args.no_cache = False  # the grid always trains on the shared cache
    if min(args.lrs) <= 0:
        raise UserError(f"--lrs must all be positive, got {args.lrs}")
    args.lr = min(args.lrs)  # check_args validates it with --epochs and --batch-size
    training.check_args(args)
    core.check_writable_dir(args.output_dir)
    core.check_writable_dir(args.results_dir, "--results-dir")
    backbone = training.load_backbone(args)
    sources = training.make_sources(args, backbone)
    names, size = dataset.class_names(args.data_dir), features.input_size(args.data_dir)

    def settings_of(config):
        return training.make_settings(config["model_type"], config["normalize_by"], names, size,
                                      backbone.backbone_id)

    results = run_grid(args, sources, settings_of)
    write_outputs(args.results_dir, results, args.epochs)
    for row, _ in results:
        print(f"{row['config']:24s} epoch {row['best_epoch']:3d}  top-1 {row['top1']:6.2f}  "
              f"top-3 {row['top3']:6.2f}  top-5 {row['top5']:6.2f}  loss {row['valid_loss']:.4f}")
    print(f"wrote {Path(args.results_dir) / 'table2.md'}, table2.csv, loss_curves.png, "
          "grid_runs.json")
    return results


if __name__ == "__main__":
    run_main(main, get_args_parser())
