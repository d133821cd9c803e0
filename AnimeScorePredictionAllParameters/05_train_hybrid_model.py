"""Step 05: the hybrid model, poster + metadata + synopsis embedding -> MAL score.

It starts from the text model of step 04 (kept frozen, same metadata encoding and sentence model), recalibrated by
a line fit on the training posters (mostly top-rated anime, in a narrow score range), and learns a correction from
the poster on the poster rows of
data/ani_data_merged.csv, split by the shared data/splits/score_split.csv: first with the image backbone frozen,
then with its top layers fine-tuned, keeping the checkpoint with the best validation loss (never worse on
validation than where it started).

    python AnimeScorePredictionAllParameters/05_train_hybrid_model.py --backbone efficientnet_lite0 --image-size 192 192
Writes data/models/anime_hybrid_model.h5 + .json and data/reports/score/anime_hybrid_model_{history.csv,curve.png}.
"""
import argparse

import keras

from animeml.core.backbones import build_backbone
from animeml.core.cli import run
from animeml.score.features import model_inputs
from animeml.score.models import (add_poster_training_args, build_hybrid_model, load_score_model, make_sidecar,
                                  poster_calibration, report_title, scored_poster_rows, train_poster_model)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_poster_training_args(parser)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    text_model, text_sidecar = load_score_model("text")
    table, split = scored_poster_rows(args.merged)
    sidecar = make_sidecar("hybrid", text_sidecar["score_train_mean"], encoder=text_sidecar["encoder"],
                           backbone=args.backbone, image_size=args.image_size,
                           embedding_model=text_sidecar["embedding_model"])
    inputs = model_inputs(table, sidecar)
    train = split == "train"
    text_scores = text_model.predict({k: v[train] for k, v in inputs.items()}, verbose=0).reshape(-1)
    calibration = poster_calibration(text_scores, table.loc[train, "score"])
    backbone = build_backbone(args.backbone, args.image_size, weights=None if args.weights == "none" else "imagenet")
    model = build_hybrid_model(backbone, text_model, calibration)

    title = report_title(f"Hybrid model ({args.backbone})", sidecar["with_post_release"])
    history = train_poster_model(model, table, split, inputs, sidecar, args, title)
    best = history.loc[history["val_loss"].idxmin()]
    print(f"wrote the hybrid model ({args.backbone}): {train.sum()} train posters, validation MAE "
          f"{best['val_mae']:.3f} at epoch {int(best['epoch'])} (text model calibrated on the train posters, "
          f"{calibration[0]:.3f} x + {calibration[1]:.3f}: {history['val_mae'].iloc[0]:.3f})")


if __name__ == "__main__":
    run(main)
