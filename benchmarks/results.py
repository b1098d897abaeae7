"""The results tables of docs/results.md and README.md, generated from the runs kept under
output/reference/ (their cam_metrics.json), never copied by hand.

    python -m benchmarks.results            # rewrite every generated table in place
    python -m benchmarks.results --check    # exit 1 when a table differs from its JSON

A generated table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in a page;
TABLES says which run and which figures each NAME shows, benchmarks/tables.py writes them as
markdown. tests/test_docs.py fails when a table in a page differs from what this writes from the
JSON.
"""

import json
import sys
from pathlib import Path

from benchmarks.tables import (
    BACKBONES,
    accuracy_table,
    class_table,
    costs_table,
    paired_table,
    peak_rule,
    sanity_table,
    side_by_side,
    table,
    throughput_table,
    verdict,
)
from flowercam.core import ArgumentParser, atomic_write, run_main

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
          "segment_lite0_crfmean": ("backbones/efficientnet_lite0_segment_crf-mean_test",
                                    PSEUDO[:3]),
          "segment_lite0_crf": ("backbones/efficientnet_lite0_segment_crf_test", PSEUDO[:3]),
          "faithfulness_valid": ("faithfulness_valid", FAITHFULNESS[:1] + (
              (("increase_in_confidence",), "IC %", "{:.1f}", False),) + FAITHFULNESS[1:])}

# NAME: (the run folder, its columns, the row whose paired differences it lists)
PAIRED = {"segment_test_paired": ("segment_test", PSEUDO[:3], "segmenter"),
          "segment_lite0_crfmean_paired": ("backbones/efficientnet_lite0_segment_crf-mean_test",
                                           PSEUDO[:3], "segmenter")}

# NAME: (the run folder, one figure, the rows shown per class)
PER_CLASS = {"segment_test_classes": ("segment_test", PSEUDO[0], (
    "LayerCAM+crf", "few-shot-1", "few-shot-5", "segmenter", "segmenter+crf"))}

# NAME: the benchmark JSON (python -m benchmarks.cams --only costs) under output/reference
COSTS = {"cuda_costs": "cuda/costs_cuda.json"}

# issue 38's side by side: the same commands for each backbone, kept under backbones/
SIDE_BY_SIDE = {"backbones_valid": ("valid", LOCALIZATION),
                "backbones_test": ("test", validated(LOCALIZATION)),
                "backbones_pseudo_valid": ("refine_valid", (
                    (("pseudo_masks", "oracle_tau", "fg_iou"), "fg IoU %", "{:.1f}", False),
                    (("pseudo_masks", "oracle_tau", "miou"), "mIoU %", "{:.1f}", False))),
                "backbones_pseudo_test": ("refine_test", PSEUDO[:2])}
# NAME_center: the paired differences with center; NAME_layercam: LayerCAM's with the others;
# NAME_crfmean: LayerCAM refined by crf-mean and by crf against the other refined rows
PAIRED_ROWS = {"center": "center", "layercam": "LayerCAM",
               "crfmean": ("LayerCAM+crf-mean", "LayerCAM+crf")}
BACKBONE_TABLES = (*SIDE_BY_SIDE, *(f"{t}_center" for t in SIDE_BY_SIDE),
                   "backbones_valid_layercam", "backbones_test_layercam",
                   "backbones_pseudo_valid_crfmean", "backbones_pseudo_test_crfmean",
                   "backbones_throughput", "backbones_accuracy", "backbones_sanity")


def _per_backbone(folder, relative):
    """{backbone: its JSON at folder/relative.format(k)} for every backbone of the table; None
    while one is not kept."""
    paths = {k: folder / relative.format(k) for k in BACKBONES}
    if not all(p.is_file() for p in paths.values()):
        return None
    return {k: json.loads(p.read_text()) for k, p in paths.items()}


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
        evals = _per_backbone(folder, "{}_eval.json")
        if evals is None:
            return None
        n = {ev["images"] for ev in evals.values()}
        return accuracy_table(evals) + [
            "", f"*From `{source}<backbone>_eval.json` (`evaluate.py -d RUN`, "
            f"{'/'.join(map(str, n))} validation images; [95% Wilson interval]) by "
            "`python -m benchmarks.results`.*"]
    if name == "backbones_sanity":
        runs = _per_backbone(folder, "{}_sanity/sanity.json")
        if runs is None:
            return None
        return sanity_table(runs) + [
            "", f"*From `{source}<backbone>_sanity/sanity.json` by `python -m benchmarks.results`; "
            f"verdict rule: {next(iter(runs.values()))['verdict_rule']}.*"]
    base, _, suffix = name.rpartition("_")
    a = PAIRED_ROWS.get(suffix)
    run, columns = SIDE_BY_SIDE[base if a else name]
    runs = _per_backbone(folder, f"{{}}_{run}/cam_metrics.json")
    if runs is None:
        return None
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
