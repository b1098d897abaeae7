"""The markdown tables of docs/results.md and README.md, as lines, from JSON already loaded (a
cam_metrics.json summary, the backbones' eval, throughput and sanity JSON; costs_table reads its
benchmarks.cams JSON itself); benchmarks/results.py says which run each table shows.
"""

import json
from pathlib import Path

from flowercam.report import html

# the backbones of issue 38's side by side (registry names) and their names in a table
BACKBONES = {"vgg16": "VGG16", "efficientnet_lite0": "EfficientNet-Lite0"}


def peak_rule(summary):
    """True for a run measured before the published pointing game (issue 40): its rows have no
    pointing_game_peak, and their pointing_game is the former rule (the peak's pixel on the
    foreground, ignored pixels hits, ties split), which today's runs keep as pointing_game_peak."""
    rows = [r for g in ("methods", "baselines") for r in summary.get(g, {}).values()]
    return bool(rows) and not any("pointing_game_peak" in r.get("overall", {}) for r in rows)


def table(summary, columns):
    """Markdown lines: one row per map (methods, then baselines), value [95% interval],
    † = does not beat the center baseline (paired)."""
    rename = {"pointing %": "pointing (peak rule) %"} if peak_rule(summary) else {}
    head = ["map", "images"] + [f"{rename.get(h, h)} {'↓' if lower else '↑'}"
                                for _, h, _, lower in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, suffix in (("methods", ""), ("baselines", " (baseline)")):
        for name, row in summary.get(group, {}).items():
            figures = [html.figure_at(row["overall"], path) for path, *_ in columns]
            n = max((f.get("n", 0) for f in figures if f), default=0)
            cells = []
            for f, (path, _, fmt, lower) in zip(figures, columns, strict=True):
                c = html.cell(f, fmt, html.paired_mark(summary, name, path, lower))
                cells.append(c["text"] + (f" {c['mark']}" if c["mark"] else ""))
            lines.append("| " + " | ".join([name + suffix, str(n), *cells]) + " |")
    return lines


def paired_table(summary, columns, row):
    """Markdown lines: each paired difference A - B whose A is `row` or `row`+REFINER, value
    [95% interval]; * = the interval excludes 0."""
    head = ["A - B", "images"] + [f"{h} (A - B)" for _, h, _, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, pair in summary.get("paired", {}).items():
        if pair["a"] != row and not pair["a"].startswith(f"{row}+"):
            continue
        cells, n = [], 0
        for path, *_ in columns:
            f = html.figure_at(pair["difference"], path) or {}
            n = max(n, f.get("n", 0) or 0)
            lo, hi = f.get("ci95") or (None, None)
            sure = lo is not None and hi is not None and (lo > 0 or hi < 0)
            cells.append(html.cell({k: v for k, v in f.items() if k != "tau"}, "{:+.1f}")["text"]
                         + (" *" if sure else ""))
        lines.append("| " + " | ".join([name, str(n), *cells]) + " |")
    return lines


def class_table(summary, column, rows):
    """Markdown lines: one line per class, one column per row (its figure [95% interval])."""
    path, header, fmt, _ = column
    found = {r: g[r] for g in (summary.get("methods", {}), summary.get("baselines", {}))
             for r in rows if r in g}
    lines = ["| class | " + " | ".join(f"{r} {header}" for r in found) + " |",
             "|---|" + "---|" * len(found)]
    classes = next(iter(found.values()), {}).get("per_class", {})
    for name in classes:
        cells = [html.cell({k: v for k, v in (html.figure_at(found[r]["per_class"].get(name),
                                                                path) or {}).items()
                            if k != "tau"}, fmt)["text"] for r in found]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def costs_table(path):
    """Seconds per image of every map method (plain, and aggregated over 4 scales x flip where
    measured) from a benchmarks.cams costs JSON."""
    data = json.loads(Path(path).read_text())
    lines = ["| method | s / image | aggregated s / image |", "|---|---|---|"]
    for row in data["results"]["costs"]:
        agg = row.get("aggregate_s_per_image")
        lines.append(f"| {row['method']} | {row['plain_s_per_image']:.4f} | "
                     + ("-" if agg is None else f"{agg:.4f}") + " |")
    return lines + [""]


def verdict(summary, columns):
    """One line: per method the figures on which it beats center (paired), and those on none."""
    beats = {m: [h.split(" %")[0] for path, h, _, lower in columns
                 if not html.paired_mark(summary, m, path, lower)]
             for m in summary.get("methods", {})}
    some = [f"{m} on {', '.join(hs)}" for m, hs in beats.items() if hs]
    none = [m for m, hs in beats.items() if not hs]
    return ("*Beats the center baseline: " + ("; ".join(some) or "no map")
            + (f"; on no figure: {', '.join(none)}" if none else "") + ".*")


def side_by_side(runs, columns, a=None):
    """Markdown lines, one row per map and backbone. a None: each map's figure [95% interval]
    with † (not shown to beat center); a = "center": each map's paired difference with center;
    a = a map (or a tuple of maps): its paired differences with the other maps (center's are
    a's center row). A difference is [95% interval], * = the interval excludes 0."""
    if a is None:
        rows = list(dict.fromkeys(m for s in runs.values() for g in ("methods", "baselines")
                                  for m in s.get(g, {})))
    elif a == "center":
        rows = list(dict.fromkeys(p.split(" - ")[0] for s in runs.values()
                                  for p, v in s.get("paired", {}).items() if v["b"] == "center"))
    else:
        rows = list(dict.fromkeys(p for s in runs.values() for p, v in s.get("paired", {}).items()
                                  if v["a"] in (a if isinstance(a, tuple) else (a,))
                                  and v["b"] != "center"))
    against = "" if a is None else " - center" if a == "center" else " (A - B)"
    head = ["map" if a in (None, "center") else "A - B", "backbone", "images"] + [
        f"{h[:-2] + against if against else h} {'↓' if lower else '↑'}"
        for _, h, _, lower in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in rows:
        for key, summary in runs.items():
            if a is None:
                found = (summary.get("methods", {}).get(name)
                         or summary.get("baselines", {}).get(name) or {}).get("overall")
            else:
                pair = f"{name} - center" if a == "center" else name
                found = summary.get("paired", {}).get(pair, {}).get("difference")
            if found is None:
                continue
            figures = [html.figure_at(found, path) for path, *_ in columns]
            n = max((f.get("n", 0) or 0 for f in figures if f), default=0)
            cells = []
            for f, (path, _, fmt, lower) in zip(figures, columns, strict=True):
                if a is None:
                    c = html.cell(f, fmt, html.paired_mark(summary, name, path, lower))
                    cells.append(c["text"] + (f" {c['mark']}" if c["mark"] else ""))
                else:
                    sure = html.beats(f, lower) or html.beats(f, not lower)
                    cells.append(html.cell({k: v for k, v in (f or {}).items() if k != "tau"},
                                           "{:+.1f}")["text"] + (" *" if sure else ""))
            lines.append("| " + " | ".join([name, BACKBONES[key], str(n), *cells]) + " |")
    return lines


def wilson(k, n):
    """The 95% Wilson score interval of k successes in n, in %."""
    z, p = 1.959964, k / n
    mid, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return [100 * (mid - half) / (1 + z * z / n), 100 * (mid + half) / (1 + z * z / n)]


def accuracy_table(evals):
    """Markdown lines: each backbone's best epoch of its eval.json (best_checkpoint: the lowest
    validation loss among the epochs that do not overfit, runs.best_checkpoint)."""
    lines = ["| backbone | best epoch (of saved) | valid loss | top-1 % | top-3 % | top-5 % |",
             "|---|---|---|---|---|---|"]
    for key, ev in evals.items():
        best = next(r for r in ev["epochs"] if r["checkpoint"] == ev["best_checkpoint"])
        n = ev["images"]
        cells = [html.cell({"value": best[t], "ci95": wilson(round(best[t] * n / 100), n)})["text"]
                 for t in ("top1", "top3", "top5")]
        lines.append(f"| {BACKBONES[key]} | {best['epoch']} (of {len(ev['epochs'])}) | "
                     f"{best['loss']:.3f} | " + " | ".join(cells) + " |")
    return lines


def throughput_table(data):
    """Markdown lines: each backbone's cache rows and img/s (benchmarks.backbones' JSON)."""
    lines = ["| backbone | cache rows (C x h x w) | cache build img/s | bare forward img/s |",
             "|---|---|---|---|"]
    for key, row in data["results"].items():
        lines.append(f"| {BACKBONES.get(key, key)} | {' x '.join(map(str, row['row_shape']))} | "
                     f"{row['build_img_per_s']:.2f} | {row['bare_img_per_s']:.2f} |")
    return lines


def sanity_table(runs):
    """Markdown lines: per map and backbone, the mean Spearman correlation with the trained
    model's maps, of the maps and of their absolute values [95% interval], at the full cascade
    (with the share of images whose randomised map is constant) and after data randomisation,
    and whether each check is passed (sanity.json's verdicts)."""
    lines = ["| map | backbone | images | full cascade: Spearman | of abs | constant maps % | "
             "passes | permuted labels: Spearman | of abs | passes | both |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(m for s in runs.values() for m in s["methods"]))
    for name in names:
        for key, s in runs.items():
            if name not in s["methods"]:
                continue
            verdict, sims, cells = s["verdicts"][name], s["similarities"][name], []
            for state in s["deciding_states"]:  # the full cascade, then data
                cells += [html.cell(sims[state][k], "{:.2f}")["text"]
                          for k in ("spearman", "spearman_abs")]
                if state != "data":  # a cascade that passes by losing the map says so
                    cells.append(html.cell(sims[state].get("constant"), "{:.0f}")["text"])
                cells.append("yes" if verdict[state] else "**no**")
            cells.append("yes" if verdict["passes"] else "**no**")
            lines.append("| " + " | ".join([name, BACKBONES[key], str(len(s["ids"])), *cells])
                         + " |")
    return lines
