"""Train character classifiers on face crops in the moeimouto-faces layout (`root/<character>/*.png|jpg`) and
compare backbones on one test split (by file, seeded, stratified by character).

Writes data/models/characters_<backbone>.h5 (+ .json sidecar with the character names), and under
data/characters/: split.csv, metrics.csv (one row per backbone trained on this split, next to the majority-class
baseline), per_character_<backbone>.csv and confusion_<backbone>.png.
"""
import argparse
from pathlib import Path

from animeml.core import cli
from animeml.core.paths import SHARED, characters_dir
from animeml.core.trainer_flags import add_training_flags

SETTINGS = dict(
    faces_dir=SHARED / "data" / "characters" / "faces",
    backbones=["efficientnet_lite0", "small_cnn"],
    image_size=160,
    head_epochs=200,
    finetune_epochs=20,
    finetune_layers=1000,  # all: on ../shared's faces the top 60 reached test accuracy 0.953, all 0.977
    learning_rate=1e-3,
    finetune_learning_rate=1e-4,
    batch_size=32,
    patience=10,
    balanced=False,  # on ../shared's 8 characters it tripled the best validation loss
    seed=42,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--faces-dir", type=Path, default=SETTINGS["faces_dir"], help="root/<character>/*.jpg")
    parser.add_argument("--backbones", nargs="+", default=SETTINGS["backbones"], help="backbones to train and compare")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="faces are resized to this square size")
    parser.add_argument("--head-epochs", type=cli.positive_int, default=SETTINGS["head_epochs"],
                        help="head on frozen features (from scratch: epochs with --finetune-epochs added)")
    parser.add_argument("--finetune-epochs", type=cli.non_negative_int, default=SETTINGS["finetune_epochs"],
                        help="epochs with the top backbone layers unfrozen")
    parser.add_argument("--finetune-layers", type=cli.non_negative_int, default=SETTINGS["finetune_layers"],
                        help="top backbone layers unfrozen (default all: on ../shared's faces the top 60 reached "
                        "test accuracy 0.953, all 0.977)")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="Adam learning rate of the head (and of a from-scratch backbone)")
    parser.add_argument("--finetune-learning-rate", type=cli.positive_float,
                        default=SETTINGS["finetune_learning_rate"], help="Adam learning rate of fine-tuning")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per batch and device")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="early stopping on validation loss")
    parser.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=SETTINGS["balanced"],
                        help="weight the loss so that rare characters count as much as frequent ones (off by default: "
                        "on ../shared's 8 characters it tripled the best validation loss)")
    add_training_flags(parser, seed=SETTINGS["seed"])
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.characters.classifier import (balanced_class_weights, class_report, model_path, plot_confusion,
                                               predict_images, read_face_folders, train_classifier)
    from animeml.core import trainer
    from animeml.core.io import write_csv
    from animeml.core.runs import RunRecord
    from animeml.core.splits import load_or_make_split
    from animeml.core.store import save_model

    record = RunRecord("characters/02_train_characters", cli.settings_of(args), inputs={"faces": args.faces_dir})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    # Split by file (character/name, so the saved split survives a moved folder), stratified by character:
    # one-hot rows in the order of the sorted unique file names, as load_or_make_split expects.
    table = read_face_folders(args.faces_dir)
    table["file"] = table["character"] + "/" + table["path"].map(lambda path: path.rsplit("/", 1)[-1])
    table = table.sort_values("file", ignore_index=True)
    names = sorted(table["character"].unique())
    y = table["character"].map({name: i for i, name in enumerate(names)}).to_numpy()
    table["split"] = load_or_make_split(characters_dir() / "split.csv", table["file"], seed=args.seed,
                                        labels=np.eye(len(names))[y])
    part = {split: (table["path"][table["split"] == split].to_numpy(), y[table["split"] == split])
            for split in ("train", "val", "test")}
    print(f"{len(table)} faces of {len(names)} characters: " +
          ", ".join(f"{split} {len(paths)}" for split, (paths, _) in part.items()))

    test_paths, test_y = part["test"]
    majority = np.bincount(part["train"][1], minlength=len(names)).argmax()
    rows = [{"model": "majority class", "image_size": None, "accuracy": float(np.mean(test_y == majority)),
             "macro_f1": None}]
    class_weight = balanced_class_weights(part["train"][1], len(names)) if args.balanced else None
    for backbone in args.backbones:
        path = model_path("characters", backbone)
        model, _ = train_classifier(
            backbone, len(names), part["train"], part["val"], args.image_size, multi_label=False, strategy=strategy,
            epochs=args.head_epochs, finetune_epochs=args.finetune_epochs, finetune_layers=args.finetune_layers,
            learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
            batch_size=args.batch_size, patience=args.patience, class_weight=class_weight, seed=args.seed,
            backup_dir=path.with_suffix(".backup"), resume=args.resume)
        predicted = predict_images(model, list(test_paths), args.image_size).argmax(axis=1)
        accuracy, per_character = class_report(test_y, predicted, names)
        rows.append({"model": backbone, "image_size": args.image_size, "accuracy": accuracy,
                     "macro_f1": float(per_character["f1"].mean())})
        write_csv(per_character, characters_dir() / f"per_character_{backbone}.csv")
        plot_confusion(test_y, predicted, names, characters_dir() / f"confusion_{backbone}.png",
                       f"{backbone}: test accuracy {accuracy:.3f}")
        save_model(model, path, {"task": "characters", "labels": names, "backbone": backbone,
                                 "image_size": args.image_size, "test_accuracy": accuracy},
                   run=record.as_dict({"test_accuracy": accuracy}))
        print(per_character.round(3).to_string(index=False))

    # Backbones trained in earlier runs on the same split keep their rows.
    metrics = pd.DataFrame(rows)
    if (characters_dir() / "metrics.csv").exists():
        earlier = pd.read_csv(characters_dir() / "metrics.csv")
        metrics = pd.concat([earlier[~earlier["model"].isin(metrics["model"])], metrics], ignore_index=True)
    write_csv(metrics, characters_dir() / "metrics.csv")
    print(metrics.round(3).to_string(index=False))
    record.finish({row["model"]: row["accuracy"] for row in rows})


if __name__ == "__main__":
    cli.run(main)
