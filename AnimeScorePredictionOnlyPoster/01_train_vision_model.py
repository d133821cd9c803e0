"""Poster only: the vision model, poster image -> MAL score, nothing else.

Trained on the scored poster rows of data/ani_data_merged.csv (steps 01-03 of AnimeScorePredictionAllParameters)
split by the shared data/splits/score_split.csv (grouped by anime_id, the split of every score model): first with
the backbone frozen (on its cached features of the posters, data/cache/features/, shared with the hybrid model of
step 05), then with its top layers fine-tuned on augmented posters (small_cnn: trained whole from scratch),
keeping the checkpoint with the best validation loss. Evaluate it with AnimeScorePredictionAllParameters/06_evaluate.py.

    python AnimeScorePredictionOnlyPoster/01_train_vision_model.py --backbone efficientnet_lite0 --image-size 192 192
Writes data/models/anime_vision_only_model.h5 + .json and
data/reports/score/anime_vision_only_model_{history.csv,curve.png}.
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
    from animeml.score.features import model_path
    from animeml.score.models import (build_vision_model, make_sidecar, report_title, reports_path, save_score_model,
                                      scored_poster_rows, train_poster_model)

    record = RunRecord("score/poster_01_train_vision_model", cli.settings_of(args), inputs={"merged": args.merged})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    try:
        table, split = scored_poster_rows(args.merged)
    except PipelineError as err:
        raise PipelineError(f"{err}: run AnimeScorePredictionAllParameters/03_merge_data.py first") from None
    inputs = {}
    score_mean = float(table.loc[split == "train", "score"].mean())
    sidecar = make_sidecar("vision", score_mean, backbone=args.backbone, image_size=args.image_size)
    weights = None if args.weights == "none" else "imagenet"
    path = model_path("vision")
    model, history = train_poster_model(
        lambda: build_vision_model(build_backbone(args.backbone, args.image_size, weights=weights), score_mean),
        table, split, inputs, args.image_size, strategy=strategy, from_scratch=args.backbone == "small_cnn",
        backup_dir=path.with_suffix(".backup"), backbone_name=args.backbone, weights=weights,
        **recipe_arguments(args))
    best = trainer.best_row(history)
    save_score_model(model, path, sidecar, run=record.finish({"val_mae": float(best["val_mae"]),
                                                              "val_loss": float(best["val_loss"])}))
    trainer.write_history(history, reports_path() / path.stem,
                          report_title(f"Vision-only model ({args.backbone})", with_post_release=False),
                          metrics=("loss", "mae"))
    print(f"wrote the vision-only model ({args.backbone}): {(split == 'train').sum()} train posters, validation "
          f"MAE {best['val_mae']:.3f} at epoch {int(best['epoch'])} "
          f"(train mean alone: {history['val_mae'].iloc[0]:.3f})")


if __name__ == "__main__":
    cli.run(main)
