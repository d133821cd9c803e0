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
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.trainer_flags import add_training_flags

SETTINGS = dict(
    epochs=60,
    batch_size=64,
    learning_rate=1e-3,
    patience=6,
    members=3,  # averaged MLPs; 6 gained about 0.001 validation MAE over 3 in a probe
    huber_delta=0.5,  # squared error below half a point, absolute above: closer to the MAE we report, robust
    seed=42,
)
EMBEDDING_MODEL = "minilm"
BLEND_STEPS = 21  # weights of the gradient boosting tried on validation, 0..1


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="output of step 01")
    parser.add_argument("--epochs", type=cli.positive_int, default=SETTINGS["epochs"], help="most epochs per MLP")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="anime per batch and device")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="Adam learning rate")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="epochs without improvement before stopping")
    parser.add_argument("--members", type=cli.positive_int, default=SETTINGS["members"],
                        help="MLPs trained apart and averaged")
    parser.add_argument("--huber-delta", type=cli.positive_float, default=SETTINGS["huber_delta"],
                        help="Huber loss: squared error below this many points, absolute above")
    parser.add_argument("--without-franchise", action="store_true",
                        help="leave out the scores of earlier train entries of the same franchise and of the most "
                             "similar earlier train titles (ablation)")
    parser.add_argument("--without-boosting", action="store_true",
                        help="the MLPs alone, without the gradient boosting blended in (ablation)")
    parser.add_argument("--with-neighbours", action="store_true",
                        help="add the scores of the nearest train synopses (no gain on validation: off by default)")
    parser.add_argument("--with-post-release", action="store_true",
                        help="also use members, popularity, rank, favorites and scored by (known only after release)")
    add_training_flags(parser, seed=SETTINGS["seed"])
    args = cli.parse(parser, argv)

    import keras
    import numpy as np
    import pandas as pd

    from animeml.core import trainer
    from animeml.core.io import PipelineError
    from animeml.core.runs import RunRecord
    from animeml.core.table import read_anime_table
    from animeml.score.features import fit_metadata_encoder, model_inputs, score_split
    from animeml.score.models import (array_dataset, average_models, boosting_path, build_text_model, fit_boosting,
                                      make_sidecar, model_path, report_title, reports_path, save_score_model,
                                      write_boosting)

    record = RunRecord("score/04_train_text_model", cli.settings_of(args), inputs={"metadata": args.metadata})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
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
        model, history = trainer.fit(
            lambda: build_text_model(inputs["metadata"].shape[1], inputs["synopsis"].shape[1], score_mean,
                                     name=f"text_member_{member}"),
            lambda batch: array_dataset(data["train"], scores[train], batch, training=True, seed=seed),
            lambda batch: array_dataset(data["val"], scores[val], batch), loss=keras.losses.Huber(args.huber_delta),
            metrics=["mae"], strategy=strategy, epochs=args.epochs, learning_rate=args.learning_rate,
            batch_size=args.batch_size, patience=args.patience)
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
        blend_weights = np.linspace(0, 1, BLEND_STEPS)
        blend_maes = [np.abs((1 - w) * network + w * boosted - scores[val]).mean() for w in blend_weights]
        weight = float(blend_weights[int(np.argmin(blend_maes))])
        sidecar["boosting"] = {"file": boosting_path(path).name, "weight": weight}
        write_boosting(path, boosting)
        summary = (f"validation MAE {min(blend_maes):.3f} blended with gradient boosting (weight {weight:.2f}; "
                   f"boosting alone {blend_maes[-1]:.3f}, MLPs alone {val_mae:.3f})")
    best_mae = min(blend_maes) if not args.without_boosting else val_mae
    save_score_model(model, path, sidecar, run=record.finish({"val_mae": float(best_mae),
                                                              "val_mae_networks": val_mae}))
    trainer.write_history(pd.concat(histories, ignore_index=True), reports_path() / path.stem,
                          report_title("Text model", args.with_post_release), metrics=("loss", "mae"))
    member_maes = ", ".join(f"{h.loc[h['val_loss'].idxmin(), 'val_mae']:.3f}" for h in histories)
    print(f"wrote {path}: mean of {args.members} MLPs (validation MAE {member_maes} each) trained on "
          f"{train.sum()} anime; {summary} on {val.sum()} anime")


if __name__ == "__main__":
    cli.run(main)
