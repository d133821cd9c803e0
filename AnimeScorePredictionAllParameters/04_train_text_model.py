"""Step 04: the text model, metadata + synopsis embedding -> MAL score, without any image.

It trains on every scored anime of data/raw/anime.csv in the train part of the shared split
(data/splits/score_split.csv, grouped by anime_id, made once over all scored anime), so it sees far more rows
than the poster models and is the model to use for an anime without a poster. Besides genres, episodes, title
and synopsis it sees the MAL id (entry order) and the scores of earlier train entries of the same franchise
(animeml.score_features); --without-franchise and --with-neighbours are the ablations. It also starts the hybrid model
(step 05). Post-release fields (members, popularity, rank, favorites, scored by) stay out unless
--with-post-release, and then every title says so.

    python AnimeScorePredictionAllParameters/04_train_text_model.py
Writes data/models/anime_text_model.h5 + .json and data/reports/score/anime_text_model_{history.csv,curve.png}.
"""
import argparse
from pathlib import Path

import keras

from animeml import paths
from animeml.cli import PipelineError, run
from animeml.metadata import read_anime_table
from animeml.score_features import fit_metadata_encoder, model_inputs, score_split
from animeml.score_models import (array_dataset, build_text_model, make_sidecar, model_path, report_title,
                                  reports_path, train_score_model, write_history, write_sidecar)

EPOCHS = 60
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
PATIENCE = 6
EMBEDDING_MODEL = "minilm"
HUBER_DELTA = 0.5  # squared error below half a point, absolute above: closer to the MAE we report, robust to outliers


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="output of step 01")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--patience", type=int, default=PATIENCE, help="epochs without improvement before stopping")
    parser.add_argument("--without-franchise", action="store_true",
                        help="leave out the scores of earlier train entries of the same franchise (ablation)")
    parser.add_argument("--with-neighbours", action="store_true",
                        help="add the scores of the nearest train synopses (no gain on validation: off by default)")
    parser.add_argument("--with-post-release", action="store_true",
                        help="also use members, popularity, rank, favorites and scored by (known only after release)")
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and TensorFlow")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    table = read_anime_table(args.metadata)
    table = table[table["score"].notna()].reset_index(drop=True)
    split = score_split(table["anime_id"])
    train, val = split == "train", split == "val"
    if train.sum() == 0 or val.sum() == 0:
        raise PipelineError(f"{args.metadata}: no scored anime in the train or validation split")

    encoder = fit_metadata_encoder(table[train], with_post_release=args.with_post_release,
                                   with_franchise=not args.without_franchise,
                                   neighbours_model=EMBEDDING_MODEL if args.with_neighbours else None)
    score_mean = float(table.loc[train, "score"].mean())
    sidecar = make_sidecar("text", score_mean, encoder=encoder, embedding_model=EMBEDDING_MODEL)
    inputs = model_inputs(table, sidecar)
    scores = table["score"].to_numpy()
    model = build_text_model(inputs["metadata"].shape[1], inputs["synopsis"].shape[1], score_mean)

    path = model_path("text")
    write_sidecar(path, sidecar)
    history = train_score_model(
        model,
        array_dataset({k: v[train] for k, v in inputs.items()}, scores[train], args.batch_size, training=True),
        array_dataset({k: v[val] for k, v in inputs.items()}, scores[val], args.batch_size),
        path, epochs=args.epochs, learning_rate=args.learning_rate, patience=args.patience,
        loss=keras.losses.Huber(HUBER_DELTA))
    write_history(history, reports_path() / path.stem, report_title("Text model", args.with_post_release))
    best = history.loc[history["val_loss"].idxmin()]
    print(f"wrote {path}: trained on {train.sum()} anime, best validation MAE {best['val_mae']:.3f} "
          f"(epoch {int(best['epoch'])}) on {val.sum()} anime")


if __name__ == "__main__":
    run(main)
