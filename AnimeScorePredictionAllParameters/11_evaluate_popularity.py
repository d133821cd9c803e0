"""Step 11: the popularity models of step 10 on the test part of the character-cluster split, in the layout of the
multimodal paper's Table 11: MSE on min-max scaled scores, Spearman, Pearson and Kendall, each with a bootstrap
95% interval (every model on the same resamples of the same test anime), the paper's numbers beside ours, and a
trivial baseline (the train mean) measured the same way.

    python AnimeScorePredictionAllParameters/11_evaluate_popularity.py
Writes data/reports/popularity/table_11.{csv,md} and test_predictions.csv.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(n_boot=1000, seed=0)
METRICS = ["MSE_minmax", "Spearman", "Pearson", "Kendall"]
TRAIN_MEAN = "train mean (trivial baseline)"


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--models", type=Path, nargs="+",
                        help="models to evaluate (default: every data/models/popularity_*.h5)")
    parser.add_argument("--n-boot", type=cli.positive_int, default=SETTINGS["n_boot"], help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the bootstrap resamples")
    parser.add_argument("--out-dir", type=Path, help="default data/reports/popularity")
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.core.io import atomic_path, write_csv
    from animeml.core.metrics import markdown_table, metrics_table
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
        scaled = model.predict({kind: inputs[kind][test] for kind in sidecar["inputs"]}, verbose=0).reshape(-1)
        predictions[sidecar["experiment"]] = scaled * (score_range[1] - score_range[0]) + score_range[0]
    predictions[TRAIN_MEAN] = np.full(len(truth), train_mean * (score_range[1] - score_range[0]) + score_range[0])

    table = metrics_table(truth, predictions, score_range, n_boot=args.n_boot, seed=args.seed)
    table = table.rename(columns={"model": "experiment"})
    paper = pd.DataFrame([(name, *values) for name, values in popularity.PAPER_TABLE_11.items()],
                         columns=["experiment"] + [f"paper {m}" for m in METRICS])
    table = table.merge(paper, on="experiment", how="left")
    keep = ["experiment", "n"] + [c for m in METRICS for c in (m, f"{m}_low", f"{m}_high")]
    table = table[keep + list(paper.columns[1:])]
    write_csv(table, out_dir / "table_11.csv")
    write_csv(pd.DataFrame({"anime_id": test_ids, "score": truth, **predictions}), out_dir / "test_predictions.csv")
    paper_cells = table[list(paper.columns[1:])].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown = table[keep].join(paper_cells)
    text = "\n".join([
        "# Popularity before release: Table 11 layout", "",
        f"{len(truth)} test anime of the character-cluster split (data/splits/popularity_split.csv); MSE on scores "
        f"min-max scaled by the train range [{score_range[0]:.2f}, {score_range[1]:.2f}]; 95% bootstrap "
        f"intervals over {args.n_boot} resamples shared by every row. `paper` columns: Table 11 of arXiv "
        "2406.16961v1 (its descriptions were cut at 256 tokens: our `_truncated` rows); `_pooled` rows embed "
        "every description whole, `-metadata` rows add metadata known before release.", "",
        markdown_table(shown.rename(columns=lambda c: c.replace("MSE_minmax", "MSE")),
                       metric_names=["MSE", "Spearman", "Pearson", "Kendall"]),
        ""])
    with atomic_path(out_dir / "table_11.md") as tmp:
        tmp.write_text(text)
    metrics = {row.experiment: {m: float(getattr(row, m)) for m in METRICS} for row in table.itertuples()}
    record.finish(metrics)
    print(f"wrote {out_dir / 'table_11.md'}: {len(predictions) - 1} models and the train mean on {len(truth)} "
          f"test anime")


if __name__ == "__main__":
    cli.run(main)
