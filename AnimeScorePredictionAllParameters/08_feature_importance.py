"""Step 08: what the hybrid score model relies on, on the test split.

    python AnimeScorePredictionAllParameters/08_feature_importance.py --repeats 5
    python AnimeScorePredictionAllParameters/08_feature_importance.py --kind text

Permutation importance of each input group (poster, synopsis, genres, type, episodes, ...): the mean increase
of the test MAE when that group is shuffled across test rows, with a 95% t-interval over --repeats shuffles.
Next to it, the weight norms of every first Dense layer per group (see animeml/importance.py for which layers).
Writes data/reports/analysis/<model>_importance.csv, <model>_first_layer_norms.csv and <model>_importance.png.
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(
    kind="hybrid",
    repeats=5,
    batch_size=32,
    seed=42,
)
TRAIN_STEPS = {"text": "AnimeScorePredictionAllParameters/04_train_text_model.py",
               "hybrid": "AnimeScorePredictionAllParameters/05_train_hybrid_model.py"}


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--kind", choices=["hybrid", "text"], default=SETTINGS["kind"], help="score model to explain")
    parser.add_argument("--model", type=Path, help="default: data/models/anime_<kind>_model.h5")
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="posters + metadata (step 03)")
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="anime table (step 01), for --kind text")
    parser.add_argument("--repeats", type=cli.positive_int, default=SETTINGS["repeats"], help="shuffles per group")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="rows per prediction batch")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seeds the shuffles")
    parser.add_argument("--out", type=Path, default=paths.reports_dir() / "analysis", help="report folder")
    args = cli.parse(parser, argv)

    import numpy as np

    from animeml.core.batch import load_model_for
    from animeml.core.images import drop_unreadable, load_image
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.runs import RunRecord
    from animeml.core.table import read_anime_table, read_merged
    from animeml.score.features import model_inputs, model_path, score_split
    from animeml.score.importance import (first_layer_weight_norms, input_groups, permutation_importance,
                                          plot_importance, split_at_backbone)
    from animeml.score.models import blended_scores, load_score_model, report_title

    model_file = args.model or model_path(args.kind)
    model, sidecar = load_model_for(lambda path: load_score_model(args.kind, path), model_file,
                                    TRAIN_STEPS[args.kind])
    # The hybrid is scored on poster rows, the text model on every scored anime, as each was trained
    source = args.merged if "image" in sidecar["inputs"] else args.metadata
    if not source.exists():
        raise PipelineError(f"{source} not found: run steps 01-03 first")
    record = RunRecord("score/08_feature_importance", cli.settings_of(args),
                       inputs={"model": model_file, "table": source})
    table = read_merged(source) if "image" in sidecar["inputs"] else read_anime_table(source)
    table = table[table["score"].notna()].reset_index(drop=True)
    if "image" in sidecar["inputs"]:
        table = drop_unreadable(table, "image_path", "scored posters")
    split = score_split(table["anime_id"])
    test = table[split == "test"].reset_index(drop=True)
    if len(test) < 2:
        raise PipelineError(f"{source}: fewer than 2 scored test rows in the saved score split")

    inputs = model_inputs(test, sidecar)
    backbone, predict_model = split_at_backbone(model)
    if "image" in sidecar["inputs"]:
        inputs["image"] = np.stack([load_image(p, sidecar["image_size"]).numpy() for p in test["image_path"]])
        if backbone is not None:  # every permutation reuses the posters' features
            inputs["image"] = backbone.predict(inputs["image"], batch_size=args.batch_size, verbose=0)
    targets = test["score"].to_numpy(dtype=float)

    def predict(x):  # the text model's score blends in its gradient boosting: measure what users get
        return blended_scores(predict_model(x, batch_size=args.batch_size, verbose=0)[:, 0], x, sidecar)

    importance = permutation_importance(predict, inputs, targets, input_groups(sidecar), repeats=args.repeats,
                                        seed=args.seed)
    # Trivial baseline: the mean score of the train rows of this same table (poster rows score higher than
    # the average anime, so the model's own training mean would flatter the hybrid)
    baseline_mae = np.abs(table.loc[split == "train", "score"].mean() - targets).mean()
    importance["train_mean_baseline_mae"] = baseline_mae
    norms = first_layer_weight_norms(model, input_groups(sidecar))

    stem = model_file.stem
    write_csv(importance, args.out / f"{stem}_importance.csv")
    write_csv(norms, args.out / f"{stem}_first_layer_norms.csv")
    plot_importance(importance, norms, args.out / f"{stem}_importance.png",
                    report_title(f"{stem}: permutation importance on {len(test)} test rows",
                                 sidecar["with_post_release"]))
    record.finish({"test_mae": float(importance["base_mae"].iloc[0]), "train_mean_baseline_mae": float(baseline_mae),
                   "mae_increase": dict(zip(importance["group"], importance["mae_increase"]))})
    top = ", ".join(f"{r['group']} +{r['mae_increase']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                    for r in importance.head(5).to_dict("records"))
    print(f"{stem}: test MAE {importance['base_mae'].iloc[0]:.3f} on {len(test)} rows (train-mean baseline "
          f"{baseline_mae:.3f}); largest MAE increases when permuted: {top}")


if __name__ == "__main__":
    cli.run(main)
