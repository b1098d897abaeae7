"""The tables of evaluate.py --cam-metrics: cam_metrics.md from a summary (summary.summarise),
written atomically beside cam_metrics.json.

    python evaluate.py -d model/RUN --cam-metrics --limit 20
    python -c "from flowercam.metrics import tables as t; import json; \
print(t.markdown(json.load(open('model/RUN/cam_metrics.json'))))"
"""

import json
import math
import os
from pathlib import Path

import numpy as np

from flowercam.core import atomic_write
from flowercam.metrics import registry, statistics

# The columns come from the registry (registry.columns: each metric's, in registry order):
# AD/IC/pointing/PxAP/IoU/box figures in %, AUCs in probability units.


def faithfulness_columns():
    return registry.columns("faithfulness")


def tau_free_columns():
    return registry.columns("tau_free")


def at_tau_columns():
    return registry.columns("at_tau")


def all_columns():
    """Every column of the overall tables: faithfulness, tau-free, at a tau."""
    return faithfulness_columns() + tau_free_columns() + at_tau_columns()


PSEUDO_KINDS = (("tau_set_oracle", "The tau set's mask images at their own oracle tau (the "
                                   "validated tau)"),
                ("oracle_tau", "Oracle tau (chosen on the images scored)"),
                ("validated_tau", "Validated tau (chosen on the tau set's mask images)"))
BASELINE = " (baseline)"  # label suffix of the baseline rows


def _isnan(x):
    return isinstance(x, float) and math.isnan(x)


def _cell(figure, fmt, show_tau, with_ci=True):
    if not figure or figure["value"] is None or _isnan(figure["value"]):
        return "-"
    text = fmt.format(figure["value"])
    lo, hi = figure["ci95"]
    if with_ci and lo is not None and not _isnan(lo):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    if show_tau and isinstance(figure.get("tau"), float):
        text += f" @{figure['tau']:.2f}"
    return text


def _table(rows, columns, with_ci=True, versus=None):
    """rows: [(label, figures)]; versus: {label: paired differences against center}: a figure
    whose difference does not beat 0 gets a † (baseline rows never do)."""
    columns = [c for c in columns if any((figs.get(c.key) or {}).get("n") for _, figs in rows)]
    if not columns:
        return []
    head = ["", "images"] + [c.header for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, figs in rows:
        # ROAD alone: AD has none; a class without a mask image: no pseudo-mask figure
        n = max((figs[c.key]["n"] for c in columns if c.key in figs), default=0)
        diffs = (versus or {}).get(label)
        cells = []
        for c in columns:
            cell = _cell(figs.get(c.key), c.fmt, c.show_tau, with_ci)
            mark = (diffs is not None and c.key in diffs and not label.endswith(BASELINE)
                    and statistics.beats(diffs[c.key], c.lower_is_better) is False)  # None: no test
            cells.append(cell + (" †" if mark and cell != "-" else ""))
        lines.append("| " + " | ".join([label, str(n), *cells]) + " |")
    return lines


def _named_rows(summary):
    """[(table label, row name, row)]: the methods, then the baselines (labelled)."""
    return ([(m, m, f) for m, f in summary["methods"].items()]
            + [(f"{b}{BASELINE}", b, f) for b, f in summary.get("baselines", {}).items()])


def _rows(summary, pick):
    """[(label, figures)] of the methods, then the baselines, via pick(row dict)."""
    return [(label, pick(row)) for label, _, row in _named_rows(summary)]


def _versus(summary, pick):
    """{label: the row's paired differences against center, via pick}; None without center."""
    paired = summary.get("paired") or {}
    return {label: pick({"overall": paired[f"{name} - center"]["difference"]})
            for label, name, _ in _named_rows(summary) if f"{name} - center" in paired} or None


def _paired_lines(summary):
    """The paired differences a - b of every pair (--compare, every row against center, against
    the few-shot rows): at the oracle tau, the validated tau, on the tau set's own images, and
    the pseudo-masks' at each of their taus."""
    pairs = [(label, {"overall": p["difference"]}) for label, p in summary["paired"].items()]
    lines = ["", "## Paired differences", "",
             "a - b on the same images, 95% interval over the same bootstrap resamples for both "
             "maps (the oracle tau is chosen again for each map in every resample).", ""]
    table = _table([(label, {**p["overall"], **_oracle_figures(p)}) for label, p in pairs],
                   all_columns())
    validated = _table([(label, _validated_figures(p)) for label, p in pairs], at_tau_columns())
    if validated:
        table += ["", "Validated tau:", "", *validated]
    tau_set = _table([(label, _tau_set_figures(p)) for label, p in pairs],
                     tau_free_columns() + at_tau_columns())
    if tau_set:
        table += ["", "The tau set's mask images at their own oracle tau:", "", *tau_set]
    for kind, title in PSEUDO_KINDS:
        pseudo = _table([(label, p["overall"].get("pseudo_masks", {}).get(kind, {}))
                         for label, p in pairs], registry.columns("pseudo"))
        if pseudo:
            table += ["", f"Pseudo-masks, {title[0].lower()}{title[1:]}:", "", *pseudo]
    if table and table[0] == "":
        table = table[1:]  # no overall table (pseudo-masks alone): the first title follows
    return lines + table if table else []


def _header(summary):
    opts = summary["options"]
    first = next(iter(summary["methods"].values()))["overall"]
    return [f"`{summary['checkpoint']}`, split {summary['split']} {summary['subset']}, "
            f"{summary['n_images']} images ({first['deletion_auc']['n']} of them with "
            f"deletion/insertion, --perturb-limit), {opts['steps']} deletion/insertion steps "
            f"(deleted pixels -> {opts['deletion_baseline']}), maps of the {opts['target']} "
            f"class, scoring in {opts['precision']}, {summary['seconds']:.0f} s "
            f"({summary['seconds_per_image']:.2f} s/image, {opts['device']}).",
            f"Values [95% bootstrap interval, {opts['bootstrap']} resamples of the images]. "
            "Baselines are class-agnostic maps, no model: center = Gaussian at the image centre, "
            "sigma = side/4; full = all ones. " + _verdicts(opts) + _aggregation(opts)]


def _verdicts(opts):
    if not opts["bootstrap"]:
        return ("No † verdicts: without bootstrap resamples (--bootstrap 0) no paired "
                "difference has an interval to test.")
    return ("† = does not beat the center baseline: the paired difference (same images, same "
            "resamples) has a 95% interval that does not lie above 0 (below 0 for ↓).")


def _aggregation(opts):
    scales, flip = opts.get("scales") or [1.0], opts.get("flip")
    if list(scales) == [1.0] and not flip:
        return ""
    return (f" Every map is aggregated over scales {', '.join(f'{s:g}' for s in scales)}"
            f"{' and flips' if flip else ''} (averaged at input size, then normalised).")


def _oracle_figures(row):
    """Overall pointing, PxAP and the oracle-tau figures of one row, flat."""
    overall = row["overall"]
    return {**{c.key: overall[c.key] for c in tau_free_columns() if c.key in overall},
            **overall.get("oracle_tau", {})}


def _overall(row):
    return row["overall"]


def _validated_figures(row):
    return row["overall"].get("validated_tau", {})


def _tau_set_figures(row):
    return row["overall"].get("tau_set_oracle", {})


def _localization_lines(summary):
    loc = summary["localization"]
    lines = ["", "## Localization", "",
             f"Masks from `{loc['masks_dir']}` ({loc['masks_from']}; foreground "
             f"{loc['mask_values'] or 'any nonzero'}, ignored {loc['ignore_values']}): "
             f"{loc['images_with_mask']} images with a mask, {loc['images_missing_mask']} without "
             f"(skipped), {loc['images_without_foreground']} with no foreground pixel. Thresholds "
             f"{loc['thresholds']}; boxes: {loc['boxes']}. Top-1 / GT-known Loc at MaxBoxAcc's "
             "tau.", "", f"### Oracle tau: {loc['oracle_tau']}", ""]
    lines += _table(_rows(summary, _oracle_figures), tau_free_columns() + at_tau_columns(),
                    versus=_versus(summary, _oracle_figures))
    if "validated_tau" in loc:
        lines += ["", f"### Validated tau: {loc['validated_tau']}", ""]
        lines += _table(_rows(summary, _validated_figures), at_tau_columns(),
                        versus=_versus(summary, _validated_figures))
        tau_set = _table(_rows(summary, _tau_set_figures), tau_free_columns() + at_tau_columns(),
                         versus=_versus(summary, _tau_set_figures))
        if tau_set:  # the figures a run on that subset would give, without running it
            lines += ["", f"### The tau set ({loc['tau_images']} mask images of "
                      f"{loc['tau_subset']}) at its own oracle tau (the validated tau)", "",
                      *tau_set]
    return lines


def _pseudo_lines(summary):
    """The pseudo-mask tables (flowercam.metrics.pseudo) and each row's seconds per image."""
    lines = ["", "## Pseudo-masks", "", "The binary mask map >= tau against the mask (ignored "
             "pixels left out), per-image means; one tau per row, the one that maximises the mean "
             "foreground IoU. Rows METHOD+REFINER: the map refined from the image "
             "(flowercam.refine); few-shot-N: trained on N training-split masks per class; "
             "segmenter: trained on the training images' pseudo-masks (segment.py), no mask."]
    for kind, title in PSEUDO_KINDS:
        def pick(row, kind=kind):
            return row["overall"].get("pseudo_masks", {}).get(kind, {})
        if any(figs for _, figs in _rows(summary, pick)):
            lines += ["", f"### {title}", ""]
            lines += _table(_rows(summary, pick), registry.columns("pseudo"),
                            versus=_versus(summary, pick))
    seconds = summary.get("row_seconds_per_image") or {}
    lines += ["", "Seconds per image (the map, plus its refinement): "
              + ", ".join(f"{row} {s:.2f}" for row, s in seconds.items()) + "."]
    return lines


def markdown(summary):
    """cam_metrics.md: faithfulness and localization tables with 95% intervals, per class."""
    lines = ["# CAM metrics", "", *_header(summary)]
    faithfulness = _table(_rows(summary, _overall), faithfulness_columns(),
                          versus=_versus(summary, _overall))
    if faithfulness:  # no image scored (--figures localization, pseudo-masks): no table
        lines += ["", "## Faithfulness", "", *faithfulness]
    families = summary["options"].get("families", ["localization"])
    if summary["localization"]["masks_dir"] and "localization" in families:
        lines += _localization_lines(summary)
    if summary["localization"]["masks_dir"] and "pseudo-masks" in families:
        lines += _pseudo_lines(summary)
    if summary.get("paired"):
        lines += _paired_lines(summary)
    return "\n".join(lines + _per_class_lines(summary)) + "\n"


def _per_class_lines(summary):
    """Each row's figures per class: faithfulness and localization at the oracle tau (no
    intervals: they are in the JSON), pseudo-masks at each tau with their intervals."""
    lines = []
    for label, figs in _rows(summary, lambda f: f["per_class"]):
        table = _table([(c, {**f, **f.get("oracle_tau", {})}) for c, f in figs.items()],
                       all_columns(), with_ci=False)
        if table:
            lines += ["", f"## {label} per class (oracle tau)", "", *table]
        for kind in ("oracle_tau", "validated_tau"):
            table = _table([(c, f.get("pseudo_masks", {}).get(kind, {}))
                            for c, f in figs.items()], registry.columns("pseudo"))
            if table:
                lines += ["", f"## {label} pseudo-masks per class ({kind.replace('_', ' ')})",
                          "", *table]
    return lines


def clean(obj):
    """NaN / numpy scalars -> JSON (null, int, float)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


def write(out_dir, summary):
    """Atomic cam_metrics.json + cam_metrics.md in out_dir."""
    summary = clean(summary)
    text = json.dumps(summary, indent=1, allow_nan=False)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(Path(out_dir) / "cam_metrics.json", lambda f: f.write(text), mode="w")
    atomic_write(Path(out_dir) / "cam_metrics.md", lambda f: f.write(markdown(summary)), mode="w")
    return summary
