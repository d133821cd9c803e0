"""Step 02 (poster only): Grad-CAM and Grad-CAM++ heatmaps of the vision-only score model.

    python AnimeScorePredictionOnlyPoster/02_gradcam.py --per-group 4 --images some_poster.jpg

Predicts every test poster (the saved score split), then explains the best-, worst- and typically-predicted
ones (and any --images). Writes to data/reports/gradcam/: one overlay PNG per poster and method (poster size,
anime faces boxed), gradcam_grid.png, and gradcam_posters.csv with one row per poster and method: true and
predicted score and where the heat falls (centre vs border, on detected faces vs elsewhere, with the area
shares a uniform map would give). The maps show which pixels push the predicted score up.
"""
from pathlib import Path

from animeml.core import cli, paths, store
from animeml.core.faces import DEFAULT_CASCADE
from animeml.core.io import PipelineError

SETTINGS = dict(
    per_group=4,
)
TRAIN_STEP = "AnimeScorePredictionOnlyPoster/01_train_vision_model.py"


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--model", type=Path, default=store.model_file("anime", "vision_only_model"),
                        help="vision-only score model (.h5 with its .json sidecar)")
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="posters + metadata, output of step 03")
    parser.add_argument("--per-group", type=cli.positive_int, default=SETTINGS["per_group"],
                        help="posters each for best, worst and typical")
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="more posters to explain")
    parser.add_argument("--face-cascade", type=Path, default=DEFAULT_CASCADE,
                        help="OpenCV anime-face cascade XML (faces are boxed and their heat share measured)")
    parser.add_argument("--out", type=Path, default=paths.reports_dir() / "gradcam", help="report folder")
    args = cli.parse(parser, argv)
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise PipelineError(f"--images not found: {', '.join(missing)}")

    import pandas as pd

    from animeml.core.batch import load_model_for
    from animeml.core.faces import load_cascade
    from animeml.core.io import write_csv
    from animeml.core.runs import RunRecord
    from animeml.score.gradcam import explain_posters, pick_examples
    from animeml.score.models import load_score_model, predict_scores, scored_poster_rows

    model, sidecar = load_model_for(lambda path: load_score_model("vision", path), args.model, TRAIN_STEP)
    record = RunRecord("poster/02_gradcam", cli.settings_of(args), inputs={"model": args.model, "merged": args.merged})
    table, split = scored_poster_rows(args.merged)
    test = table[split == "test"].reset_index(drop=True)
    if test.empty:
        raise PipelineError("no scored test posters in the saved score split")
    test["predicted"] = predict_scores(model, sidecar, test, test["image_path"])
    test_mae = (test["predicted"] - test["score"]).abs().mean()
    baseline_mae = (sidecar["score_train_mean"] - test["score"]).abs().mean()

    # Posters to explain: the picked test posters, then --images (with their true score when they are scored)
    known = table.assign(key=[str(Path(p).resolve()) for p in table["image_path"]]).drop_duplicates("key")
    extra = pd.DataFrame({"key": [str(p.resolve()) for p in args.images]})
    extra = extra.merge(known.drop(columns="image_path"), on="key", how="left")
    extra = extra.assign(image_path=[str(p) for p in args.images], group="extra").drop(columns="key")
    chosen = pd.concat([pick_examples(test, args.per_group), extra], ignore_index=True)

    explained = explain_posters(model, chosen, sidecar["image_size"], args.out, load_cascade(args.face_cascade))
    write_csv(explained, args.out / "gradcam_posters.csv")

    gradcam = explained[explained["method"] == "gradcam"]
    shares = explained.groupby("method")[["face_heat_share", "face_area_share", "centre_heat_share",
                                          "centre_area_share"]].mean()
    record.finish({"test_mae": float(test_mae), "train_mean_baseline_mae": float(baseline_mae),
                   "posters_explained": len(chosen), "mean_shares": shares.to_dict("index")})
    print(f"test MAE {test_mae:.3f} over {len(test)} posters (train-mean baseline {baseline_mae:.3f}); "
          f"explained {len(chosen)} posters into {args.out}: Grad-CAM heat on faces "
          f"{gradcam['face_heat_share'].mean():.2f} (area {gradcam['face_area_share'].mean():.2f}), "
          f"centre {gradcam['centre_heat_share'].mean():.2f} (area {gradcam['centre_area_share'].mean():.2f})")


if __name__ == "__main__":
    cli.run(main)
