"""The sanity checks' summary, verdict and tables (sanity.json, sanity.md).

    python -c "from flowercam.sanity import tables as t; print(t.BOUND, t.VERDICT)"

Verdict (one rule for every method): a method passes a randomisation when the upper end of the
95% bootstrap interval of its mean Spearman rank correlation with the trained model's maps, of the
maps and of their absolute values, lies below BOUND. It passes the sanity checks when it passes
both the full cascade (every layer re-initialised) and data randomisation (when measured).
"""

import json
import math
from pathlib import Path

from flowercam.core import atomic_write
from flowercam.metrics import tables as metric_tables
from flowercam.sanity import similarity

BOUND = 0.5
DECIDING = ("spearman", "spearman_abs")
VERDICT = (f"passes = the upper end of the 95% interval of the mean Spearman correlation (of the "
           f"maps and of their absolute values) with the trained model's maps is below {BOUND}, "
           "both at the full cascade and after data randomisation")


def passes(figures):
    """figures {measure: {"value", "ci95"}} -> True / False (None: undefined, e.g. constant)."""
    highs = [figures[m]["ci95"][1] for m in DECIDING]
    if any(h is None or (isinstance(h, float) and math.isnan(h)) for h in highs):
        return None
    return all(h < BOUND for h in highs)


def verdicts(summary_rows, deciding_states):
    """{row: {"full_cascade": bool, "data": bool, "passes": bool}} for the rows of a summary."""
    out = {}
    for row, per_state in summary_rows.items():
        checks = {name: passes(per_state[name]) for name in deciding_states if name in per_state}
        undefined = not checks or any(v is None for v in checks.values())
        out[row] = {**checks, "passes": None if undefined else all(checks.values())}
    return out


def summarise(result, n_boot, seed):
    """The run's result -> sanity.json's content (no per-image maps)."""
    rows = {row: {name: similarity.summarise(per, n_boot, seed) for name, per in states.items()}
            for row, states in result["per_image"].items()}
    last = [s["name"] for s in result["states"] if s["group"] == "cascade"][-1]
    deciding = [last] + (["data"] if result["data_randomisation"] else [])
    keep = ("checkpoint", "split", "subset", "ids", "methods", "baselines", "states",
            "data_randomisation", "seconds", "map_seconds", "options")
    return {**{k: result[k] for k in keep}, "similarities": rows, "deciding_states": deciding,
            "measures": {m: similarity.TITLES[m] for m in similarity.MEASURES},
            "verdict_rule": VERDICT, "bound": BOUND, "verdicts": verdicts(rows, deciding),
            "per_image": {row: {n: {m: v.tolist() for m, v in d.items()} for n, d in st.items()}
                          for row, st in result["per_image"].items()}}


def _cell(figure):
    value, (lo, hi) = figure["value"], figure["ci95"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{value:.2f}"
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def short(name):
    """'cascade:block3' -> 'block3'; 'data' stays."""
    return name.split(":", 1)[-1]


def _table(summary, measure, group, with_verdict):
    names = [s["name"] for s in summary["states"] if s["group"] == group]
    names += ["data"] if with_verdict and summary["data_randomisation"] else []
    head = ["map", *[short(n) if n != "data" else "data (permuted labels)" for n in names]]
    head += ["verdict"] if with_verdict else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, per in summary["similarities"].items():
        label = row if row in summary["methods"] else f"{row} (baseline)"
        cells = [_cell(per[n][measure]) for n in names]
        if with_verdict:
            v = summary["verdicts"][row]["passes"]
            # a pass whose maps vanished (constant) is said so: it changed by losing the map
            gone = [f"{short(n)} {per[n]['constant']['value']:.0f}%"
                    for n in summary["deciding_states"]
                    if (per.get(n, {}).get("constant") or {}).get("value", 0) >= 50]
            cells.append({True: "**pass**", False: "fail", None: "-"}[v]
                         + (f" (constant maps: {', '.join(gone)})" if v and gone else ""))
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def _data_lines(facts):
    if not facts:
        return []
    lo, hi = facts["valid_top1_ci95"]
    return ["", f"Data randomisation: a head trained {facts['config']['epochs']} epochs on the "
            f"training labels permuted (seed {facts['config']['seed']}, {facts['seconds']:.0f} s) "
            f"reaches {facts['train_top1_permuted']:.1f}% top-1 on its permuted training labels "
            f"and {facts['valid_top1']:.1f}% [{lo:.1f}, {hi:.1f}] on the "
            f"{facts['valid_images']} validation images (chance {facts['chance']:.1f}%)."]


def markdown(summary):
    """sanity.md: one table per measure for the cascade (+ data, verdict on Spearman) and for the
    independent randomisation."""
    lines = ["# Sanity checks (Adebayo et al. 2018)", "",
             f"`{summary['checkpoint']}`, split {summary['split']} {summary['subset']}, "
             f"{len(summary['ids'])} images, maps of the {summary['options']['target']} class, "
             f"{summary['seconds'] / 60:.1f} min. Mean similarity with the trained model's map "
             f"[95% bootstrap interval over the images, {summary['options']['bootstrap']} "
             "resamples]. Cascade columns: every layer from the top down to that one "
             "re-initialised.", "", f"Verdict: {VERDICT}.", *_data_lines(summary.get(
                 "data_randomisation"))]
    groups = {s["group"] for s in summary["states"]}
    for measure in similarity.MEASURES:
        lines += ["", f"## {similarity.TITLES[measure]}, cascading randomisation", ""]
        lines += _table(summary, measure, "cascade", with_verdict=measure == "spearman")
    if "independent" in groups:
        for measure in similarity.MEASURES:
            lines += ["", f"## {similarity.TITLES[measure]}, one layer at a time", ""]
            lines += _table(summary, measure, "independent", with_verdict=False)
    return "\n".join(lines) + "\n"


def write(out_dir, summary):
    """Atomic sanity.json + sanity.md in out_dir -> the cleaned summary."""
    summary = metric_tables.clean(summary)
    text = json.dumps(summary, indent=1, allow_nan=False)
    atomic_write(Path(out_dir) / "sanity.json", lambda f: f.write(text), mode="w")
    atomic_write(Path(out_dir) / "sanity.md", lambda f: f.write(markdown(summary)), mode="w")
    return summary
