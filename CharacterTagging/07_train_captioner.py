"""Train the Keras captioner (an animeml backbone + one Transformer encoder block + a small Transformer decoder,
the keras-io image-captioning structure) from scratch on a caption set, either layout (captions.csv + images/ or
.arrow shards). Uses the set's saved train/validation/test split (made on first use, shared with steps 06 and 08),
keeps the weights of the best validation loss, and reports greedy-decoded BLEU-4 and CIDEr-D on validation.

Writes data/models/captioner_<backbone>.h5 with its .json sidecar (vocabulary, image size, sequence length, run
record) and a run record in data/runs/.
"""
from pathlib import Path

from animeml.core import cli
from animeml.core.trainer_flags import add_training_flags

SETTINGS = dict(
    backbone="efficientnet_lite0",
    image_size=96,
    sequence_length=16,
    embed_dim=256,
    ff_dim=512,
    heads=2,
    epochs=10,
    batch_size=64,
    learning_rate=3e-4,
    patience=3,
    seed=42,
)


def default_source():
    from animeml.characters.captions import captions_dir
    return captions_dir() / "tag_captions"


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--data", type=Path, help="caption set folder (default data/captions/tag_captions, made by "
                                                  "05_make_caption_set.py)")
    parser.add_argument("--out", type=Path, help="model file (default data/models/captioner_<backbone>.h5)")
    parser.add_argument("--backbone", default=SETTINGS["backbone"], help="image backbone (animeml.core.backbones)")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="input side in pixels")
    parser.add_argument("--fine-tune", action="store_true",
                        help="train an ImageNet backbone too (default: frozen; small_cnn always trains)")
    parser.add_argument("--sequence-length", type=cli.positive_int, default=SETTINGS["sequence_length"],
                        help="longest caption in tokens, <start>/<end> included; longer ones are cut")
    parser.add_argument("--embed-dim", type=cli.positive_int, default=SETTINGS["embed_dim"],
                        help="width of the Transformer")
    parser.add_argument("--ff-dim", type=cli.positive_int, default=SETTINGS["ff_dim"],
                        help="width of the decoder's feed-forward layer")
    parser.add_argument("--heads", type=cli.positive_int, default=SETTINGS["heads"], help="attention heads")
    parser.add_argument("--epochs", type=cli.positive_int, default=SETTINGS["epochs"], help="epochs at most")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per batch and device")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="AdamW learning rate")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="stop after this many epochs without a better validation loss")
    add_training_flags(parser, seed=SETTINGS["seed"], resume=False)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    args = cli.parse(parser, argv)

    from animeml.characters.captions import load_caption_splits
    from animeml.core.io import PipelineError
    from animeml.core.paths import models_dir

    source = args.data or default_source()
    out = args.out or models_dir() / f"captioner_{args.backbone}.h5"
    if out.exists() and not args.overwrite:
        raise PipelineError(f"{out} exists; pass --overwrite to replace it")
    if not source.exists():
        raise PipelineError(f"caption set {source} not found: run CharacterTagging/05_make_caption_set.py or pass "
                            f"--data")
    parts = load_caption_splits(source, seed=args.seed)

    from animeml.characters import captioner
    from animeml.characters.caption_metrics import caption_scores
    from animeml.characters.captions import split_path
    from animeml.core import trainer
    from animeml.core.runs import RunRecord
    from animeml.core.store import save_model

    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    record = RunRecord("characters/07_train_captioner", cli.settings_of(args), inputs={"captions": source})
    vocabulary = captioner.build_vocabulary(parts["train"].captions)
    model, history = captioner.train_captioner(
        parts, vocabulary, strategy, backbone=args.backbone, image_size=args.image_size,
        sequence_length=args.sequence_length, embed_dim=args.embed_dim, ff_dim=args.ff_dim, heads=args.heads,
        fine_tune=args.fine_tune, learning_rate=args.learning_rate, batch_size=args.batch_size, epochs=args.epochs,
        patience=args.patience, seed=args.seed)

    has_val = len(parts["val"]) > 0
    check = parts["val"] if has_val else parts["train"]
    predicted = captioner.caption_images(model, vocabulary, check.image_bytes, len(check), args.image_size,
                                         args.batch_size, desc="captioning validation")
    scores = caption_scores(predicted, [[c] for c in check.captions])
    metrics = {"epochs_run": len(history.history["loss"]), "train_loss": float(min(history.history["loss"])),
               **({"val_loss": float(min(history.history["val_loss"]))} if has_val else {}),
               **{f"val_{name}": round(value, 4) for name, value in scores.items()}}
    run = record.finish(metrics)
    sidecar = dict(kind="keras_captioner", backbone=args.backbone, image_size=args.image_size,
                   sequence_length=args.sequence_length, vocabulary=vocabulary, source=str(source),
                   split=str(split_path(source)), metrics=metrics, run=run)
    save_model(model, out, sidecar)
    print(f"captioner -> {out}; validation BLEU-4 {scores['BLEU-4']:.3f}, CIDEr-D {scores['CIDEr-D']:.3f} "
          f"({len(check)} images)")


if __name__ == "__main__":
    cli.run(main)
