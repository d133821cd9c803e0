"""Step 11: the popularity models of step 10 on the test part of the character-cluster split, in the layout of the
multimodal paper's Table 11: MSE on min-max scaled scores, Spearman, Pearson and Kendall, each with a bootstrap
95% interval (every model on the same resamples of the same test anime), the paper's numbers beside ours, and a
trivial baseline (the train mean) measured the same way.

    python AnimeScorePredictionAllParameters/11_evaluate_popularity.py
Writes data/reports/popularity/table_11.{csv,md} and test_predictions.csv.
"""
from pathlib import Path

import numpy as np

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(n_boot=1000, seed=0)
METRICS = ["MSE_minmax", "Spearman", "Pearson", "Kendall"]
TRAIN_MEAN = "train mean (trivial baseline)"


def side_by_side(table):
    """Markdown: per metric, ours as `value [low, high]` and the paper's number in the next column."""
    def ours(row, metric):
        if np.isnan(row[metric]):
            return "n/a"
        return f"{row[metric]:.3f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"
    names = {"MSE_minmax": "MSE"}
    header = ["experiment", "n"] + [f"{names.get(m, m)}{side}" for m in METRICS for side in ("", " (paper)")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["experiment"], str(row["n"])]
        for metric in METRICS:
            paper = row[f"paper {metric}"]
            cells += [ours(row, metric), "" if np.isnan(paper) else f"{paper:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--models", type=Path, nargs="+",
                        help="models to evaluate (default: every data/models/popularity_*.h5)")
    parser.add_argument("--n-boot", type=cli.positive_int, default=SETTINGS["n_boot"], help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the bootstrap resamples")
    parser.add_argument("--out-dir", type=Path, help="default data/reports/popularity")
    args = cli.parse(parser, argv)

    import pandas as pd

    from animeml.core.io import atomic_path, write_csv
    from animeml.core.metrics import metrics_table
    from animeml.core.runs import RunRecord
    from animeml.core.store import load_model
    from animeml.score import popularity

    model_files = args.models or sorted(paths.models_dir().glob("popularity_*.h5"))
    if not model_files:
        raise PipelineError(f"no popularity models in {paths.models_dir()}: run 10_train_popularity.py first")
    out_dir = args.out_dir or popularity.reports_dir()
    record = RunRecord("popularity/11_evaluate", cli.settings_of(args),
                       inputs={f.name: f for f in model_files} | {"split": popularity.split_path()})

    predictions, test_ids, truth, score_range, train_mean = {}, None, None, None, None
    for model_file in model_files:
        model, sidecar = load_model(model_file)
        features_file = popularity.features_path(sidecar["experiment"])
        anime_ids, scores, split, inputs = popularity.load_features(features_file)
        test = split == "test"
        if test_ids is None:
            test_ids, truth, score_range = anime_ids[test], scores[test], tuple(sidecar["score_range"])
            train_mean = sidecar["train_mean"]
        elif not np.array_equal(anime_ids[test], test_ids) or tuple(sidecar["score_range"]) != score_range:
            raise PipelineError(f"{model_file.name} was trained on another split than {model_files[0].name}: "
                                f"retrain every model of step 10 on data/splits/popularity_split.csv")
        if not test.any():
            raise PipelineError(f"{features_file}: no test anime")
        # a direct call: predict() would trace a new function per model and warn about retracing
        scaled = np.asarray(model({kind: inputs[kind][test] for kind in sidecar["inputs"]}, training=False))
        scaled = scaled.reshape(-1)
        predictions[sidecar["experiment"]] = scaled * (score_range[1] - score_range[0]) + score_range[0]
    predictions[TRAIN_MEAN] = np.full(len(truth), train_mean * (score_range[1] - score_range[0]) + score_range[0])

    table = metrics_table(truth, predictions, score_range, n_boot=args.n_boot, seed=args.seed)
    table = table.rename(columns={"model": "experiment"})
    paper = pd.DataFrame([(name, *values) for name, values in popularity.PAPER_TABLE_11.items()],
                         columns=["experiment"] + [f"paper {m}" for m in METRICS])
    order = list(popularity.PAPER_TABLE_11) + sorted(set(predictions) - set(popularity.PAPER_TABLE_11) - {TRAIN_MEAN})
    table["rank"] = table["experiment"].map({name: i for i, name in enumerate(order + [TRAIN_MEAN])})
    table = table.merge(paper, on="experiment", how="left").sort_values("rank").drop(columns="rank")
    table = table[["experiment", "n"] + [c for m in METRICS for c in (m, f"{m}_low", f"{m}_high", f"paper {m}")]]
    write_csv(table, out_dir / "table_11.csv")
    write_csv(pd.DataFrame({"anime_id": test_ids, "score": truth, **predictions}), out_dir / "test_predictions.csv")
    text = "\n".join([
        "# Popularity before release: Table 11 layout", "",
        f"{len(truth)} test anime of the character-cluster split (data/splits/popularity_split.csv); MSE on scores "
        f"min-max scaled by the train range [{score_range[0]:.2f}, {score_range[1]:.2f}]; 95% bootstrap "
        f"intervals over {args.n_boot} resamples shared by every row. `paper` columns: Table 11 of arXiv "
        "2406.16961v1 (its descriptions were cut at 256 tokens: our `_truncated` rows); `_pooled` rows embed "
        "every description whole, `-metadata` rows add metadata known before release. A correlation of the "
        "constant train mean is undefined (n/a).", "",
        side_by_side(table), ""])
    with atomic_path(out_dir / "table_11.md") as tmp:
        tmp.write_text(text)
    metrics = {row["experiment"]: {m: None if np.isnan(row[m]) else float(row[m]) for m in METRICS}
               for _, row in table.iterrows()}
    record.finish(metrics)
    print(f"wrote {out_dir / 'table_11.md'}: {len(predictions) - 1} models and the train mean on {len(truth)} "
          f"test anime")


if __name__ == "__main__":
    cli.run(main)
