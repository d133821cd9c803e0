"""Predict the genres of poster images with a trained genre model (its sidecar JSON gives genres and thresholds).

    python GenreClassification/predict_genres.py --images DIR --out OUT.csv [--model data/models/genres_....h5]

Writes one row per image: file, the predicted genres ("Action|Drama", per-genre thresholds), one probability
column per genre, then status and reason. Every image is checked before the model sees it: one that is not an
image, truncated, empty or above 40 megapixels gets status `skipped` and the reason, and the others are predicted.
The exit status is 2 only when no image could be predicted.
"""
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(model="genres_efficientnet_lite0_bce.h5", batch_size=32)
TRAIN_STEP = "GenreClassification/02_train.py"


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of poster images")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write, one row per image")
    parser.add_argument("--model", type=Path, help=f"genre model .h5 with its .json sidecar (default: "
                                                   f"data/models/{SETTINGS['model']})")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per model call")
    args = cli.parse(parser, argv)

    from animeml.core import batch
    from animeml.core.faces import list_images
    from animeml.core.images import read_images
    from animeml.core.io import PipelineError
    from animeml.core.multilabel import predict
    from animeml.core.paths import models_dir
    from animeml.genres import load_model, predict_table, scheme_thresholds

    batch.check_out(args.out)
    model_file = args.model or models_dir() / SETTINGS["model"]
    model, sidecar = batch.load_model_for(load_model, model_file, TRAIN_STEP, ["genres", "thresholds", "image_size"])
    genres = sidecar["genres"]
    thresholds = scheme_thresholds(sidecar, "per-genre")
    images = list_images(args.images)
    if not images:
        raise PipelineError(f"no image files in {args.images}")

    def load(chunk):  # decoded here, in run_batch's loader thread, while the model predicts the chunk before
        return read_images(chunk, sidecar["image_size"])

    def predict_chunk(chunk):
        probabilities = predict_table(model, chunk, sidecar["image_size"], args.batch_size)
        chosen = predict(probabilities, thresholds)
        return [{"predicted_genres": "|".join(g for g, on in zip(genres, row_chosen) if on),
                 **dict(zip(genres, row.astype(float).round(4)))} for row, row_chosen in zip(probabilities, chosen)]

    outcomes = batch.run_batch(images, load, predict_chunk, args.batch_size, desc="predicting genres",
                               load_together=True)
    table = batch.outcome_table("file", [path.name for path in images], outcomes, ["predicted_genres", *genres])
    print(f"genres of {sum(outcome.ok for outcome in outcomes)} images with {model_file.name}")
    batch.finish(table, outcomes, args.out, "images")


if __name__ == "__main__":
    cli.run(main)
