"""Step 05: the hybrid model, poster + metadata + synopsis embedding -> MAL score.

It starts from the text model of step 04 (kept frozen, same metadata encoding and sentence model), recalibrated by
a line fit on the training posters (mostly top-rated anime, in a narrow score range), and learns a correction from
the poster on the poster rows of
data/ani_data_merged.csv, split by the shared data/splits/score_split.csv: first with the image backbone frozen
(on its features of the posters, computed once and kept in data/cache/features/, which the vision-only model
reuses), then with its top layers fine-tuned on augmented posters, keeping the checkpoint with the best validation
loss (never worse on validation than where it started).

    python AnimeScorePredictionAllParameters/05_train_hybrid_model.py --backbone efficientnet_lite0 --image-size 192 192
Writes data/models/anime_hybrid_model.h5 + .json and data/reports/score/anime_hybrid_model_{history.csv,curve.png}.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.trainer_flags import add_recipe_flags, recipe_arguments

SETTINGS = dict(
    backbone="efficientnet_lite0",
    weights="imagenet",
    image_size=[192, 192],
    epochs=8,
    finetune_epochs=4,
    finetune_layers=20,
    learning_rate=1e-3,
    finetune_learning_rate=1e-4,
    batch_size=32,
    patience=3,
    seed=42,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="output of step 03")
    add_recipe_flags(parser, SETTINGS)
    args = cli.parse(parser, argv)

    from animeml.core import trainer
    from animeml.core.backbones import build_backbone
    from animeml.core.io import PipelineError
    from animeml.core.runs import RunRecord
    from animeml.core.store import ModelMissing
    from animeml.score.features import model_inputs, model_path
    from animeml.score.models import (build_hybrid_model, load_score_model, make_sidecar, poster_calibration,
                                      report_title, reports_path, save_score_model, scored_poster_rows,
                                      train_poster_model)

    record = RunRecord("score/05_train_hybrid_model", cli.settings_of(args),
                       inputs={"merged": args.merged, "text_model": model_path("text")})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    try:
        text_model, text_sidecar = load_score_model("text")
    except ModelMissing as err:
        raise PipelineError(f"{err}: train it with AnimeScorePredictionAllParameters/04_train_text_model.py") from None
    try:
        table, split = scored_poster_rows(args.merged)
    except PipelineError as err:
        raise PipelineError(f"{err}: run AnimeScorePredictionAllParameters/03_merge_data.py first") from None
    sidecar = make_sidecar("hybrid", text_sidecar["score_train_mean"], encoder=text_sidecar["encoder"],
                           backbone=args.backbone, image_size=args.image_size,
                           embedding_model=text_sidecar["embedding_model"])
    inputs = model_inputs(table, sidecar)
    train = split == "train"
    text_scores = text_model.predict({k: v[train] for k, v in inputs.items()}, verbose=0).reshape(-1)
    calibration = poster_calibration(text_scores, table.loc[train, "score"])
    weights = None if args.weights == "none" else "imagenet"
    path = model_path("hybrid")

    def build():  # inside the strategy's scope: the nested text model is loaded again there
        return build_hybrid_model(build_backbone(args.backbone, args.image_size, weights=weights),
                                  load_score_model("text")[0], calibration)

    model, history = train_poster_model(
        build,
        table, split, inputs, args.image_size, strategy=strategy, from_scratch=args.backbone == "small_cnn",
        backup_dir=path.with_suffix(".backup"), backbone_name=args.backbone, weights=weights,
        **recipe_arguments(args))
    best = trainer.best_row(history)
    save_score_model(model, path, sidecar, run=record.finish({"val_mae": float(best["val_mae"]),
                                                              "val_loss": float(best["val_loss"])}))
    trainer.write_history(history, reports_path() / path.stem,
                          report_title(f"Hybrid model ({args.backbone})", sidecar["with_post_release"]),
                          metrics=("loss", "mae"))
    print(f"wrote the hybrid model ({args.backbone}): {train.sum()} train posters, validation MAE "
          f"{best['val_mae']:.3f} at epoch {int(best['epoch'])} (text model calibrated on the train posters, "
          f"{calibration[0]:.3f} x + {calibration[1]:.3f}: {history['val_mae'].iloc[0]:.3f})")


if __name__ == "__main__":
    cli.run(main)
