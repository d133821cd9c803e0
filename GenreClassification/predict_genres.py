"""Predict the genres of poster images with a trained genre model (its sidecar JSON gives genres and thresholds).

Writes one row per image: file, the predicted genres ("Action|Drama", per-genre thresholds) and one probability
column per genre.

    python GenreClassification/predict_genres.py --images DIR --out OUT.csv [--model data/models/genres_....h5]
"""
import argparse
from pathlib import Path

import pandas as pd

from animeml.core.io import PipelineError, write_csv

from animeml.core.cli import run
from animeml.genres import load_model, model_path, predict_table, scheme_thresholds
from animeml.core.multilabel import predict

DEFAULT_MODEL = model_path("efficientnet_lite0", "bce")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of poster images")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not args.images.is_dir():
        raise PipelineError(f"{args.images} is not a folder")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PipelineError(f"no image ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}")

    model, sidecar = load_model(args.model)
    genres = sidecar["genres"]
    prob = predict_table(model, [str(p) for p in images], sidecar["image_size"], args.batch_size)
    predicted = predict(prob, scheme_thresholds(sidecar, "per-genre"))
    table = pd.DataFrame(prob, columns=genres).round(4)
    table.insert(0, "predicted_genres", ["|".join(g for g, on in zip(genres, row) if on) for row in predicted])
    table.insert(0, "file", [p.name for p in images])
    write_csv(table, args.out)
    print(f"wrote {args.out}: genres of {len(images)} images with {args.model.name}")


if __name__ == "__main__":
    run(main)
