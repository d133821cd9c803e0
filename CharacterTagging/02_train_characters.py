"""Train character classifiers on face crops in the moeimouto-faces layout (`root/<character>/*.jpg|png`) and compare
them on one test split with nearest-neighbour and majority-class baselines.

The split comes from `--split CSV` (`file, character, split` with train/test, files relative to the CSV's folder)
or is made once and kept (stratified by character). Either way crops of one illustration (`<hash>-<n>.jpg`) stay
on one side, and the validation part is carved from train the same way. Faces train at their own size.
`--held-out A B ...` leaves those characters out of training and reports how often their test faces are wrongly
named at the `unknown` threshold chosen on validation faces, next to the accuracy on the others. The threshold keeps
--keep-known of the correctly named validation faces named, or with `--unknown-named RATE` it is chosen so that about
RATE of the faces of characters a model never saw get a name: --calibration-folds more models are trained, each
without some of the known characters, and their validation faces of those characters set the rule.
`--outliers DIR ...` adds faces of other characters (e.g. ../shared/data/tags/images), trained towards a uniform
answer (outlier exposure), so faces the model does not know get a low confidence; a --val-share of them is kept
apart to report how many such faces the threshold still names.

Writes data/models/<set>_<backbone>.h5 (+ .json sidecar: character names, image size, unknown threshold) and under
data/<set>/ (<set>: the face set's folder name, e.g. characters or characters20; `<set>_held_out` with
--held-out): split.csv (when made here), metrics.csv (top-1, top-5, macro-F1 with bootstrap 95% intervals),
per_character_<backbone>.csv, confusion_<backbone>.{csv,png}, and with --held-out openset_<backbone>.csv (at the
--keep-known threshold) and openset_curve_<backbone>.csv (at the thresholds of several validation rules).
"""
import argparse
from pathlib import Path

from animeml.core import cli
from animeml.core.paths import SHARED
from animeml.core.trainer_flags import BACKBONES, TRAIN_FROM_HELP, add_training_flags

SETTINGS = dict(
    faces_dir=SHARED / "data" / "characters" / "faces",
    split=None,
    backbones=["efficientnet_lite0", "small_cnn"],
    baseline_backbones=["efficientnet_lite0", "efficientnet_lite1"],
    image_size=None,  # the faces' own size
    train_from="auto",  # Lites: from the end of stage 5 up, on cached activations (classifier.AUTO_STAGE)
    head_epochs=8,
    finetune_epochs=0,
    finetune_layers=1000,
    learning_rate=1e-3,
    finetune_learning_rate=1e-4,
    batch_size=64,
    patience=3,
    val_share=0.15,
    test_share=0.2,
    members=1,
    held_out=[],
    outliers=[],
    outlier_weight=0.5,
    keep_known=0.95,
    unknown_named=None,  # a target share of unseen faces named; replaces keep_known (calibration_folds more models)
    calibration_folds=4,
    balanced=False,  # on ../shared's 8 characters it tripled the best validation loss
    seed=42,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--faces-dir", type=Path, default=SETTINGS["faces_dir"], help="root/<character>/*.jpg")
    parser.add_argument("--split", type=Path, default=SETTINGS["split"],
                        help="CSV of file,character,split (train/test; files relative to the CSV's folder); "
                        "default: a grouped split made once under data/<set>/split.csv")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=SETTINGS["backbones"],
                        help="backbones to train and compare")
    parser.add_argument("--baseline-backbones", nargs="*", choices=BACKBONES, default=SETTINGS["baseline_backbones"],
                        help="nearest-neighbour baselines on these frozen backbones' features (none: skip)")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="faces are resized to this square size (default: the size of the first face)")
    parser.add_argument("--train-from", default=SETTINGS["train_from"], help=TRAIN_FROM_HELP)
    parser.add_argument("--head-epochs", type=cli.positive_int, default=SETTINGS["head_epochs"],
                        help="epochs of the head (from scratch: epochs with --finetune-epochs added)")
    parser.add_argument("--finetune-epochs", type=cli.non_negative_int, default=SETTINGS["finetune_epochs"],
                        help="epochs with the top backbone layers unfrozen, on images")
    parser.add_argument("--finetune-layers", type=cli.non_negative_int, default=SETTINGS["finetune_layers"],
                        help="top backbone layers unfrozen when fine-tuning")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="Adam learning rate of the head (and of a from-scratch backbone)")
    parser.add_argument("--finetune-learning-rate", type=cli.positive_float,
                        default=SETTINGS["finetune_learning_rate"], help="Adam learning rate of fine-tuning")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per batch and device")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="epochs without a better validation accuracy before a phase stops")
    parser.add_argument("--val-share", type=cli.probability, default=SETTINGS["val_share"],
                        help="share of the training faces carved out for validation (whole illustrations)")
    parser.add_argument("--test-share", type=cli.probability, default=SETTINGS["test_share"],
                        help="share of the faces for testing when the split is made here")
    parser.add_argument("--members", type=cli.positive_int, default=SETTINGS["members"],
                        help="classifiers trained per backbone with seeds --seed, --seed + 1, ...; the saved model "
                        "averages their probabilities")
    parser.add_argument("--held-out", nargs="+", default=SETTINGS["held_out"], metavar="CHARACTER",
                        help="characters left out of training, presented as unknown faces")
    parser.add_argument("--outliers", nargs="+", type=Path, default=SETTINGS["outliers"], metavar="DIR",
                        help="folders of faces of characters outside the set, trained as 'none of them' (outlier "
                        "exposure); must not hold faces of the set or of --held-out")
    parser.add_argument("--outlier-weight", type=cli.positive_float, default=SETTINGS["outlier_weight"],
                        help="weight of the outliers' loss (cross-entropy to the uniform answer)")
    parser.add_argument("--keep-known", type=cli.probability, default=SETTINGS["keep_known"],
                        help="the unknown threshold keeps this share of correctly named validation faces named")
    parser.add_argument("--unknown-named", type=cli.probability, default=SETTINGS["unknown_named"], metavar="RATE",
                        help="instead of --keep-known: the threshold under which about RATE of the validation faces "
                        "of characters left out of calibration models still get a name")
    parser.add_argument("--calibration-folds", type=cli.positive_int, default=SETTINGS["calibration_folds"],
                        help="with --unknown-named: models trained, each without one part of the known characters")
    parser.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=SETTINGS["balanced"],
                        help="weight the loss so that rare characters count as much as frequent ones (off by default: "
                        "on ../shared's 8 characters it tripled the best validation loss)")
    add_training_flags(parser, seed=SETTINGS["seed"])
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.characters.classifier import (average_models, balanced_class_weights, class_report,
                                               face_set, nearest_neighbour_scores, plot_confusion, predict_images,
                                               resolve_train_from, scores_with_intervals, train_classifier)
    from animeml.characters.openset import (character_folds, choose_threshold, keep_for_unknown_rate,
                                            open_set_curve, open_set_report)
    from animeml.core import store, trainer
    from animeml.core.faces import list_images
    from animeml.core.feature_cache import backbone_features
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.paths import data_dir
    from animeml.core.runs import RunRecord

    name = args.faces_dir.parent.name if args.faces_dir.name == "faces" else args.faces_dir.name
    name += "_held_out" if args.held_out else ""
    out = data_dir() / name
    record = RunRecord("characters/02_train_characters", cli.settings_of(args),
                       inputs={"faces": args.faces_dir, **({"split": args.split} if args.split else {})})
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    table, image_size = face_set(args.faces_dir, args.split, out / "split.csv", args.val_share, args.test_share,
                                 args.seed, args.image_size)
    unknown_names = sorted(set(args.held_out) - set(table["character"]))
    if unknown_names:
        raise PipelineError(f"--held-out names no character folder: {', '.join(unknown_names)}")
    held_out = table["character"].isin(args.held_out)
    unknown_paths = table["path"][held_out & (table["split"] == "test")].to_numpy()
    if args.held_out and not len(unknown_paths):
        raise PipelineError(f"--held-out {' '.join(args.held_out)}: none of their faces is in the test split, so "
                            "there is nothing to measure the unknown answer on")
    table = table[~held_out].reset_index(drop=True)
    names = sorted(table["character"].unique())
    y = table["character"].map({character: i for i, character in enumerate(names)}).to_numpy()
    part = {split: (table["path"][table["split"] == split].to_numpy(), y[table["split"] == split])
            for split in ("train", "val", "test")}
    print(f"{len(table)} faces of {len(names)} characters at {image_size} px: " +
          ", ".join(f"{split} {len(paths)}" for split, (paths, _) in part.items()) +
          (f"; {len(unknown_paths)} test faces of {len(args.held_out)} held-out characters" if args.held_out else ""))
    if args.outliers and args.balanced:
        raise PipelineError("--outliers and --balanced cannot be combined (outliers have no class to weigh)")
    outliers = np.array([str(path) for folder in args.outliers for path in list_images(folder)])
    if args.outliers and not len(outliers):
        raise PipelineError(f"no images in --outliers {' '.join(map(str, args.outliers))}")
    outliers = outliers[np.random.default_rng(args.seed).permutation(len(outliers))]
    n_val_outliers = round(args.val_share * len(outliers))
    val_outliers, train_outliers = outliers[:n_val_outliers], outliers[n_val_outliers:]
    if len(outliers):
        print(f"outlier faces: train {len(train_outliers)}, validation {len(val_outliers)}")

    (_, train_y), (val_paths, val_y), (test_paths, test_y) = part["train"], part["val"], part["test"]
    if args.unknown_named is not None:
        try:
            calibration = character_folds(len(names), args.calibration_folds, args.seed)
        except ValueError as error:
            raise PipelineError(f"--calibration-folds: {error}") from None
    majority = np.eye(len(names))[np.bincount(train_y, minlength=len(names)).argmax()]
    rows = [{"model": "majority class", **scores_with_intervals(test_y, np.tile(majority, (len(test_y), 1)))}]
    for backbone in args.baseline_backbones:
        features = {split: backbone_features(backbone, image_size, list(paths)) for split, (paths, _) in part.items()}
        scores = nearest_neighbour_scores(features["train"], train_y, features["test"], len(names))
        rows.append({"model": f"nearest neighbour ({backbone} frozen)", **scores_with_intervals(test_y, scores)})
        print(rows[-1])

    def train(backbone, train, val, n_classes, seed, backup_dir):
        trainer.set_seed(seed, args.deterministic)
        class_weight = balanced_class_weights(train[1], n_classes) if args.balanced else None
        model, _ = train_classifier(
            backbone, n_classes, train, val, image_size, multi_label=False, strategy=strategy,
            epochs=args.head_epochs, finetune_epochs=args.finetune_epochs, finetune_layers=args.finetune_layers,
            learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
            batch_size=args.batch_size, patience=args.patience, class_weight=class_weight, seed=seed,
            backup_dir=backup_dir, resume=args.resume, train_from=resolve_train_from(backbone, args.train_from),
            outliers=train_outliers, outlier_weight=args.outlier_weight)
        return model

    def calibrated_keep(backbone, path):
        """The --keep-known rule that names about --unknown-named of unseen faces, from one model per calibration
        fold, trained without that fold's characters and scored on validation faces of all (keep_for_unknown_rate)."""
        folds = []
        for fold, left_out in enumerate(calibration):
            known = ~np.isin(np.arange(len(names)), left_out)
            new_id = np.cumsum(known) - 1
            train_part, val_part = ((paths[known[y]], new_id[y[known[y]]]) for paths, y in (part["train"], part["val"]))
            print(f"calibration model {fold + 1}/{len(calibration)}, without " +
                  ", ".join(names[i] for i in left_out))
            model = train(backbone, train_part, val_part, int(known.sum()), args.seed,
                          path.with_suffix(f".calibration{fold}"))
            folds.append((predict_images(model, list(val_part[0]), image_size, flip=True), val_part[1],
                          predict_images(model, list(val_paths[~known[val_y]]), image_size, flip=True)))
        try:
            return keep_for_unknown_rate(folds, args.unknown_named)
        except ValueError as error:  # e.g. the left-out characters have no validation faces
            raise PipelineError(f"--unknown-named: {error}") from None

    open_rows = []
    for backbone in args.backbones:
        path = store.model_file(name, backbone)
        members = [train(backbone, part["train"], part["val"], len(names), args.seed + member,
                         path.with_suffix(f".backup{member or ''}")) for member in range(args.members)]
        model = average_models(members, f"{backbone}_ensemble")
        val_probabilities, probabilities = (predict_images(model, list(paths), image_size, flip=True)
                                            for paths in (val_paths, test_paths))
        row = {"model": backbone, **scores_with_intervals(test_y, probabilities)}
        keep_known = args.keep_known if args.unknown_named is None else calibrated_keep(backbone, path)
        threshold = choose_threshold(val_probabilities, val_y, keep_known)
        outliers_named = {}
        if len(val_outliers):
            outlier_confidence = predict_images(model, list(val_outliers), image_size, flip=True).max(axis=1)
            outliers_named = {"val_outliers_named": float(np.mean(outlier_confidence >= threshold))}
        if args.held_out:
            unknown = predict_images(model, list(unknown_paths), image_size, flip=True)
            open_rows.append({"model": backbone, "keep_known": keep_known,
                              **({} if args.unknown_named is None else {"unknown_named_target": args.unknown_named}),
                              **open_set_report(probabilities, test_y, unknown, threshold), **outliers_named})
            write_csv(pd.DataFrame(open_rows[-1:]), out / f"openset_{backbone}.csv")
            print(open_rows[-1])
            curve = open_set_curve(val_probabilities, val_y, probabilities, test_y, unknown)
            write_csv(curve.assign(model=backbone), out / f"openset_curve_{backbone}.csv")
            print("unknown threshold per validation rule (keep_known):")
            print(curve[["keep_known", "threshold", "known_accuracy", "known_named", "unknown_named"]].round(3)
                  .to_string(index=False))
        rows.append(row)
        predicted = probabilities.argmax(axis=1)
        _, per_character = class_report(test_y, predicted, names)
        write_csv(per_character, out / f"per_character_{backbone}.csv")
        confusion = pd.crosstab(pd.Categorical(np.array(names)[test_y], names),
                                pd.Categorical(np.array(names)[predicted], names), rownames=["true"],
                                colnames=["predicted"], dropna=False)
        write_csv(confusion.reset_index(), out / f"confusion_{backbone}.csv")
        plot_confusion(test_y, predicted, names, out / f"confusion_{backbone}.png",
                       f"{backbone}: test top-1 {row['top1']:.3f}")
        metrics = {key: row[key] for key in ("top1", "top5", "macro_f1")}
        save_sidecar = {"task": "characters", "labels": names, "backbone": backbone, "image_size": image_size,
                        "unknown_threshold": threshold, "keep_known": keep_known, "test_accuracy": row["top1"],
                        **outliers_named,
                        **({"held_out": args.held_out} if args.held_out else {})}
        store.save_model(model, path, save_sidecar, run=record.as_dict(metrics))
        print(per_character.round(3).to_string(index=False))
        val_top1 = float(np.mean(val_probabilities.argmax(axis=1) == val_y))
        print(f"{backbone}: validation top-1 {val_top1:.4f}; test " +
              ", ".join(f"{key} {value:.3f}" for key, value in metrics.items()) +
              f"; unknown below confidence {threshold:.3f} (keeps {keep_known:.3f} of the right validation names)" +
              (f", {outliers_named['val_outliers_named']:.3f} of validation outliers named" if outliers_named else ""))

    # Models trained in earlier runs on the same split keep their rows.
    metrics = pd.DataFrame(rows).assign(image_size=image_size, test_faces=len(test_y))
    if (out / "metrics.csv").exists():
        earlier = pd.read_csv(out / "metrics.csv")
        metrics = pd.concat([earlier[~earlier["model"].isin(metrics["model"])], metrics], ignore_index=True)
    write_csv(metrics, out / "metrics.csv")
    print(metrics.round(3).to_string(index=False))
    record.finish({row["model"]: row["top1"] for row in rows})


if __name__ == "__main__":
    cli.run(main)
