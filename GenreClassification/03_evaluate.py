"""Genre step 03: every trained genre model and the label-prior baseline on the test split, measured the same way.

For each data/models/genres_*.h5 (or --models): test metrics (micro/macro F1, precision, recall, per-genre F1, mAP,
top-1/top-3 accuracy) under three threshold schemes: one per genre and one shared (both tuned on validation,
read from the sidecar) and a fixed 0.5. The label-prior baseline scores each genre with its train frequency,
thresholds tuned on validation the same way; the best constant genre set chosen on the test split itself is
listed too, as the ceiling of any constant prediction.

Writes data/genres/results.csv and results.md, pr_curves_<model>.png and examples.png (test posters of the model
with the best validation micro-F1, predicted and true genres).

    python GenreClassification/03_evaluate.py
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(
    examples=12,
    seed=42,
)
TRAIN_STEP = "GenreClassification/02_train.py"
SUMMARY_COLUMNS = ["model", "image_size", "loss", "scheme", "val_micro_f1", "micro_f1", "micro_precision",
                   "micro_recall", "macro_f1", "map", "top1_accuracy", "top3_accuracy"]


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--models", type=Path, nargs="+", help="genre .h5 models (default data/models/genres_*.h5)")
    parser.add_argument("--examples", type=cli.positive_int, default=SETTINGS["examples"],
                        help="test posters shown in examples.png")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="picks the example posters")
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from animeml.core.batch import load_model_for
    from animeml.core.io import PipelineError, atomic_path, write_csv
    from animeml.core.multilabel import best_constant_set, label_prior, plot_pr_curves, predict
    from animeml.core.runs import RunRecord
    from animeml.genres import (SCHEMES, labels_csv, load_model, markdown_results, plot_examples, predict_table,
                                read_labels, result_row, scheme_thresholds, targets, tuned_thresholds)

    models = args.models or sorted(paths.models_dir().glob("genres_*.h5"))
    if not models:
        raise PipelineError(f"no genre model found in {paths.models_dir()}: train one with {TRAIN_STEP}")
    record = RunRecord("genres/03_evaluate", cli.settings_of(args),
                       inputs={"labels": labels_csv(), **{model_file.name: model_file for model_file in models}})
    try:
        table, genres = read_labels()
    except PipelineError as err:
        raise PipelineError(f"{err}: run GenreClassification/01_make_labels.py first") from None
    split = {name: table[table["split"] == name] for name in ("train", "val", "test")}
    y_val, y_test = targets(split["val"], genres), targets(split["test"], genres)
    y_train = targets(split["train"][split["train"]["source"] == "poster"], genres)  # the prior of posters only
    out = paths.genres_dir()

    rows, best = [], None
    for model_file in tqdm(models, desc="models"):
        model, sidecar = load_model_for(load_model, model_file, TRAIN_STEP,
                                        ["genres", "thresholds", "global_threshold", "image_size", "model", "loss",
                                         "val_micro_f1"])
        if sidecar["genres"] != genres:
            raise PipelineError(f"{model_file} was trained on other genres than data/genres/genres.json")
        prob_test = predict_table(model, split["test"]["image_path"], sidecar["image_size"])
        for scheme in SCHEMES:
            rows.append(result_row(y_test, prob_test, scheme_thresholds(sidecar, scheme), genres,
                                   file=model_file.name, model=sidecar["model"], image_size=sidecar["image_size"],
                                   loss=sidecar["loss"], scheme=scheme, val_micro_f1=sidecar["val_micro_f1"]))
        plot_pr_curves(y_test, prob_test, genres, out / f"pr_curves_{model_file.stem}.png",
                       title=f"{sidecar['model']} ({sidecar['loss']}): test precision-recall per genre")
        if best is None or sidecar["val_micro_f1"] > best[1]["val_micro_f1"]:
            best = (model_file, sidecar, prob_test)

    prior_val, prior_test = label_prior(y_train, len(y_val)), label_prior(y_train, len(y_test))
    per_genre, shared = tuned_thresholds(y_val, prior_val)
    for scheme, thresholds in (("per-genre", per_genre), ("shared", shared)):
        rows.append(result_row(y_test, prior_test, thresholds, genres, model="label prior", image_size="-",
                               loss="-", scheme=scheme))
    constant, _ = best_constant_set(y_test)
    constant_prob = np.zeros_like(y_test)
    constant_prob[:, constant] = 1.0
    rows.append(result_row(y_test, constant_prob, 0.5, genres, model="best constant set (chosen on test)",
                           image_size="-", loss="-", scheme="always " + ", ".join(genres[j] for j in constant)))

    results = pd.DataFrame(rows)
    write_csv(results, out / "results.csv")
    model_file, sidecar, prob_test = best
    best_row = results[(results["file"] == model_file.name) & (results["scheme"] == "per-genre")]
    per_genre_columns = ["model", "image_size", "loss", "scheme"] + [f"f1_{g}" for g in genres]
    prior_rows = results[results["model"] == "label prior"]
    text = ["# Genre classification from posters: test split", "",
            f"{len(y_test)} test posters of {split['test']['anime_id'].nunique()} anime, {len(genres)} genres; "
            f"micro-F1 with its 95% bootstrap interval.", "",
            markdown_results(results, SUMMARY_COLUMNS), "",
            f"## F1 per genre (best model on validation: {model_file.name}, and the prior)", "",
            markdown_results(pd.concat([best_row, prior_rows]), per_genre_columns), ""]
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(text))

    shown = split["test"].sample(min(args.examples, len(y_test)), random_state=args.seed)
    shown_prob = prob_test[split["test"].index.get_indexer(shown.index)]
    plot_examples(shown["image_path"].tolist(), targets(shown, genres),
                  predict(shown_prob, scheme_thresholds(sidecar, "per-genre")), genres, out / "examples.png")
    test_f1 = results.dropna(subset=["file"]).set_index(["file", "scheme"])["micro_f1"]
    record.finish({"test_micro_f1": {f"{file} ({scheme})": value for (file, scheme), value in test_f1.items()},
                   "label_prior_test_micro_f1": dict(zip(prior_rows["scheme"], prior_rows["micro_f1"])),
                   "best_on_validation": model_file.name, "test_posters": len(y_test)})
    print(results[SUMMARY_COLUMNS].to_string(index=False, float_format="%.3f"))
    print(f"wrote {out / 'results.csv'}, results.md, pr_curves_*.png, examples.png")


if __name__ == "__main__":
    cli.run(main)
