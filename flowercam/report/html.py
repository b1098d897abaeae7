"""report.html: one browsable page of a run, written beside its JSON (a folder that opens from
disk: report.html, report_files/*.png and the PNGs the run wrote; no server, no internet).

    python evaluate.py -d model/RUN --cam-metrics --masked-only   # -> OUT/report.html too
    python -c "from flowercam.report import html; html.write_report('output/reference/sscam_valid',
        gallery=False)"

write_report reads what the folder holds, from disk: cam_metrics.json (evaluate.py
--cam-metrics: the tables with their intervals and paired marks, the per-class table, the
deletion / insertion and precision-recall curves, per method a gallery of its best, median and
worst images by IoU), sanity.json (--sanity: the similarity tables, the verdicts, the cascade grid
and the similarity plot) and grid_runs.json (grid.py: Table 2 beside the report's, the loss
curves). It reads JSON only (never the metrics package), so the page follows the files' shape;
the gallery's maps are recomputed from the checkpoint the JSON names (flowercam.cam.compute).
The page is report_template.html (jinja2); its few lines of plain JavaScript sort the tables.
"""

import csv
import json
import math
import platform
from pathlib import Path

import jinja2
import numpy as np
import torch

from flowercam import core
from flowercam.report import html_images
from flowercam.train import records

TEMPLATE = "report_template.html"
FILES = "report_files"  # the report's own images, beside report.html

# (key, header, format, lower is better): the tables of cam_metrics.md, as JSON keys
FAITHFULNESS = (("average_drop", "AD %", "{:.1f}", True),
                ("increase_in_confidence", "IC %", "{:.1f}", False),
                ("deletion_auc", "deletion AUC", "{:.3f}", True),
                ("insertion_auc", "insertion AUC", "{:.3f}", False),
                ("road_morf", "ROAD MoRF", "{:.3f}", True),
                ("road_lerf", "ROAD LeRF", "{:.3f}", False),
                ("road_combined", "ROAD combined", "{:.3f}", False))
TAU_FREE = (("pointing_game", "pointing %", "{:.1f}", False),
            ("pointing_game_peak", "peak on fg %", "{:.1f}", False),
            ("pxap", "PxAP %", "{:.1f}", False))
AT_TAU = (("miou", "IoU %", "{:.1f}", False), ("max_box_acc", "MaxBoxAcc %", "{:.1f}", False),
          ("max_box_acc_v2", "MaxBoxAccV2 %", "{:.1f}", False),
          ("top1_loc", "Top-1 Loc %", "{:.1f}", False),
          ("gt_known_loc", "GT-known Loc %", "{:.1f}", False))
PSEUDO = (("fg_iou", "fg IoU %", "{:.1f}", False), ("bg_iou", "bg IoU %", "{:.1f}", False),
          ("miou", "mIoU %", "{:.1f}", False), ("precision", "precision %", "{:.1f}", False),
          ("recall", "recall %", "{:.1f}", False), ("f1", "F1 %", "{:.1f}", False))
PER_CLASS = (("pointing_game", "pointing %"), ("pxap", "PxAP %"), ("average_drop", "AD %"))
GALLERY_PICKS = ("best", "median", "worst")
PAIRED_MARK = "†"


def _missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def cell(figure, fmt="{:.1f}", mark=""):
    """A table cell {"text", "sort", "mark"} of a figure {"value", "ci95", "n", "tau"?}."""
    if not figure or _missing(figure.get("value")):
        return {"text": "-", "sort": "", "mark": ""}
    value, text = figure["value"], fmt.format(figure["value"])
    lo, hi = figure.get("ci95") or (None, None)
    if not _missing(lo) and not _missing(hi):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    if isinstance(figure.get("tau"), float):
        text += f" @{figure['tau']:.2f}"
    return {"text": text, "sort": f"{value:.6g}", "mark": mark}


def plain(text, sort=None):
    return {"text": str(text), "sort": "" if sort is None else f"{sort}", "mark": ""}


def beats(difference, lower_is_better):
    """True when a paired difference's 95% interval lies above 0 (below 0 for lower-is-better);
    None when unknown."""
    lo, hi = (difference or {}).get("ci95") or (None, None)
    if _missing(lo) or _missing(hi):
        return None
    return hi < 0 if lower_is_better else lo > 0


def paired_mark(summary, row, path, lower):
    """† when the row's paired difference with center does not beat center (cam_metrics.md's)."""
    pair = summary.get("paired", {}).get(f"{row} - center")
    if pair is None:
        return ""
    return PAIRED_MARK if beats(figure_at(pair["difference"], path), lower) is False else ""


def _rows(summary):
    """[(row name, its label, its overall figures)]: methods, then baselines."""
    out = [(m, m, r["overall"]) for m, r in summary.get("methods", {}).items()]
    return out + [(b, f"{b} (baseline)", r["overall"]) for b, r in summary.get("baselines",
                                                                                {}).items()]


def figure_at(figures, path):
    for key in path:
        figures = (figures or {}).get(key)
    return figures


def under(prefix, columns):
    """columns (key, header, format, lower) -> (path, header, format, lower) under prefix."""
    return tuple(((*prefix, key), *rest) for key, *rest in columns)


def metric_table(summary, table_id, caption, columns):
    """A sortable table: one row per map, one column per figure (columns: (path of keys under
    the row's overall figures, header, format, lower is better)); None when no row has any."""
    rows = []
    for name, label, overall in _rows(summary):
        figures = [figure_at(overall, path) for path, *_ in columns]
        if not any(figures):
            continue
        n = max((f.get("n", 0) for f in figures if f), default=0)
        rows.append([plain(label), plain(n, n)] + [
            cell(f, fmt, paired_mark(summary, name, path, lower))
            for f, (path, _, fmt, lower) in zip(figures, columns, strict=True)])
    if not rows:
        return None
    used = [i for i, _ in enumerate(columns) if any(r[2 + i]["text"] != "-" for r in rows)]
    if not used:  # e.g. --figures localization: no faithfulness figure
        return None
    headers = ["map", "images"] + [columns[i][1] + (" ↓" if columns[i][3] else " ↑")
                                   for i in used]
    return {"id": table_id, "caption": caption, "headers": headers,
            "rows": [r[:2] + [r[2 + i] for i in used] for r in rows]}


def cam_tables(summary):
    """The cam_metrics tables: faithfulness, localization (oracle / validated tau),
    pseudo-masks, paired differences."""
    tables = [metric_table(summary, "faithfulness", "Faithfulness", under((), FAITHFULNESS)),
              metric_table(summary, "localization-oracle", "Localization, oracle tau (chosen "
                           "on the images scored)",
                           under((), TAU_FREE) + under(("oracle_tau",), AT_TAU)),
              metric_table(summary, "localization-validated", "Localization, validated tau "
                           "(chosen on another subset's mask images)",
                           under(("validated_tau",), AT_TAU)),
              metric_table(summary, "pseudo-oracle", "Pseudo-masks, oracle tau (one tau per "
                           "map: the best mean foreground IoU)",
                           under(("pseudo_masks", "oracle_tau"), PSEUDO)),
              metric_table(summary, "pseudo-validated", "Pseudo-masks, validated tau",
                           under(("pseudo_masks", "validated_tau"), PSEUDO)),
              paired_table(summary)]
    return [t for t in tables if t]


def paired_table(summary):
    """Every pair's difference of the headline figures, with its interval (same images, same
    resamples); bold: the interval excludes 0."""
    columns = [(("average_drop",), "AD %", "{:.1f}", True),
               (("deletion_auc",), "deletion AUC", "{:.3f}", True),
               (("insertion_auc",), "insertion AUC", "{:.3f}", False),
               (("pointing_game",), "pointing %", "{:.1f}", False),
               (("pxap",), "PxAP %", "{:.1f}", False),
               (("oracle_tau", "miou"), "IoU %", "{:.1f}", False)]
    rows = []
    for label, pair in summary.get("paired", {}).items():
        out = [plain(label)]
        for path, _, fmt, lower in columns:
            difference = figure_at(pair["difference"], path)
            won = beats(difference, lower)
            out.append(cell(difference, fmt, "better" if won else ""))
        rows.append(out)
    used = [i for i, _ in enumerate(columns) if any(r[1 + i]["text"] != "-" for r in rows)]
    if not rows or not used:
        return None
    return {"id": "paired", "caption": "Paired differences A - B [95% interval]; 'better': A "
            "beats B (the interval excludes 0 on the better side)",
            "headers": ["A - B"] + [f"{columns[i][1]} {'↓' if columns[i][3] else '↑'}"
                                    for i in used],
            "rows": [r[:1] + [r[1 + i] for i in used] for r in rows]}


def per_class_table(summary):
    """One row per class, per map its pointing, PxAP and AD."""
    maps = [(name, name, r) for group in ("methods", "baselines")
            for name, r in summary.get(group, {}).items()]
    classes = list(maps[0][2].get("per_class", {})) if maps else []
    keys = [k for k, _ in PER_CLASS
            if any(k in r["per_class"].get(c, {}) for _, _, r in maps for c in classes)]
    if not classes or not keys:
        return None
    headers = ["class"] + [f"{label} {dict(PER_CLASS)[k]}" for _, label, _ in maps for k in keys]
    rows = []
    for c in classes:
        n = max((f.get("n", 0) for _, _, r in maps for f in r["per_class"].get(c, {}).values()
                 if isinstance(f, dict) and "n" in f), default=0)
        rows.append([plain(f"{c} ({n})", c)] + [
            cell(r["per_class"].get(c, {}).get(k)) for _, _, r in maps for k in keys])
    return {"id": "per-class", "caption": "Per class (images in brackets)", "headers": headers,
            "rows": rows}


def settings_rows(summary, extra=None):
    """[(name, value)] of what reproduces the run: checkpoint, backbone, data, masks, seed,
    options, versions."""
    loc = summary.get("localization") or {}
    rows = [("checkpoint", summary.get("checkpoint")),
            ("backbone", summary.get("backbone", "not recorded")),
            ("data", f"{summary.get('data_dir', 'not recorded')}, split {summary.get('split')} "
                     f"{summary.get('subset')}, {summary.get('n_images')} images"),
            ("masks", f"{loc.get('masks_dir')} ({loc.get('masks_from')}): foreground "
                      f"{loc.get('mask_values')}, ignored {loc.get('ignore_values')}; "
                      f"{loc.get('images_with_mask')} images with a mask" if loc else "none"),
            ("thresholds", loc.get("thresholds")), ("boxes", loc.get("boxes")),
            ("seconds", f"{summary.get('seconds', 0):.0f}"),
            ("torch threads", summary.get("torch_threads"))]
    rows += [(f"option {k}", json.dumps(v)) for k, v in (summary.get("options") or {}).items()]
    versions = summary.get("versions")
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) if versions
                 else "not recorded"))
    return [(k, v) for k, v in rows + (extra or []) if v is not None]


def _ranked(per_image, row):
    """Indices of the best, median and worst image of a row by IoU (NaN: no mask, skipped);
    None without per-image IoU."""
    iou = np.asarray([np.nan if v is None else v for v in per_image.get(row, {}).get("iou", [])],
                     np.float64)
    scored = np.flatnonzero(np.isfinite(iou))
    if len(scored) == 0:
        return None
    order = scored[np.argsort(-iou[scored], kind="stable")]
    return dict(zip(GALLERY_PICKS, (order[0], order[len(order) // 2], order[-1]), strict=True))


def _figure_text(per_image, row, i, names):
    """The figures of image i under a row's map, one line each."""
    def get(key):
        values = per_image.get(row, {}).get(key) or []
        return values[i] if i < len(values) else None
    label, predicted = per_image["labels"][i], per_image["predicted"][i]
    lines = [f"{per_image['ids'][i]}: {names(label)}, predicted {names(predicted)}",
             f"score {per_image['y'][i]:.3f}" + ("" if _missing(get("o")) else
                                                 f"; kept by the map (o) {get('o'):.3f}")]
    for key, text, fmt in (("iou", "IoU %", "{:.1f}"), ("hit", "pointing hit", "{:.2f}"),
                           ("hit_peak", "peak on fg", "{:.0f}"),
                           ("deletion", "deletion AUC", "{:.3f}"),
                           ("insertion", "insertion AUC", "{:.3f}")):
        if not _missing(get(key)):
            lines.append(f"{text} {fmt.format(get(key))}")
    return lines


def galleries(summary, out_dir, data_dir, backbone_weights, device):
    """Per method its best, median and worst image by IoU: tiles written to FILES -> ([gallery],
    note); the note says why there is none."""
    per_image = summary.get("per_image") or {}
    rows = [m for m in summary.get("methods", {}) if _ranked(per_image, m)]
    if not rows:
        return [], "no gallery: the run has no per-image IoU (no masks, or an older run)"
    ids, checkpoint = per_image["ids"], summary.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        return [], f"no gallery: the checkpoint {checkpoint} is not on this machine"
    paths = [Path(data_dir) / "auged" / f"{i}.jpg" for i in ids]
    if not all(paths[i].is_file() for m in rows for i in _ranked(per_image, m).values()):
        return [], f"no gallery: the images are not in {data_dir}/auged (pass the data folder)"
    # the weights the run read (its config.json) unless given, as evaluate.py resolves them
    weights = records.run_defaults(checkpoint, summary.get("split"), backbone_weights)[1]
    try:
        model, settings = html_images.load_gallery_model(checkpoint, weights, device)
    except core.UserError as err:
        return [], f"no gallery: {err}"
    size = settings.input_size
    class_names = settings.class_names or []

    def names(label):
        return class_names[label] if 0 <= label < len(class_names) else str(label)
    loc = summary.get("localization") or {}
    masks_dir = loc.get("masks_dir")  # as the run named it: relative to where it ran
    if masks_dir and not Path(masks_dir).is_dir() and (Path(data_dir) / "masks").is_dir():
        masks_dir = str(Path(data_dir) / "masks")
    out = []
    for row in rows:
        picks = _ranked(per_image, row)
        idx = list(picks.values())
        overall = summary["methods"][row]["overall"]
        tau = (figure_at(overall, ("oracle_tau", "miou")) or figure_at(
            overall, ("pseudo_masks", "oracle_tau", "fg_iou")) or {}).get("tau")
        heats = html_images.gallery_maps(model, row, [str(paths[i]) for i in idx],
                                         [per_image["targets"][i] for i in idx],
                                         summary.get("options") or {}, size)
        items = []
        for (pick, i), heat in zip(picks.items(), heats, strict=True):
            fg, has = html_images.true_mask(masks_dir, ids[i], size, loc.get("mask_values"),
                                            loc.get("ignore_values"))
            stem = f"{FILES}/gallery_{_slug(row)}_{pick}"
            html_images.gallery_tiles(paths[i], heat, fg, has, tau, out_dir / f"{stem}_image.png",
                                      out_dir / f"{stem}_map.png")
            items.append({"pick": pick, "image": f"{stem}_image.png", "map": f"{stem}_map.png",
                          "lines": _figure_text(per_image, row, i, names)})
        out.append({"row": row, "tau": tau, "items": items})
    return out, ""


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name)


def cam_section(out_dir, data_dir, backbone_weights, device, gallery):
    """The --cam-metrics part of the page (None without cam_metrics.json)."""
    path = out_dir / "cam_metrics.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    curves = summary.get("curves") or {}
    plots = []
    for name, fn, caption in (
            ("curves_perturbation.png", html_images.plot_perturbation,
             "Deletion and insertion curves: the mean score of the class while the pixels are "
             "deleted (replaced) or inserted in the map's order"),
            ("curves_precision_recall.png", html_images.plot_precision_recall,
             "PxAP's pixel precision-recall curves over the thresholds tau")):
        if fn(out_dir / FILES / name, curves):
            plots.append({"src": f"{FILES}/{name}", "caption": caption})
    shown, note = galleries(summary, out_dir, data_dir, backbone_weights, device) if gallery \
        else ([], "no gallery (not asked for)")
    return {"tables": cam_tables(summary), "per_class": per_class_table(summary),
            "plots": plots, "galleries": shown, "gallery_note": note,
            "settings": settings_rows(summary),
            "missing_curves": "" if curves else "no curves: cam_metrics.json predates them "
                                                "(run evaluate.py --cam-metrics again)"}


def sanity_measures(summary):
    """{measure: title} as sanity.json records them; a sanity.json written before it recorded them
    names its measures by their keys."""
    if "measures" in summary:
        return summary["measures"]
    states = (per for row in summary["similarities"].values() for per in row.values())
    return {m: m for m in next(states, {})}


def sanity_section(out_dir):
    """The --sanity part (None without sanity.json)."""
    path = out_dir / "sanity.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    states = [s["name"] for s in summary["states"]]
    tables = []
    for measure, title in sanity_measures(summary).items():
        fmt = "{:.0f}" if title.endswith("%") else "{:.2f}"  # a share in %, or a similarity
        rows = []
        for row, per in summary["similarities"].items():
            label = row if row in summary["methods"] else f"{row} (baseline)"
            cells = [cell((per.get(s) or {}).get(measure), fmt) for s in states]
            verdict = (summary.get("verdicts") or {}).get(row, {}).get("passes")
            rows.append([plain(label)] + cells + [plain({True: "pass", False: "fail",
                                                         None: "-"}[verdict])])
        tables.append({"id": f"sanity-{measure}", "caption": f"{title}: the randomised "
                       "model's maps against the trained model's, per randomisation", "rows": rows,
                       "headers": ["map"] + [s.split(":", 1)[-1] for s in states] + ["verdict"]})
    images = [{"src": name, "caption": caption} for name, caption in (
        ("sanity_grid.png", "The cascade: trained model, then every layer from the top down "
                            "re-initialised"),
        ("sanity_plot.png", "Similarity against the depth of randomisation"))
        if (out_dir / name).is_file()]
    settings = [("checkpoint", summary.get("checkpoint")),
                ("data", f"split {summary.get('split')} {summary.get('subset')}, "
                         f"{len(summary.get('ids', []))} images"),
                ("verdict rule", summary.get("verdict_rule")),
                ("seconds", f"{summary.get('seconds', 0):.0f}")]
    settings += [(f"option {k}", json.dumps(v)) for k, v in (summary.get("options") or {}).items()]
    return {"tables": tables, "images": images, "settings": settings}


def grid_section(out_dir):
    """The grid.py part (None without grid_runs.json): Table 2 beside the report's, the loss
    curves."""
    if not (out_dir / "grid_runs.json").is_file() or not (out_dir / "table2.csv").is_file():
        return None
    with open(out_dir / "table2.csv", newline="") as f:
        records = list(csv.DictReader(f))
    headers = list(records[0]) if records else []
    rows = [[plain(r[h], _number(r[h])) for h in headers] for r in records]
    table = {"id": "table2", "caption": "Table 2: ours beside the report's (table2.csv)",
             "headers": headers, "rows": rows}
    images = [{"src": "loss_curves.png", "caption": "Training and validation loss per "
               "configuration"}] if (out_dir / "loss_curves.png").is_file() else []
    return {"tables": [table], "images": images}


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _environment():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def write_report(out_dir, data_dir="data", backbone_weights=None, device="cpu",
                 gallery=True) -> Path:
    """Write OUT_DIR/report.html (and OUT_DIR/report_files/) from the run files in out_dir.

    data_dir: where the run's images are (the gallery); backbone_weights, device: how the
    gallery's maps are recomputed; gallery False: no maps (no model loaded). UserError when the
    folder holds none of cam_metrics.json, sanity.json, grid_runs.json.
    """
    out_dir = Path(out_dir)
    (out_dir / FILES).mkdir(parents=True, exist_ok=True)
    sections = {"cam": cam_section(out_dir, data_dir, backbone_weights, device, gallery),
                "sanity": sanity_section(out_dir), "grid": grid_section(out_dir)}
    if not any(sections.values()):
        raise core.UserError(f"{out_dir} holds no cam_metrics.json, sanity.json or "
                             "grid_runs.json: name a run's output folder")
    env = jinja2.Environment(loader=jinja2.PackageLoader("flowercam.report", "."),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.get_template(TEMPLATE).render(title=f"flowercam report: {out_dir.name}",
                                             written_with=_environment(), **sections)
    target = out_dir / "report.html"
    core.atomic_write(target, lambda f: f.write(page), mode="w")
    return target
