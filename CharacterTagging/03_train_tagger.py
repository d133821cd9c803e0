"""Train a multi-label illustration tagger on the N most frequent tags, from a CSV of `file,tags` or Danbooru
metadata JSON (one post per line), with thresholds tuned on validation (one global, one per tag).

Reports micro and macro precision, recall and F1 on the test split (by file, seeded, iteratively stratified)
next to the tag-prior baseline. Writes data/models/tags_<backbone>.h5 (+ .json sidecar: tags, thresholds) and,
under data/tags/: split.csv, metrics.csv, per_tag.csv and pr_curves.png.
"""
import argparse
import os

import numpy as np
import pandas as pd

from animeml.characters.classifier import SCRATCH_BACKBONES, build_classifier, model_path, predict_images, train_classifier
from animeml.core.io import PipelineError, write_csv
from animeml.core.cli import run
from animeml.core.store import save_model
from animeml.core.multilabel import (evaluate, label_prior, most_frequent_labels, multi_hot, plot_pr_curves,
                                tune_global_threshold, tune_thresholds)
from animeml.core.paths import SHARED, tags_dir
from animeml.core.splits import load_or_make_split
from animeml.characters.tags import read_danbooru_json, read_tags_csv

DEFAULT_TAGS_CSV = SHARED / "data" / "tags" / "tags.csv"
SUMMARY = ["micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "map"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tags-csv", help=f"CSV of file,tags (default {DEFAULT_TAGS_CSV})")
    source.add_argument("--danbooru-json", help="Danbooru metadata, one JSON post per line (needs --images-dir)")
    parser.add_argument("--images-dir", help="image root (default for --tags-csv: the CSV's folder)")
    parser.add_argument("--top-n", type=int, default=500, help="vocabulary: the N most frequent tags")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=160, help="input side in pixels (the 96 px faces are upscaled)")
    parser.add_argument("--head-epochs", type=int, default=40, help="head on frozen features (or scratch epochs)")
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--finetune-layers", type=int, default=1000, help="top backbone layers unfrozen")
    parser.add_argument("--finetune-lr", type=float, default=3e-4, help="Adam learning rate of fine-tuning")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=3, help="early stopping on validation loss")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    if args.danbooru_json:
        if not args.images_dir:
            raise PipelineError("--danbooru-json needs --images-dir (the folder of the posts' images)")
        table = read_danbooru_json(args.danbooru_json, args.images_dir)
    else:
        table = read_tags_csv(args.tags_csv or DEFAULT_TAGS_CSV, args.images_dir)
    # Group by the path under the image root (so the saved split survives a moved folder), sorted as
    # load_or_make_split expects the stratification rows.
    root = os.path.commonpath(list(table["path"])) if len(table) > 1 else os.path.dirname(table["path"][0])
    table["file"] = table["path"].map(lambda path: os.path.relpath(path, root))
    table = table.drop_duplicates("file").sort_values("file", ignore_index=True)
    tags = most_frequent_labels(table["tags"], args.top_n)
    y = multi_hot(table["tags"], tags).astype(np.float32)
    # Grouped by file name, so the saved split survives a moved image folder.
    table["split"] = load_or_make_split(tags_dir() / "split.csv", table["file"], seed=args.seed, labels=y)
    part = {split: (table["path"][table["split"] == split].to_numpy(), y[table["split"] == split])
            for split in ("train", "val", "test")}
    print(f"{len(table)} images, {len(tags)} tags: " +
          ", ".join(f"{split} {len(paths)}" for split, (paths, _) in part.items()))

    from_scratch = args.backbone in SCRATCH_BACKBONES
    model = build_classifier(args.backbone, len(tags), args.image_size, multi_label=True)
    train_classifier(model, part["train"], part["val"], args.image_size, multi_label=True, from_scratch=from_scratch,
                     head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs,
                     finetune_layers=args.finetune_layers, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
                     patience=args.patience, seed=args.seed)
    (val_paths, y_val), (test_paths, y_test) = part["val"], part["test"]
    prob_val, prob_test = (predict_images(model, list(paths), args.image_size) for paths in (val_paths, test_paths))

    # Every threshold is tuned on validation; the test split only measures.
    prior_val, prior_test = (label_prior(part["train"][1], len(rows)) for rows in (y_val, y_test))
    prior_threshold = tune_global_threshold(y_val, prior_val)
    global_threshold = tune_global_threshold(y_val, prob_val)
    per_tag = tune_thresholds(y_val, prob_val)
    results = {"tag prior (global threshold)": evaluate(y_test, prior_test, prior_threshold, tags),
               f"{args.backbone} (global threshold {global_threshold:.2f})":
                   evaluate(y_test, prob_test, global_threshold, tags),
               f"{args.backbone} (per-tag thresholds)": evaluate(y_test, prob_test, per_tag, tags)}
    metrics = pd.DataFrame([{"model": name, **{key: result[key] for key in SUMMARY}}
                            for name, result in results.items()])
    tag_table = pd.DataFrame({"tag": tags, "test_support": y_test.sum(axis=0).astype(int), "threshold": per_tag,
                              "f1_global": [results[metrics["model"][1]][f"f1_{tag}"] for tag in tags],
                              "f1_per_tag": [results[metrics["model"][2]][f"f1_{tag}"] for tag in tags]})
    write_csv(metrics, tags_dir() / "metrics.csv")
    write_csv(tag_table, tags_dir() / "per_tag.csv")
    plot_pr_curves(y_test, prob_test, tags[:25], tags_dir() / "pr_curves.png", f"{args.backbone} tagger (test)")
    save_model(model, model_path("tags", args.backbone),
               {"task": "tags", "labels": tags, "backbone": args.backbone, "image_size": args.image_size,
                "global_threshold": global_threshold, "thresholds": [float(t) for t in per_tag],
                "test_micro_f1": results[metrics["model"][2]]["micro_f1"]})
    print(tag_table.round(3).to_string(index=False, max_rows=40))
    print(metrics.round(3).to_string(index=False))


if __name__ == "__main__":
    run(main)
