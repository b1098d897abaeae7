"""The results tables of docs/results.md and README.md, generated from the runs kept under
output/reference/ (their cam_metrics.json), never copied by hand.

    python -m benchmarks.results            # rewrite every generated table in place
    python -m benchmarks.results --check    # exit 1 when a table differs from its JSON

A generated table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in a page;
TABLES says which run and which figures each NAME shows. tests/test_docs.py fails when a table in
a page differs from what this writes from the JSON.
"""

import json
import sys
from pathlib import Path

from flowercam.core import ArgumentParser, atomic_write, run_main
from flowercam.report import html

REPO = Path(__file__).resolve().parents[1]
PAGES = (REPO / "docs" / "results.md", REPO / "README.md")
REFERENCE = "output/reference"

# (path under a row's overall figures, header, format, lower is better)
LOCALIZATION = ((("pointing_game",), "pointing %", "{:.1f}", False),
                (("pxap",), "PxAP %", "{:.1f}", False),
                (("oracle_tau", "miou"), "IoU %", "{:.1f}", False),
                (("oracle_tau", "max_box_acc_v2"), "MaxBoxAccV2 %", "{:.1f}", False),
                (("oracle_tau", "top1_loc"), "Top-1 Loc %", "{:.1f}", False))
FAITHFULNESS = ((("average_drop",), "AD %", "{:.1f}", True),
                (("insertion_auc",), "insertion AUC", "{:.3f}", False),
                (("deletion_auc",), "deletion AUC", "{:.3f}", True))


def validated(columns):
    """The same columns at the validated tau (a test run: tau chosen on the valid images)."""
    return tuple(((("validated_tau",) + path[1:]) if path[0] == "oracle_tau" else path, *rest)
                 for path, *rest in columns)


# the pseudo-mask figures at the validated tau (a test run: tau chosen on the valid images)
PSEUDO = tuple((("pseudo_masks", "validated_tau", key), header, "{:.1f}", False)
               for key, header in (("fg_iou", "fg IoU %"), ("miou", "mIoU %"), ("f1", "F1 %"),
                                   ("precision", "precision %"), ("recall", "recall %")))

HEADLINE = LOCALIZATION[:4]
# NAME: (the run folder under output/reference, its columns)
TABLES = {"headline": ("headline_valid", HEADLINE),
          "localization_valid": ("headline_valid", LOCALIZATION),
          "localization_test": ("headline_test", validated(LOCALIZATION)),
          "sscam_valid": ("sscam_valid", LOCALIZATION + FAITHFULNESS),
          "sscam_test": ("sscam_test", validated(LOCALIZATION) + FAITHFULNESS),
          "iscam_valid": ("iscam_valid", LOCALIZATION + FAITHFULNESS),
          "segment_test": ("segment_test", PSEUDO),
          "faithfulness_valid": ("faithfulness_valid", FAITHFULNESS[:1] + (
              (("increase_in_confidence",), "IC %", "{:.1f}", False),) + FAITHFULNESS[1:])}


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


# NAME: (the run folder, its columns, the row whose paired differences it lists)
PAIRED = {"segment_test_paired": ("segment_test", PSEUDO[:3], "segmenter")}


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


# NAME: (the run folder, one figure, the rows shown per class)
PER_CLASS = {"segment_test_classes": ("segment_test", PSEUDO[0], (
    "LayerCAM+crf", "few-shot-1", "few-shot-5", "segmenter", "segmenter+crf"))}


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


# NAME: the benchmark JSON (python -m benchmarks.cams --only costs) under output/reference
COSTS = {"cuda_costs": "cuda/costs_cuda.json"}


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


# issue 38's side by side: the same commands for each backbone, kept under backbones/
BACKBONES = {"vgg16": "VGG16", "efficientnet_lite0": "EfficientNet-Lite0"}
SIDE_BY_SIDE = {"backbones_valid": ("valid", LOCALIZATION),
                "backbones_test": ("test", validated(LOCALIZATION)),
                "backbones_pseudo_valid": ("pseudo_valid", (
                    (("pseudo_masks", "oracle_tau", "fg_iou"), "fg IoU %", "{:.1f}", False),
                    (("pseudo_masks", "oracle_tau", "miou"), "mIoU %", "{:.1f}", False))),
                "backbones_pseudo_test": ("pseudo_test", PSEUDO[:2])}
# NAME_center: the paired differences with center; NAME_layercam: LayerCAM's with the others
BACKBONE_TABLES = (*SIDE_BY_SIDE, *(f"{t}_center" for t in SIDE_BY_SIDE),
                   "backbones_valid_layercam", "backbones_test_layercam",
                   "backbones_throughput", "backbones_accuracy", "backbones_sanity")


def side_by_side(runs, columns, a=None):
    """Markdown lines, one row per map and backbone. a None: each map's figure [95% interval]
    with † (not shown to beat center); a = "center": each map's paired difference with center;
    a = a map: its paired differences with the other maps (center's are a's center row). A
    difference is [95% interval], * = the interval excludes 0."""
    if a is None:
        rows = list(dict.fromkeys(m for s in runs.values() for g in ("methods", "baselines")
                                  for m in s.get(g, {})))
    elif a == "center":
        rows = list(dict.fromkeys(p.split(" - ")[0] for s in runs.values()
                                  for p, v in s.get("paired", {}).items() if v["b"] == "center"))
    else:
        rows = list(dict.fromkeys(p for s in runs.values() for p, v in s.get("paired", {}).items()
                                  if v["a"] == a and v["b"] != "center"))
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


def backbone_tables(name, reference):
    """The lines of a side-by-side table NAME (issue 38); None while a run is not kept."""
    folder = Path(reference) / "backbones"
    source = f"{REFERENCE}/backbones/"
    if name == "backbones_throughput":
        path = folder / "throughput.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        a = data["args"]
        return throughput_table(data) + [
            "", f"*From `{REFERENCE}/backbones/throughput.json` ({a['images']} Flower-17 images "
            f"at 256 px, {data['torch_threads']} torch threads, {a['cache_batch']} per batch, "
            f"best of {a['repeats']} turns each) by `python -m benchmarks.results`.*"]
    if name == "backbones_accuracy":
        paths = {k: folder / f"{k}_eval.json" for k in BACKBONES}
        if not all(p.is_file() for p in paths.values()):
            return None
        evals = {k: json.loads(p.read_text()) for k, p in paths.items()}
        n = {ev["images"] for ev in evals.values()}
        return accuracy_table(evals) + [
            "", f"*From `{source}<backbone>_eval.json` (`evaluate.py -d RUN`, "
            f"{'/'.join(map(str, n))} validation images; [95% Wilson interval]) by "
            "`python -m benchmarks.results`.*"]
    if name == "backbones_sanity":
        paths = {k: folder / f"{k}_sanity" / "sanity.json" for k in BACKBONES}
        if not all(p.is_file() for p in paths.values()):
            return None
        runs = {k: json.loads(p.read_text()) for k, p in paths.items()}
        return sanity_table(runs) + [
            "", f"*From `{source}<backbone>_sanity/sanity.json` by `python -m benchmarks.results`; "
            f"verdict rule: {next(iter(runs.values()))['verdict_rule']}.*"]
    base, _, suffix = name.rpartition("_")
    a = {"center": "center", "layercam": "LayerCAM"}.get(suffix)
    run, columns = SIDE_BY_SIDE[base if a else name]
    paths = {k: folder / f"{k}_{run}" / "cam_metrics.json" for k in BACKBONES}
    if not all(p.is_file() for p in paths.values()):
        return None
    runs = {k: json.loads(p.read_text()) for k, p in paths.items()}
    what = ("[95% interval]; † = not shown to beat center" if a is None else
            f"Paired differences{' with center' if a == 'center' else ''} (same images, same "
            "resamples; * = the 95% interval excludes 0)")
    return side_by_side(runs, columns, a) + [
        "", f"*{what}. From `{source}<backbone>_{run}/cam_metrics.json` ("
        + ", ".join(f"{BACKBONES[k]}: `{s['checkpoint']}`" for k, s in runs.items())
        + f"; {next(iter(runs.values()))['subset']}) by `python -m benchmarks.results`.*"]


def generated(name, reference=REPO / REFERENCE):
    """The lines of table NAME (and the command line that regenerates it); None when its run
    is not kept."""
    if name in BACKBONE_TABLES:
        return backbone_tables(name, reference)
    if name in COSTS:
        path = Path(reference) / COSTS[name]
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return costs_table(path)[:-1] + [
            f"*From `{REFERENCE}/{COSTS[name]}` ({data['args']['device']}, "
            f"{data['args']['num_images']} images at {data['args']['size']} px, best of "
            f"{data['args']['repeats']}) by `python -m benchmarks.results`.*"]
    if name in PER_CLASS:
        run, column, rows = PER_CLASS[name]
        path = Path(reference) / run / "cam_metrics.json"
        if not path.is_file():
            return None
        return class_table(json.loads(path.read_text()), column, rows) + [
            "", f"*Per class (about 6 mask images each) from `{REFERENCE}/{run}/cam_metrics.json` "
            "by `python -m benchmarks.results`.*"]
    run, columns, *row = TABLES.get(name) or PAIRED[name]
    path = Path(reference) / run / "cam_metrics.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if row:
        return paired_table(summary, columns, row[0]) + [
            "", f"*Paired differences (same images, same resamples; * = the 95% interval "
            f"excludes 0) from `{REFERENCE}/{run}/cam_metrics.json` by `python -m "
            "benchmarks.results`.*"]
    said = ["", verdict(summary, columns)] if name == "headline" else []
    if peak_rule(summary) and any(path == ("pointing_game",) for path, *_ in columns):
        said += ["", "*Pointing (peak rule): this run predates the published pointing game "
                 "(Zhang et al. 2018, docs/metrics.md); its figure is the former rule, which "
                 "today's runs report as `pointing_game_peak`.*"]
    return table(summary, columns) + said + ["", f"*From `{REFERENCE}/{run}/cam_metrics.json` "
                                          f"(`{summary['checkpoint']}`, {summary['subset']}, "
                                          f"{summary['n_images']} images) by `python -m "
                                          "benchmarks.results`.*"]


def rewrite(text, reference=REPO / REFERENCE):
    """text with every generated table replaced by what its JSON says -> (new text, names)."""
    out, names = text, []
    for name in [*TABLES, *PAIRED, *PER_CLASS, *COSTS, *BACKBONE_TABLES]:
        start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        if start not in out:
            continue
        before, rest = out.split(start, 1)
        after = rest.split(end, 1)[1]
        said = "the commands above write" if name in BACKBONE_TABLES else "the command above writes"
        kept = ("backbones/" if name in BACKBONE_TABLES else COSTS.get(name)
                or (TABLES | PAIRED | PER_CLASS)[name][0] + "/cam_metrics.json")
        lines = generated(name, reference) or [
            f"*Not kept yet: {said} `{REFERENCE}/{kept}`; then "
            "`python -m benchmarks.results` fills this table.*"]
        body = "\n" + "\n".join(lines) + "\n"
        out, names = before + start + body + end + after, names + [name]
    return out, names


def get_args_parser():
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a generated table differs from its JSON")
    return parser


def main(args):
    stale = []
    for page in PAGES:
        text = page.read_text()
        new, names = rewrite(text)
        if new != text:
            stale.append(page.name)
            if not args.check:
                atomic_write(page, lambda f, new=new: f.write(new), mode="w")
        print(f"{page.relative_to(REPO)}: {len(names)} tables"
              + (", out of date" if new != text else ", up to date"))
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}: run python -m benchmarks.results")
        sys.exit(1)
    return stale


if __name__ == "__main__":
    run_main(main, get_args_parser())
