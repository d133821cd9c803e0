"""Genre step 02: train one poster -> genres model (sigmoid per genre) and save it with its sidecar JSON.

A pretrained backbone is first frozen (its head trained on cached features), then its top layers are fine-tuned
on augmented posters; a backbone from scratch trains end to end. Early stopping on validation micro-F1. The
thresholds (one per genre, and one shared) are tuned on validation for micro-F1 and stored in the sidecar.

Reads data/genres/labels.csv (step 01); writes data/models/genres_<backbone>_<loss>.h5 and .json (the name
gets `_scratch` for a keras.applications backbone without ImageNet weights, `_catalog` when step 01 added the
catalog covers).

    nice -n 10 python GenreClassification/02_train.py --backbone efficientnet_lite0 --loss bce
    nice -n 10 python GenreClassification/02_train.py --backbone mobilenetv3small --weights none --loss bce
"""
import argparse
import time
from pathlib import Path

from animeml.core.backbones import BACKBONES
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.store import save_model
from animeml.genres import (LOSSES, is_pretrained, model_path, predict_table, read_labels, targets,
                            train, tuned_thresholds)
from animeml.core.multilabel import evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    parser.add_argument("--weights", choices=["imagenet", "none"], default="imagenet",
                        help="'none' trains a keras.applications backbone from scratch (small_cnn always is)")
    parser.add_argument("--loss", choices=LOSSES, default="bce", help="plain binary or binary focal cross-entropy")
    parser.add_argument("--image-size", type=int, default=224,
                        help="poster side in pixels (validation micro-F1 0.555 at 224, 0.522 at 160)")
    parser.add_argument("--frozen-epochs", type=int, default=40, help="head epochs on frozen features")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-layers", type=int, default=30, help="top backbone layers unfrozen")
    parser.add_argument("--scratch-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="model path (default data/models/genres_<backbone>_<loss>.h5)")
    args = parser.parse_args()
    weights = None if args.weights == "none" or args.backbone == "small_cnn" else "imagenet"
    pretrained = is_pretrained(args.backbone, weights)
    table, genres = read_labels()
    catalog_covers = int((table["source"] == "catalog").sum())
    name = args.backbone if pretrained or args.backbone == "small_cnn" else f"{args.backbone}_scratch"
    name += "_catalog" if catalog_covers else ""
    out = args.out or model_path(name, args.loss)
    if not {"train", "val"} <= set(table["split"]):
        raise PipelineError("the labelled table needs train and val rows")
    start = time.time()
    model, history = train(table, genres, args.backbone, args.loss, args.image_size, pretrained,
                           args.frozen_epochs, args.finetune_epochs, args.finetune_layers, args.scratch_epochs,
                           args.batch_size, args.patience, args.seed)
    val_rows = table[table["split"] == "val"]
    y_val = targets(val_rows, genres)
    prob_val = predict_table(model, val_rows["image_path"], args.image_size, args.batch_size)
    per_genre, shared = tuned_thresholds(y_val, prob_val)
    val_f1 = evaluate(y_val, prob_val, per_genre, genres)["micro_f1"]
    sidecar = {"genres": genres, "thresholds": dict(zip(genres, map(float, per_genre))), "global_threshold": shared,
               "backbone": args.backbone, "weights": weights or "none", "model": name, "loss": args.loss,
               "image_size": args.image_size, "catalog_covers": catalog_covers, "val_micro_f1": val_f1, "history": history,
               "train_seconds": round(time.time() - start, 1)}
    save_model(model, out, sidecar)
    print(f"wrote {out}: val micro-F1 {val_f1:.3f} (per-genre thresholds), {sidecar['train_seconds']}s")


if __name__ == "__main__":
    run(main)
