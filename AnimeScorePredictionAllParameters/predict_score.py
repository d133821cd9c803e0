"""Predict the MyAnimeList score of new anime with a trained score model.

    python AnimeScorePredictionAllParameters/predict_score.py --model hybrid --csv new.csv --images posters/ \
        --out scores.csv

CSV: rows in the Kaggle "Anime Dataset 2023" layout (`UNKNOWN` where a value is not known yet). The poster of a
row is its `image_path` column when the CSV has one (relative paths are relative to the CSV's folder), else
IMAGES/<anime_id>.jpg. The text model needs no poster: use it for anime without one.
Writes anime_id, name, predicted_score and reason: a row that cannot be scored (no poster, an unreadable image,
neither synopsis nor metadata) gets an empty score and the reason, never a crash.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from animeml.core.io import PipelineError, write_csv

from animeml.core.cli import run
from animeml.core.table import clean_table, read_kaggle_csv
from animeml.score.models import load_score_model, model_path, nothing_known, poster_problem, predict_scores

KINDS = ["hybrid", "vision", "text"]


def poster_paths(csv, table, images):
    """Each row's poster: the CSV's image_path column if it has one (None where blank), else
    IMAGES/<anime_id>.jpg."""
    columns = pd.read_csv(csv, nrows=0).columns
    if "image_path" in columns:
        given = pd.read_csv(csv, usecols=["image_path"], dtype=str, keep_default_na=False)["image_path"]
        return [csv.parent / p if p else None for p in given]
    if images is None:
        raise PipelineError(f"{csv} has no image_path column: give the posters' folder with --images")
    return [images / f"{anime_id}.jpg" for anime_id in table["anime_id"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=KINDS, default="hybrid")
    parser.add_argument("--model-path", type=Path, help="a model .h5 with its .json sidecar "
                                                        "(default: data/models/<the --model kind's file>)")
    parser.add_argument("--csv", type=Path, required=True, help="anime rows in the Kaggle 2023 layout")
    parser.add_argument("--images", type=Path, help="folder of posters named <anime_id>.jpg")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    table = clean_table(read_kaggle_csv(args.csv, required=["anime_id", "Name"]))  # new anime have no Score
    model, sidecar = load_score_model(args.model, args.model_path or model_path(args.model))
    reasons = np.full(len(table), "", dtype=object)
    posters = None
    if "image" in sidecar["inputs"]:
        posters = poster_paths(args.csv, table, args.images)
        reasons = np.array([poster_problem(p) if p else "no poster given in image_path" for p in posters],
                           dtype=object)
    if "metadata" in sidecar["inputs"]:
        empty = nothing_known(table, sidecar) & (reasons == "")
        reasons[empty] = "neither synopsis nor metadata (genres, type, episodes, ...) is known"

    scorable = reasons == ""
    predicted = np.full(len(table), np.nan)
    if scorable.any():
        rows = table[scorable].reset_index(drop=True)
        predicted[scorable] = predict_scores(model, sidecar, rows,
                                             [p for p, ok in zip(posters, scorable) if ok] if posters else None,
                                             args.batch_size)
    out = pd.DataFrame({"anime_id": table["anime_id"], "name": table["name"],
                        "predicted_score": np.round(predicted, 3), "reason": reasons})
    write_csv(out, args.out)
    print(f"wrote {args.out}: {scorable.sum()} of {len(table)} rows scored with the {args.model} model"
          + (f", {len(table) - scorable.sum()} with a reason instead" if not scorable.all() else ""))


if __name__ == "__main__":
    run(main)
