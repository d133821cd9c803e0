"""Step 06: every trained score model next to the baselines, on the test anime of the shared split.

Two sets of rows, each with MAE, RMSE, R2, Pearson, Spearman, Kendall and MSE on min-max scaled scores, every
one with a paired bootstrap 95% interval:
- all test anime (every scored anime of data/raw/anime.csv in the test part): the text model and the baselines;
- the poster test rows (data/ani_data_merged.csv, one row per poster): the hybrid, vision-only and text models
  and the same baselines, so what the poster adds over the text model shows on the same rows.
Baselines are fit on the train anime: the mean score, ridge and gradient boosting on the metadata alone, and
TF-IDF synopsis + ridge (the multimodal popularity paper's traditional benchmark). Poster anime are mostly MAL's
top 1000 (scores 7.56-9.10), so on poster rows every MAE is small, the mean's included: Spearman is the honest
signal there.

    python AnimeScorePredictionAllParameters/06_evaluate.py
Writes data/reports/score/score_metrics.{csv,md} and data/reports/score/test_predictions.csv (row_set "anime":
one row per test anime; "poster": one row per test poster, with its image_path).
"""
import re
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(
    n_boot=1000,
    seed=42,
)
TRAIN_STEPS = {"text": "AnimeScorePredictionAllParameters/04_train_text_model.py",
               "hybrid": "AnimeScorePredictionAllParameters/05_train_hybrid_model.py",
               "vision": "AnimeScorePredictionOnlyPoster/01_train_vision_model.py"}


def model_label(kind, sidecar):
    name = {"text": "text model", "hybrid": "hybrid model", "vision": "vision-only model"}[kind]
    return f"{name} ({sidecar['backbone']})" if sidecar["backbone"] else name


def column_name(label):
    return "pred_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="anime table, output of step 01")
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="posters + metadata, output of step 03")
    parser.add_argument("--n-boot", type=cli.positive_int, default=SETTINGS["n_boot"],
                        help="bootstrap resamples per interval")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seeds the bootstrap resamples")
    parser.add_argument("--out", type=Path, default=paths.reports_dir() / "score", help="report folder")
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.core.batch import load_model_for
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.metrics import metrics_table, write_tables
    from animeml.core.runs import RunRecord
    from animeml.core.table import read_anime_table
    from animeml.score.features import MODEL_STEMS, fit_metadata_encoder, model_path, score_split
    from animeml.score.models import (fit_baselines, load_score_model, poster_calibration, predict_scores,
                                      report_title, scored_poster_rows)

    found = [kind for kind in MODEL_STEMS if model_path(kind).exists()]
    if not found:
        raise PipelineError(f"no trained score model in {paths.models_dir()}: run "
                            f"{', '.join(TRAIN_STEPS[kind] for kind in MODEL_STEMS)}")
    record = RunRecord("score/06_evaluate", cli.settings_of(args),
                       inputs={"metadata": args.metadata, "merged": args.merged,
                               **{f"{kind}_model": model_path(kind) for kind in found}})
    models = {kind: load_model_for(lambda path, kind=kind: load_score_model(kind, path), model_path(kind),
                                   TRAIN_STEPS[kind]) for kind in found}
    with_post_release = any(sidecar["with_post_release"] for _, sidecar in models.values())

    table = read_anime_table(args.metadata)
    table = table[table["score"].notna()].reset_index(drop=True)
    split = score_split(table["anime_id"])
    train, test = table[split == "train"], table[split == "test"].reset_index(drop=True)
    posters, poster_split = scored_poster_rows(args.merged)
    train_posters = posters[poster_split == "train"]
    posters = posters[poster_split == "test"].reset_index(drop=True)
    if len(test) < 2 or len(posters) < 2:
        raise PipelineError("fewer than 2 scored test anime or test posters in the saved score split")
    # the baselines see the same metadata groups as the models (franchise included, synopsis neighbours if used)
    neighbours = next((sidecar["encoder"]["neighbours"] for _, sidecar in models.values()
                       if "neighbours" in (sidecar["encoder"] or {})), None)
    predict_baselines = fit_baselines(train, fit_metadata_encoder(train, with_post_release=with_post_release,
                                                          neighbours_model=neighbours and neighbours["model"]))

    anime_predictions, poster_predictions = {}, {}
    for kind in ("hybrid", "vision", "text"):
        if kind in models:
            label = model_label(kind, models[kind][1])
            poster_predictions[label] = predict_scores(*models[kind], posters, posters["image_path"])
            if kind == "text":
                anime_predictions[label] = predict_scores(*models[kind], test)
                # The hybrid starts from this line; what it gains beyond it is the poster's own contribution
                slope, intercept = poster_calibration(predict_scores(*models[kind], train_posters),
                                                      train_posters["score"])
                poster_predictions[f"{label} calibrated on train posters (no image)"] = \
                    slope * poster_predictions[label] + intercept
    for rows, predictions in ((test, anime_predictions), (posters, poster_predictions)):
        predictions.update({f"{name} (baseline)": values for name, values in predict_baselines(rows).items()})
    poster_predictions["mean score of train posters (baseline)"] = np.full(len(posters),
                                                                       train_posters["score"].mean())

    score_range = (float(train["score"].min()), float(train["score"].max()))
    sections = {
        f"All test anime: {len(test)} anime": metrics_table(test["score"], anime_predictions, score_range,
                                                            args.n_boot, args.seed),
        f"Poster test rows: {len(posters)} posters of {posters['anime_id'].nunique()} anime": metrics_table(
            posters["score"], poster_predictions, score_range, args.n_boot, args.seed),
    }
    notes = [
        f"Split: {paths.data_dir() / 'splits' / 'score_split.csv'} (grouped by anime_id); baselines fit on the "
        f"{len(train)} train anime.",
        f"MSE_minmax: scores min-max scaled by the train range {score_range[0]:.2f}-{score_range[1]:.2f}.",
        f"Intervals: percentile bootstrap 95% over {args.n_boot} resamples of the rows, the same resamples for "
        f"every model of a table.",
        f"Poster test scores span {posters['score'].min():.2f}-{posters['score'].max():.2f} (mostly MAL top 1000): "
        f"small MAEs there come from the narrow range; Spearman is the signal. Models trained on all anime "
        f"underrate them; the hybrid starts from the text model recalibrated on train posters: compare it with "
        f"that row.",
    ]
    title = report_title("Score models on the grouped test split", with_post_release)
    write_tables(sections, args.out / "score_metrics", title, notes)

    anime_rows = pd.DataFrame({"row_set": "anime", "anime_id": test["anime_id"], "name": test["name"],
                               "image_path": "", "score": test["score"],
                               **{column_name(k): v for k, v in anime_predictions.items()}})
    poster_rows = pd.DataFrame({"row_set": "poster", "anime_id": posters["anime_id"], "name": posters["name"],
                                "image_path": posters["image_path"], "score": posters["score"],
                                **{column_name(k): v for k, v in poster_predictions.items()}})
    write_csv(pd.concat([anime_rows, poster_rows], ignore_index=True), args.out / "test_predictions.csv")

    for section, metrics in sections.items():
        print(section)
        for row in metrics.to_dict("records"):
            print(f"  {row['model']}: MAE {row['MAE']:.3f} [{row['MAE_low']:.3f}, {row['MAE_high']:.3f}], "
                  f"Spearman {row['Spearman']:.3f} [{row['Spearman_low']:.3f}, {row['Spearman_high']:.3f}]")
    record.finish({section: metrics.drop(columns="n").set_index("model").to_dict("index")
                   for section, metrics in sections.items()})
    print(f"wrote {args.out / 'score_metrics.md'}, score_metrics.csv and test_predictions.csv")


if __name__ == "__main__":
    cli.run(main)
