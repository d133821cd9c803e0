"""Tag every image of a folder with a tagger of 03_train_tagger.py: one CSV row per image with its tags and their
confidences, best first. Tags are named as the tagger's thresholds were tuned on validation: on probabilities
averaged with the mirrored image's, at most one tag of each exclusive group (one hair colour, one eye colour) when
step 03 chose that decoding, each tag above its own threshold, or above one --threshold for all.

    python CharacterTagging/tag_images.py --images DIR --out tags.csv [--threshold T] [--txt [--overwrite|--append]]

Every image is checked before the model sees it: one that is not an image, truncated, empty or above 40
megapixels gets a row with status `skipped` and the reason, and the others are tagged. The exit status is 2 only
when no image could be tagged.

--txt also writes a caption file beside each image: its tags, comma-separated (what users of Danbooru taggers
expect), named `<stem>.txt`, or `<name>.txt` (`a.jpg.txt`, `a.png.txt`) where two images share a stem. A caption
file that is already there is left as it is, unless --overwrite (replace it) or --append (add the tags it lacks).
"""
import argparse
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(model="tags_efficientnet_lite0.h5", threshold=None, batch_size=32)
TRAIN_STEP = "CharacterTagging/03_train_tagger.py"


def threshold(text):
    """argparse type: a number >= 0 (above 1 no tag passes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of images to tag")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write: file, tags, confidences, status, reason")
    parser.add_argument("--model", type=Path, help=f"tagger .h5 with its .json sidecar (default: "
                                                   f"data/models/{SETTINGS['model']})")
    parser.add_argument("--threshold", type=threshold, default=SETTINGS["threshold"],
                        help="one threshold for every tag (default: the per-tag thresholds tuned on validation); "
                        "the one-per-group decoding stays")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per model call")
    parser.add_argument("--txt", action="store_true", help="also write a caption file beside each image")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="with --txt: replace existing caption files")
    existing.add_argument("--append", action="store_true",
                          help="with --txt: add the new tags to existing caption files (tags already there are kept)")
    args = cli.parse(parser, argv)
    if (args.overwrite or args.append) and not args.txt:
        parser.error("--overwrite and --append apply to the --txt caption files; add --txt")

    from animeml.characters.classifier import load_model, predict_images
    from animeml.characters.tags import chosen_tags
    from animeml.core import batch
    from animeml.core.faces import list_images
    from animeml.core.images import read_images
    from animeml.core.io import PipelineError
    from animeml.core.paths import models_dir

    batch.check_out(args.out)
    model_file = args.model or models_dir() / SETTINGS["model"]
    model, sidecar = batch.load_model_for(load_model, model_file, TRAIN_STEP, ["labels", "image_size", "thresholds"])
    paths = list_images(args.images)
    if not paths:
        raise PipelineError(f"no image files in {args.images}")

    def load(chunk):  # decoded here, in run_batch's loader thread, while the model tags the chunk before
        return read_images(chunk, sidecar["image_size"])

    def predict(chunk):
        probabilities = predict_images(model, chunk, sidecar["image_size"], args.batch_size,
                                       flip=sidecar.get("flip", False))
        return [{"tags": ", ".join(tag for tag, _ in chosen),
                 "confidences": ", ".join(f"{score:.3f}" for _, score in chosen)}
                for chosen in chosen_tags(probabilities, sidecar, args.threshold)]

    outcomes = batch.run_batch(paths, load, predict, args.batch_size, desc="tagging", load_together=True)
    columns = ["tags", "confidences"]
    if args.txt:
        columns.append("caption_file")
        mode = "overwrite" if args.overwrite else "append" if args.append else "keep"
        for outcome, caption in zip(outcomes, batch.output_paths(paths, ".txt")):
            if outcome.ok:
                outcome.result["caption_file"] = batch.write_text_file(caption, outcome.result["tags"], mode)
    table = batch.outcome_table("file", [path.name for path in paths], outcomes, columns)
    tagged = sum(outcome.ok and bool(outcome.result["tags"]) for outcome in outcomes)
    print(f"{sum(outcome.ok for outcome in outcomes)} images tagged ({tagged} with at least one tag)")
    if args.txt:
        kept = table["caption_file"].astype(str).str.endswith("(kept)").sum()
        print("captions beside the images" + (f"; {kept} existing caption files kept as they were (--overwrite "
                                              f"replaces them, --append adds to them)" if kept else ""))
    batch.finish(table, outcomes, args.out, "images")


if __name__ == "__main__":
    cli.run(main)
