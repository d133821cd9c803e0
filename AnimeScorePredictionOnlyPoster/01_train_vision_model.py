"""Poster only: the vision model, poster image -> MAL score, nothing else.

Trained on the scored poster rows of data/ani_data_merged.csv (steps 01-03 of AnimeScorePredictionAllParameters)
split by the shared data/splits/score_split.csv (grouped by anime_id, the split of every score model): first with
the backbone frozen, then with its top layers fine-tuned (small_cnn: trained whole from scratch), keeping the
checkpoint with the best validation loss. Evaluate it with AnimeScorePredictionAllParameters/06_evaluate.py.

    python AnimeScorePredictionOnlyPoster/01_train_vision_model.py --backbone efficientnet_lite0 --image-size 192 192
Writes data/models/anime_vision_only_model.h5 + .json and
data/reports/score/anime_vision_only_model_{history.csv,curve.png}.
"""
import argparse

import keras

from animeml.core.backbones import build_backbone
from animeml.core.cli import run
from animeml.score.models import (add_poster_training_args, build_vision_model, make_sidecar, report_title,
                                  scored_poster_rows, train_poster_model)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_poster_training_args(parser)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    table, split = scored_poster_rows(args.merged)
    score_mean = float(table.loc[split == "train", "score"].mean())
    sidecar = make_sidecar("vision", score_mean, backbone=args.backbone, image_size=args.image_size)
    backbone = build_backbone(args.backbone, args.image_size, weights=None if args.weights == "none" else "imagenet")
    model = build_vision_model(backbone, score_mean)

    title = report_title(f"Vision-only model ({args.backbone})", with_post_release=False)
    history = train_poster_model(model, table, split, {}, sidecar, args, title)
    best = history.loc[history["val_loss"].idxmin()]
    print(f"wrote the vision-only model ({args.backbone}): {(split == 'train').sum()} train posters, validation "
          f"MAE {best['val_mae']:.3f} at epoch {int(best['epoch'])} "
          f"(train mean alone: {history['val_mae'].iloc[0]:.3f})")


if __name__ == "__main__":
    run(main)
