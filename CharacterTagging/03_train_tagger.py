"""Train a multi-label illustration tagger on the N most frequent tags of one or more tag sources (CSVs of
`file,tags`, Danbooru metadata JSON with one post per line), with thresholds tuned on validation (one global, one
per tag) on probabilities averaged with the mirrored image's. Where every training image has exactly one tag of a
group sharing a last word (one hair colour, one eye colour), the tagger gives each such group a softmax (unless
--no-group-softmax) and a third decoding names at most the best tag of each group; the decoding kept is the one
with the best micro-F1 on held-out folds of validation.

Validation and test faces come from the first source only (the first --tags-csv, else the first --danbooru-json),
so a run with more sources is measured on the same test split as one without them; the other sources only add
training faces. Reports micro and macro precision, recall and F1 on the test split (by file, seeded, iteratively
stratified) with bootstrap 95% intervals, next to the tag-prior baseline. Writes data/models/tags_<backbone>.h5
(+ .json sidecar: tags, thresholds, decoding, exclusive groups, the groups given a softmax) and, under
data/tags/: split.csv, metrics.csv, per_tag.csv and pr_curves.png.
"""
import argparse
from pathlib import Path

from animeml.core import cli
from animeml.core.paths import SHARED, tags_dir
from animeml.core.trainer_flags import TRAIN_FROM_HELP, add_training_flags

SETTINGS = dict(
    tags_csv=[SHARED / "data" / "tags" / "tags.csv"],
    top_n=500,
    backbone="efficientnet_lite0",
    image_size=160,  # the 96 px faces (and tags_extra's 64 px ones) are upscaled
    # Lite0's stages 4-7 and the head train on cached stage-3 activations of each face and its mirror (2026-11-30,
    # data/tags, chosen on validation loss): 4 epochs, validation loss 0.127, test micro-F1 0.737, 6 min; 8 epochs
    # (best after the 4th) 0.136; at 128 px 0.133. The whole backbone fine-tuned with augmentation
    # (`--train-from none --head-epochs 40 --finetune-epochs 5`) gave 0.702-0.718 in 9-10 min; from stage 5 at
    # 96 px (the characters' recipe) 0.638.
    train_from="stage3",
    head_epochs=4,
    finetune_epochs=0,
    finetune_layers=1000,
    learning_rate=1e-3,
    finetune_learning_rate=3e-4,
    batch_size=64,
    patience=3,
    members=1,
    # A softmax over each group of exclusive tags (one hair, one eye colour) instead of a sigmoid per tag
    # (2026-12-02, data/tags, five seeds each, one global threshold): test micro-F1 0.731-0.746 (mean 0.738) against
    # 0.708-0.739 (mean 0.729) for sigmoids, inside the intervals; three members averaged 0.743 against 0.744.
    group_softmax=True,
    seed=42,
)
SUMMARY = ["micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "map"]


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--tags-csv", type=Path, action="append",
                        help=f"CSV of file,tags, files relative to its folder (repeatable; default "
                        f"{SETTINGS['tags_csv'][0]} when no source is given)")
    parser.add_argument("--danbooru-json", type=Path, action="append",
                        help="Danbooru metadata, one JSON post per line (repeatable; needs --images-dir)")
    parser.add_argument("--images-dir", type=Path, action="append",
                        help="image root of each --danbooru-json in order, or one for all of them")
    parser.add_argument("--top-n", type=cli.positive_int, default=SETTINGS["top_n"],
                        help="vocabulary: the N most frequent tags")
    parser.add_argument("--backbone", default=SETTINGS["backbone"], help="image backbone (animeml.core.backbones)")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="input side in pixels")
    parser.add_argument("--train-from", default=SETTINGS["train_from"], help=TRAIN_FROM_HELP)
    parser.add_argument("--head-epochs", type=cli.positive_int, default=SETTINGS["head_epochs"],
                        help="epochs of the head on frozen features, or with --train-from of the backbone's top "
                        "and the head on cached activations (from scratch: epochs with --finetune-epochs added)")
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
    parser.add_argument("--members", type=cli.positive_int, default=SETTINGS["members"],
                        help="taggers trained with seeds --seed, --seed + 1, ... on the same cached activations; "
                        "the saved model averages their probabilities")
    parser.add_argument("--group-softmax", action=argparse.BooleanOptionalAction, default=SETTINGS["group_softmax"],
                        help="a softmax over each group of tags of which every training image has exactly one "
                        "(one hair colour), instead of a sigmoid per tag")
    add_training_flags(parser, seed=SETTINGS["seed"])
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.characters.classifier import (average_models, model_path, predict_images, resolve_train_from,
                                               train_classifier)
    from animeml.characters.tags import cross_validated_f1, exclusive_groups, one_per_group, read_tag_sources
    from animeml.core import trainer
    from animeml.core.io import write_csv
    from animeml.core.multilabel import (bootstrap_interval, evaluate, label_prior, mean_average_precision,
                                         most_frequent_labels, multi_hot, plot_pr_curves, tune_global_threshold,
                                         tune_thresholds)
    from animeml.core.runs import RunRecord
    from animeml.core.splits import load_or_make_split
    from animeml.core.store import save_model

    tags_csvs = args.tags_csv or ([] if args.danbooru_json else SETTINGS["tags_csv"])
    record = RunRecord("characters/03_train_tagger", cli.settings_of(args),
                       inputs={f"tags_{i}": path for i, path in enumerate([*tags_csvs, *(args.danbooru_json or [])])})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    table = read_tag_sources(tags_csvs, args.danbooru_json or [], args.images_dir or [])
    tags = most_frequent_labels(table["tags"], args.top_n)
    y = multi_hot(table["tags"], tags).astype(np.float32)
    # The split covers the first source only, stratified by its own tags, so it does not change with the others;
    # files sorted as load_or_make_split expects the stratification rows.
    first = table[table["source"] == 0].sort_values("file")
    first_y = multi_hot(first["tags"], most_frequent_labels(first["tags"], args.top_n))
    split_of = dict(zip(first["file"], load_or_make_split(tags_dir() / "split.csv", first["file"], seed=args.seed,
                                                          labels=first_y)))
    table["split"] = [split_of[file] if source == 0 else "train" for file, source in zip(table["file"],
                                                                                         table["source"])]
    part = {split: (table["path"][table["split"] == split].to_numpy(), y[(table["split"] == split).to_numpy()])
            for split in ("train", "val", "test")}
    print(f"{len(table)} images from {table['source'].nunique()} source(s), {len(tags)} tags: " +
          ", ".join(f"{split} {len(paths)}" for split, (paths, _) in part.items()))

    # Groups of which every training image has exactly one tag (exclusive_groups: hair and eye colours).
    groups = exclusive_groups(tags, part["train"][1])
    group_names = [[tags[j] for j in group] for group in groups]
    path = model_path("tags", args.backbone)
    members = [train_classifier(
        args.backbone, len(tags), part["train"], part["val"], args.image_size, multi_label=True, strategy=strategy,
        epochs=args.head_epochs, finetune_epochs=args.finetune_epochs, finetune_layers=args.finetune_layers,
        learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
        batch_size=args.batch_size, patience=args.patience, seed=args.seed + member,
        backup_dir=path.with_suffix(f".backup{member or ''}"), resume=args.resume,
        train_from=resolve_train_from(args.backbone, args.train_from),
        exclusive_groups=groups if args.group_softmax else ())[0] for member in range(args.members)]
    model = average_models(members, f"tags_{args.backbone}_ensemble")
    (val_paths, y_val), (test_paths, y_test) = part["val"], part["test"]
    # Flip-averaged, as tag_images.py predicts with this model, so the thresholds fit what prediction sees.
    prob_val, prob_test = (predict_images(model, list(paths), args.image_size, flip=True)
                           for paths in (val_paths, test_paths))

    # Thresholds and the decoding are chosen on validation; the test split only measures. Each decoding is
    # (validation scores, test scores, how its thresholds are tuned); "one per group" names at most one tag of each
    # exclusive group. The decoding kept is the best on held-out folds of validation (cross_validated_f1), its
    # thresholds tuned on all of it.
    prior_val, prior_test = (label_prior(part["train"][1], len(rows)) for rows in (y_val, y_test))
    decodings = {"tag prior (global threshold)": (prior_val, prior_test, tune_global_threshold),
                 f"{args.backbone} (global threshold)": (prob_val, prob_test, tune_global_threshold),
                 f"{args.backbone} (per-tag thresholds)": (prob_val, prob_test, tune_thresholds)}
    grouped = f"{args.backbone} (one per group, per-tag thresholds)"
    if groups:
        decodings[grouped] = (one_per_group(prob_val, groups), one_per_group(prob_test, groups), tune_thresholds)
    thresholds = {name: np.broadcast_to(tune(y_val, val), len(tags)) for name, (val, _, tune) in decodings.items()}
    val_f1 = {name: cross_validated_f1(y_val, val, tune, seed=args.seed) for name, (val, _, tune) in decodings.items()}
    chosen = max(list(decodings)[1:], key=val_f1.get)
    print(f"chosen on validation: {chosen} (cross-validated micro-F1 {val_f1[chosen]:.3f}; exclusive groups: "
          f"{', '.join(' / '.join(names) for names in group_names) or 'none'})")
    results = {name: evaluate(y_test, test, thresholds[name], tags) for name, (_, test, _) in decodings.items()}
    if groups:  # mAP ranks the probabilities; the losers' -1 of the grouped scores would hide their order
        results[grouped]["map"] = mean_average_precision(y_test, prob_test)
    sources = " + ".join(path.parent.name for path in [*tags_csvs, *(args.danbooru_json or [])])
    metrics = pd.DataFrame([{"model": name, "sources": sources, "test_images": len(y_test),
                             "chosen_on_val": name == chosen, "val_cv_micro_f1": val_f1[name],
                             **{key: result[key] for key in SUMMARY}} for name, result in results.items()])
    intervals = [bootstrap_interval(y_test, test, thresholds[name]) for name, (_, test, _) in decodings.items()]
    metrics.insert(metrics.columns.get_loc("micro_f1") + 1, "micro_f1_low", [low for low, _ in intervals])
    metrics.insert(metrics.columns.get_loc("micro_f1_low") + 1, "micro_f1_high", [high for _, high in intervals])
    tag_table = pd.DataFrame({"tag": tags, "test_support": y_test.sum(axis=0).astype(int),
                              "threshold": thresholds[chosen],
                              **{f"f1 {name}": [results[name][f"f1_{tag}"] for tag in tags]
                                 for name in list(decodings)[1:]}})
    # Runs on other sources (same test split) keep their rows.
    table_of_runs = metrics
    if (tags_dir() / "metrics.csv").exists():
        earlier = pd.read_csv(tags_dir() / "metrics.csv")
        if "sources" in earlier:
            table_of_runs = pd.concat([earlier[earlier["sources"] != sources], metrics], ignore_index=True)
    write_csv(table_of_runs, tags_dir() / "metrics.csv")
    write_csv(tag_table, tags_dir() / "per_tag.csv")
    plot_pr_curves(y_test, prob_test, tags[:25], tags_dir() / "pr_curves.png", f"{args.backbone} tagger (test)")
    summary = {name: {key: result[key] for key in SUMMARY} for name, result in results.items()}
    save_model(model, path, {"task": "tags", "labels": tags, "backbone": args.backbone, "image_size": args.image_size,
                             "flip": True, "decoding": chosen, "thresholds": [float(t) for t in thresholds[chosen]],
                             "exclusive_groups": group_names if chosen == grouped else [],
                             "group_softmax": group_names if args.group_softmax else [],
                             "test_micro_f1": results[chosen]["micro_f1"]},
               run=record.finish(summary))
    print(tag_table.round(3).to_string(index=False, max_rows=40))
    print(table_of_runs.round(3).to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
