"""Step 04: the text model, metadata + synopsis embedding -> MAL score, without any image.

It trains on every scored anime of data/raw/anime.csv in the train part of the shared split
(data/splits/score_split.csv, grouped by anime_id, made once over all scored anime), so it sees far more rows
than the poster models and is the model to use for an anime without a poster. Besides genres, episodes, title
and synopsis it sees the MAL id (entry order), the scores of earlier train entries of the same franchise and
those of the most similar earlier train titles (animeml.score.features); --without-franchise and --with-neighbours
are the ablations. The model is the mean of --members MLPs, each trained on its own (seed, shuffling, early stop),
blended with gradient boosting on the same inputs (the weight chosen on validation; --without-boosting leaves it
out). The MLPs alone start the hybrid model (step 05). Post-release fields (members, popularity, rank, favorites,
scored by) stay out unless --with-post-release, and then every title says so.

    python AnimeScorePredictionAllParameters/04_train_text_model.py
Writes data/models/anime_text_model.h5 + .json + _boosting.joblib and
data/reports/score/anime_text_model_{history.csv,curve.png}.
"""
import argparse
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.store import save_model
from animeml.core.table import read_anime_table
from animeml.score.features import fit_metadata_encoder, model_inputs, score_split
from animeml.score.models import (array_dataset, average_models, boosting_path, build_text_model, fit_boosting,
                                  make_sidecar, model_path, report_title, reports_path, train_score_model,
                                  write_boosting, write_history, write_sidecar)

EPOCHS = 60
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
PATIENCE = 6
EMBEDDING_MODEL = "minilm"
HUBER_DELTA = 0.5  # squared error below half a point, absolute above: closer to the MAE we report, robust to outliers
BLEND_WEIGHTS = np.linspace(0, 1, 21)  # of the gradient boosting, tried on validation
MEMBERS = 3  # averaged MLPs; 6 gained about 0.001 validation MAE over 3 in a probe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="output of step 01")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--patience", type=int, default=PATIENCE, help="epochs without improvement before stopping")
    parser.add_argument("--members", type=int, default=MEMBERS, help="MLPs trained apart and averaged")
    parser.add_argument("--without-franchise", action="store_true",
                        help="leave out the scores of earlier train entries of the same franchise and of the most "
                             "similar earlier train titles (ablation)")
    parser.add_argument("--without-boosting", action="store_true",
                        help="the MLPs alone, without the gradient boosting blended in (ablation)")
    parser.add_argument("--with-neighbours", action="store_true",
                        help="add the scores of the nearest train synopses (no gain on validation: off by default)")
    parser.add_argument("--with-post-release", action="store_true",
                        help="also use members, popularity, rank, favorites and scored by (known only after release)")
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and TensorFlow (member i: seed + i)")
    args = parser.parse_args()

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
    data = {part: {k: v[rows] for k, v in inputs.items()} for part, rows in (("train", train), ("val", val))}

    members, histories = [], []
    for member in range(args.members):
        seed = args.seed + member
        keras.utils.set_random_seed(seed)
        model = build_text_model(inputs["metadata"].shape[1], inputs["synopsis"].shape[1], score_mean,
                                 name=f"text_member_{member}")
        history = train_score_model(
            model, array_dataset(data["train"], scores[train], args.batch_size, training=True, seed=seed),
            array_dataset(data["val"], scores[val], args.batch_size), None, epochs=args.epochs,
            learning_rate=args.learning_rate, patience=args.patience, loss=keras.losses.Huber(HUBER_DELTA))
        members.append(model)
        histories.append(history.assign(member=member))
    model = average_models(members)
    network = model.predict(data["val"], verbose=0).reshape(-1)
    path = model_path("text")
    val_mae = float(np.abs(network - scores[val]).mean())
    summary = f"validation MAE {val_mae:.3f}"
    boosting_path(path).unlink(missing_ok=True)  # a model of an earlier run
    if not args.without_boosting:
        boosting = fit_boosting(data["train"], scores[train], seed=args.seed)
        boosted = boosting.predict(np.hstack([data["val"]["metadata"], data["val"]["synopsis"]]))
        blend_maes = [np.abs((1 - w) * network + w * boosted - scores[val]).mean() for w in BLEND_WEIGHTS]
        weight = float(BLEND_WEIGHTS[int(np.argmin(blend_maes))])
        sidecar["boosting"] = {"file": boosting_path(path).name, "weight": weight}
        write_boosting(path, boosting)
        summary = (f"validation MAE {min(blend_maes):.3f} blended with gradient boosting (weight {weight:.2f}; "
                   f"boosting alone {blend_maes[-1]:.3f}, MLPs alone {val_mae:.3f})")
    write_sidecar(path, sidecar)
    save_model(model, path)
    write_history(pd.concat(histories, ignore_index=True), reports_path() / path.stem,
                  report_title("Text model", args.with_post_release))
    member_maes = ", ".join(f"{h.loc[h['val_loss'].idxmin(), 'val_mae']:.3f}" for h in histories)
    print(f"wrote {path}: mean of {args.members} MLPs (validation MAE {member_maes} each) trained on "
          f"{train.sum()} anime; {summary} on {val.sum()} anime")


if __name__ == "__main__":
    run(main)
