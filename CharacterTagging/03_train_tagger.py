"""Train a multi-label illustration tagger on the N most frequent tags, from a CSV of `file,tags` or Danbooru
metadata JSON (one post per line), with thresholds tuned on validation (one global, one per tag).

Reports micro and macro precision, recall and F1 on the test split (by file, seeded, iteratively stratified)
next to the tag-prior baseline. Writes data/models/tags_<backbone>.h5 (+ .json sidecar: tags, thresholds) and,
under data/tags/: split.csv, metrics.csv, per_tag.csv and pr_curves.png.
"""
import os
from pathlib import Path

from animeml.core import cli
from animeml.core.paths import SHARED, tags_dir
from animeml.core.trainer_flags import add_training_flags

SETTINGS = dict(
    tags_csv=SHARED / "data" / "tags" / "tags.csv",
    top_n=500,
    backbone="efficientnet_lite0",
    image_size=160,  # the 96 px faces are upscaled
    head_epochs=40,
    finetune_epochs=8,
    finetune_layers=1000,
    learning_rate=1e-3,
    finetune_learning_rate=3e-4,
    batch_size=64,
    patience=3,
    seed=42,
)
SUMMARY = ["micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "map"]


def main(argv=None):
    parser = cli.parser(__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tags-csv", type=Path, help=f"CSV of file,tags (default {SETTINGS['tags_csv']})")
    source.add_argument("--danbooru-json", type=Path,
                        help="Danbooru metadata, one JSON post per line (needs --images-dir)")
    parser.add_argument("--images-dir", type=Path, help="image root (default for --tags-csv: the CSV's folder)")
    parser.add_argument("--top-n", type=cli.positive_int, default=SETTINGS["top_n"],
                        help="vocabulary: the N most frequent tags")
    parser.add_argument("--backbone", default=SETTINGS["backbone"], help="image backbone (animeml.core.backbones)")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="input side in pixels (the 96 px faces are upscaled)")
    parser.add_argument("--head-epochs", type=cli.positive_int, default=SETTINGS["head_epochs"],
                        help="head on frozen features (from scratch: epochs with --finetune-epochs added)")
    parser.add_argument("--finetune-epochs", type=cli.non_negative_int, default=SETTINGS["finetune_epochs"],
                        help="epochs with the top backbone layers unfrozen")
    parser.add_argument("--finetune-layers", type=cli.non_negative_int, default=SETTINGS["finetune_layers"],
                        help="top backbone layers unfrozen")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="Adam learning rate of the head (and of a from-scratch backbone)")
    parser.add_argument("--finetune-lr", "--finetune-learning-rate", dest="finetune_learning_rate",
                        type=cli.positive_float, default=SETTINGS["finetune_learning_rate"],
                        help="Adam learning rate of fine-tuning")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per batch and device")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="early stopping on validation loss")
    add_training_flags(parser, seed=SETTINGS["seed"])
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.characters.classifier import model_path, predict_images, train_classifier
    from animeml.characters.tags import read_danbooru_json, read_tags_csv
    from animeml.core import trainer
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.multilabel import (evaluate, label_prior, most_frequent_labels, multi_hot, plot_pr_curves,
                                         tune_global_threshold, tune_thresholds)
    from animeml.core.runs import RunRecord
    from animeml.core.splits import load_or_make_split
    from animeml.core.store import save_model

    record = RunRecord("characters/03_train_tagger", cli.settings_of(args),
                       inputs={"tags": args.danbooru_json or args.tags_csv or SETTINGS["tags_csv"]})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    if args.danbooru_json:
        if not args.images_dir:
            raise PipelineError("--danbooru-json needs --images-dir (the folder of the posts' images)")
        table = read_danbooru_json(args.danbooru_json, args.images_dir)
    else:
        table = read_tags_csv(args.tags_csv or SETTINGS["tags_csv"], args.images_dir)
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

    path = model_path("tags", args.backbone)
    model, _ = train_classifier(
        args.backbone, len(tags), part["train"], part["val"], args.image_size, multi_label=True, strategy=strategy,
        epochs=args.head_epochs, finetune_epochs=args.finetune_epochs, finetune_layers=args.finetune_layers,
        learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
        batch_size=args.batch_size, patience=args.patience, seed=args.seed, backup_dir=path.with_suffix(".backup"),
        resume=args.resume)
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
    summary = {name: {key: result[key] for key in SUMMARY} for name, result in results.items()}
    save_model(model, path, {"task": "tags", "labels": tags, "backbone": args.backbone, "image_size": args.image_size,
                             "global_threshold": global_threshold, "thresholds": [float(t) for t in per_tag],
                             "test_micro_f1": results[metrics["model"][2]]["micro_f1"]},
               run=record.finish(summary))
    print(tag_table.round(3).to_string(index=False, max_rows=40))
    print(metrics.round(3).to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
