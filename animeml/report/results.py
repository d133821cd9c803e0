"""The README's results table, read from the files the steps wrote, so the README never disagrees with a run.

Each row: task, the result, the baselines measured the same way, and the published number or target (the only
typed-in column: targets do not come from a run). A row whose files are missing says which command makes them.
"""
import json
from pathlib import Path

import pandas as pd

OPENSET_TARGET = 0.10
TARGETS = {
    "score_text": "MAE 0.483, Spearman 0.431 (target MAE <= 0.45)",
    "score_posters": "image-only Spearman 0.096",
    "genres": "~0.50 (target 0.60)",
    "characters": "top-1 target 0.95",
    "openset": f"unseen faces named <= {OPENSET_TARGET:.0%}",
    "illustrations": "target 70%",
    "tags": "target 0.80",
    "recommendation": "> baselines, < 50 ms, >= 50x",
}


def interval(row, metric, digits=3):
    return f"{row[metric]:.{digits}f} [{row[f'{metric}_low']:.{digits}f}, {row[f'{metric}_high']:.{digits}f}]"


def score_rows(data_dir):
    path = data_dir / "reports" / "score" / "score_metrics.csv"
    command = "python AnimeScorePredictionAllParameters/06_evaluate.py"
    if not path.is_file():
        return [("score", None, None, TARGETS["score_text"], command)]
    table = pd.read_csv(path)
    rows = []
    for key, (prefix, label) in {"score_text": ("All test anime", "score, {n}"),
                                 "score_posters": ("Poster test rows", "score, {n}")}.items():
        part = table[table["rows"].str.startswith(prefix)]
        if part.empty:
            continue
        n = part["rows"].iloc[0].split(": ", 1)[-1]
        baseline = part["model"].str.contains("baseline")
        models = "; ".join(f"{r['model']} MAE {interval(r, 'MAE')}, Spearman {interval(r, 'Spearman')}"
                           for _, r in part[~baseline].iterrows())
        baselines = "; ".join(f"{r['model'].replace(' (baseline)', '')} MAE {r['MAE']:.3f}" +
                              ("" if pd.isna(r["Spearman"]) else f", Spearman {r['Spearman']:.3f}")
                              for _, r in part[baseline].iterrows())  # a constant has no rank correlation
        rows.append((label.format(n=n), models, baselines, TARGETS[key], None))
    return rows


def genre_rows(data_dir):
    path = data_dir / "genres" / "results.csv"
    if not path.is_file():
        return [("genres", None, None, TARGETS["genres"], "python GenreClassification/03_evaluate.py")]
    table = pd.read_csv(path)
    trained = table[table["file"].notna() & (table["scheme"] == "per-genre")]
    prior = table[(table["model"] == "label prior") & (table["scheme"] == "per-genre")]
    result = "no trained model in results.csv"
    if len(trained):
        best = trained.loc[trained["val_micro_f1"].idxmax()]
        result = (f"{best['model']} at {best['image_size']} px + {best['loss']} (best on validation), per-genre "
                  f"thresholds: micro-F1 {interval(best, 'micro_f1')}")
    baseline = f"label prior {interval(prior.iloc[0], 'micro_f1')}" if len(prior) else ""
    return [("genres (`03_evaluate.py`)", result, baseline, TARGETS["genres"], None)]


def face_sets(data_dir):
    """The folders where CharacterTagging/02_train_characters.py wrote a metrics.csv (data/characters first, then
    e.g. characters20 and characters20_held_out), each with its table."""
    found = []
    for path in sorted(data_dir.glob("*/metrics.csv"), key=lambda p: (p.parent.name != "characters", p.parent.name)):
        try:  # the header tells step 02's files from other steps' metrics.csv, which may be damaged
            header = pd.read_csv(path, nrows=0).columns
        except (ValueError, UnicodeDecodeError):
            continue
        if {"model", "top1", "test_faces"} <= set(header):
            found.append((path.parent, pd.read_csv(path)))
    return found


def openset_within_target(curve, target=OPENSET_TARGET):
    """The loosest validation rule of step 02's open-set curve that names at most `target` of the unseen faces,
    with what it costs the known faces, as a clause of the result."""
    within = curve[curve["unknown_named"] <= target].sort_values("keep_known")
    if within.empty:
        return f"; none of its validation rules (keep {curve['keep_known'].min():g}-{curve['keep_known'].max():g}) " \
               f"names <= {target:.0%}"
    best = within.iloc[-1]
    return (f"; <= {target:.0%} from `--keep-known {best['keep_known']:g}`: unseen named "
            f"{interval(best, 'unknown_named')}, known accuracy {interval(best, 'known_accuracy')}")


def character_rows(data_dir):
    rows = []
    for folder, table in face_sets(data_dir):
        baseline = table["model"].eq("majority class") | table["model"].str.startswith("nearest neighbour")
        results, targets = [], [TARGETS["characters"]]
        for _, r in table[~baseline].iterrows():
            result = (f"{r['model']} top-1 {interval(r, 'top1')}, top-5 {r['top5']:.3f}, "
                      f"macro-F1 {interval(r, 'macro_f1')}")
            openset = folder / f"openset_{r['model']}.csv"
            if openset.is_file():
                unseen = pd.read_csv(openset).iloc[-1]
                result += (f"; {int(unseen['unknown_faces'])} faces of unseen characters named "
                           f"{interval(unseen, 'unknown_named')}")
                if pd.notna(unseen.get("unknown_named_target")):
                    result += (f" (`--unknown-named {unseen['unknown_named_target']:g}`: the threshold keeps "
                               f"{unseen['keep_known']:.2f} of the right validation names; known accuracy "
                               f"{interval(unseen, 'known_accuracy')})")
                targets = [TARGETS["characters"], TARGETS["openset"]]
            curve = folder / f"openset_curve_{r['model']}.csv"
            if curve.is_file():
                result += openset_within_target(pd.read_csv(curve))
            results.append(result)
        baselines = "; ".join(f"{r['model']} {r['top1']:.3f}" for _, r in table[baseline].iterrows())
        rows.append((f"characters, {int(table['test_faces'].iloc[-1]):,} test faces of `{folder.name}` "
                     "(`02_train_characters.py`)", "; ".join(results), baselines, ", ".join(targets), None))
    if not rows:
        rows.append(("characters", None, None, TARGETS["characters"],
                     "python CharacterTagging/02_train_characters.py"))
    path = data_dir / "characters" / "detector_settings.csv"
    if path.is_file():
        table = pd.read_csv(path)
        measured = {r["role"]: r for _, r in table[table["role"].notna()].iterrows()} if "role" in table else {}
        found = lambda r: (f"{r['test_character_found']:.1%} [{r['test_found_low']:.1%}, {r['test_found_high']:.1%}] "
                           f"of {int(r['test_images'])}, a face in {r['test_detection_recall']:.1%}")
        result = f"labelled character found in {found(measured['chosen'])}" if "chosen" in measured else ""
        baseline = f"cascade defaults {found(measured['default'])}" if "default" in measured else ""
        rows.append(("characters, test illustrations (`04_tune_detector.py`)", result, baseline,
                     TARGETS["illustrations"], None))
    else:
        rows.append(("characters, illustrations", None, None, TARGETS["illustrations"],
                     "python CharacterTagging/04_tune_detector.py"))
    return rows


def tag_rows(data_dir):
    path = data_dir / "tags" / "metrics.csv"
    if not path.is_file():
        return [("tags", None, None, TARGETS["tags"], "python CharacterTagging/03_train_tagger.py")]
    table = pd.read_csv(path)
    prior = table["model"].str.startswith("tag prior")
    chosen = table["chosen_on_val"].astype(bool) if "chosen_on_val" in table else ~prior

    def result(r):
        sources = f" trained on {r['sources']}" if "sources" in r else ""
        kept = " (kept on validation)" if chosen[r.name] else ""
        return f"{r['model']}{sources}{kept} micro-F1 {interval(r, 'micro_f1')}, mAP {r['map']:.3f}"
    faces = f"{int(table['test_images'].iloc[-1])} test faces" if "test_images" in table else "test faces"
    baseline = "; ".join(f"tag prior micro-F1 {r['micro_f1']:.3f}" for _, r in table[prior].iterrows())
    return [(f"tags, {faces} (`03_train_tagger.py`)", "; ".join(result(r) for _, r in table[~prior].iterrows()),
             baseline, TARGETS["tags"], None)]


def recommendation_rows(data_dir):
    folder = data_dir / "recommendation"
    summary, benchmark = folder / "evaluation_summary.csv", folder / "benchmark.json"
    if not summary.is_file():
        return [("recommendation", None, None, TARGETS["recommendation"], "python Recommendation/02_evaluate.py")]
    table = pd.read_csv(summary)
    table = table[table["queries"] == "all queries"]
    hit = next(c for c in table.columns if c.startswith("hit@"))
    by_method = {r["method"]: r for _, r in table.iterrows()}
    result = ""
    if "hybrid" in by_method:
        r = by_method["hybrid"]
        result = f"{hit} {r[hit]:.3f} +- {r['ci95']:.3f} (hybrid)"
    if benchmark.is_file():
        bench = json.loads(benchmark.read_text())
        result += (f", median query {bench['latency_median_ms']} ms (p95 {bench['latency_p95_ms']}), vectorised "
                   f"{bench['speedup']}x the loop")
    else:
        result += " (latency: not run yet: python Recommendation/03_benchmark.py)"
    baseline = "; ".join(f"{m} {r[hit]:.3f}" for m, r in by_method.items() if m != "hybrid")
    n = int(by_method["hybrid"]["n"]) if "hybrid" in by_method else len(table)
    return [(f"recommendation, {n:,} franchise queries", result, baseline, TARGETS["recommendation"], None)]


PARTS = [(score_rows, "score", "score_text"), (genre_rows, "genres", "genres"),
         (character_rows, "characters", "characters"), (tag_rows, "tags", "tags"),
         (recommendation_rows, "recommendation", "recommendation")]


def results_rows(data_dir):
    """(task, result, baseline, published/target, command or None) for every row of the README's table. A file
    that cannot be read as its step writes it (damaged, or from an older version) is one row saying so."""
    data_dir = Path(data_dir)
    rows = []
    for part, task, target in PARTS:
        try:
            rows += part(data_dir)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:  # pandas' parse errors are ValueErrors
            rows.append((task, f"unreadable ({type(err).__name__}: {err}); rerun its step", "", TARGETS[target],
                         None))
    return rows


def markdown(data_dir):
    lines = ["| task | result | baseline measured the same way | published / target |", "|---|---|---|---|"]
    for task, result, baseline, target, command in results_rows(data_dir):
        if command:
            result, baseline = f"not run yet: `{command}`", ""
        lines.append(f"| {task} | {result} | {baseline} | {target} |")
    return "\n".join(lines)
