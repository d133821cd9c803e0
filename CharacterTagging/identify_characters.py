"""Find and name the characters in a folder of images: detect anime faces, classify each face crop with a model of
02_train_characters.py, draw each box with its name, and write one CSV row per face.

    python CharacterTagging/identify_characters.py --images DIR --out faces.csv [--labels labels.csv]

Writes --out (one row per face; boxes in the pixels of the image file), `<out>_images.csv` (one row per image:
faces found, the drawn image, status ok/skipped and the reason) and the images with named boxes in --drawn-dir
(default `<out>_boxes/`; `a.png`, or `a.jpg.png` and `a.png.png` where two images share a stem). Every image is
checked first: one that is not an image, truncated or empty is skipped with its reason, and images above 4
megapixels are reduced before detection (the cascade enlarges them --upscale times more), so the detector never
needs more than about 16 megapixels. The exit status is 2 only when no image could be read.

A face whose softmax confidence is below --unknown-threshold is named "unknown" (the `best_character` column
keeps the best guess). With --labels (a CSV of file,character such as ../shared/data/characters/labels.csv) it
also reports how often each image's labelled character is among the names found.

With --crops the images are face crops already (e.g. a held-out crop set): no detection, no boxes, and --out has
one row per image with its name (or "unknown"), confidence, best guess and the runner-up with its confidence.
"""
from pathlib import Path

from animeml.core import cli
from animeml.core.faces import add_detector_arguments

SETTINGS = dict(model="characters_efficientnet_lite0.h5", unknown_threshold=0.5, margin=0.1)
TRAIN_STEP = "CharacterTagging/02_train_characters.py"
# Cascade settings chosen by 04_tune_detector.py on the tuning part of ../shared's labelled illustrations (the
# cascade's own defaults, made for larger faces, found the character in 54.7% of the test part, these in 71.1%).
ILLUSTRATION_DETECTOR = {"scale_factor": 1.05, "min_neighbors": 3, "min_size": 24, "upscale": 2.0}
DETECTOR_PIXELS = 16_000_000  # the most pixels the detector sees (after --upscale)
BOX_COLUMNS = ["x", "y", "w", "h", "score"]
COLUMNS = ["file", "face", *BOX_COLUMNS, "character", "confidence", "best_character"]
CROP_COLUMNS = ["character", "confidence", "best_character", "runner_up", "runner_up_confidence"]


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write, one row per face")
    parser.add_argument("--model", type=Path, help=f"character model .h5 with its .json sidecar (default: "
                                                   f"data/models/{SETTINGS['model']})")
    parser.add_argument("--unknown-threshold", type=cli.probability, default=SETTINGS["unknown_threshold"],
                        help="lowest softmax confidence to name a face")
    parser.add_argument("--drawn-dir", type=Path, help="folder for the images with named boxes (default: <out>_boxes/)")
    parser.add_argument("--labels", type=Path, help="CSV of file,character to measure how often the character is found")
    parser.add_argument("--margin", type=float, default=SETTINGS["margin"],
                        help="crop margin, as a share of the face size (>= 0)")
    parser.add_argument("--flip-tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--crops", action="store_true",
                        help="the images are face crops: name each whole image (no detection), one row per image")
    add_detector_arguments(parser, **ILLUSTRATION_DETECTOR)
    args = cli.parse(parser, argv)
    problems = [flag for flag, bad in [("--scale-factor must be > 1", not args.scale_factor > 1),
                                       ("--min-neighbors must be >= 0", args.min_neighbors < 0),
                                       ("--min-size must be >= 1", args.min_size < 1),
                                       ("--upscale must be > 0", not 0 < args.upscale < float("inf")),
                                       ("--conf must be in [0, 1]", not 0 <= args.conf <= 1),
                                       ("--margin must be >= 0", not 0 <= args.margin < float("inf"))] if bad]
    if problems:
        parser.error("; ".join(problems))
    drawn_dir = args.drawn_dir or args.out.with_name(f"{args.out.stem}_boxes")
    if drawn_dir.resolve() == args.images.resolve():
        parser.error("--drawn-dir must not be the --images folder (its images would be replaced)")

    import pandas as pd
    from PIL import Image

    from animeml.characters.classifier import (character_hit_rates, load_model, name_faces, predict_images,
                                               read_image_labels)
    from animeml.core import batch
    from animeml.core.faces import detector_settings, draw_boxes, list_images, make_detector, save_png
    from animeml.core.imagefile import read_rgb
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.paths import models_dir

    batch.check_out(args.out)
    model_file = args.model or models_dir() / SETTINGS["model"]
    model, sidecar = batch.load_model_for(load_model, model_file, TRAIN_STEP, ["labels", "image_size"])
    names, image_size = sidecar["labels"], sidecar["image_size"]
    try:
        labels = read_image_labels(args.labels) if args.labels else None
    except (OSError, ValueError) as err:  # pandas' errors for an empty, binary or malformed CSV are ValueErrors
        raise PipelineError(f"cannot read --labels {args.labels}: {str(err).splitlines()[0]}") from None
    detect = make_detector(**detector_settings(args))
    paths = list_images(args.images)
    if not paths:
        raise PipelineError(f"no image files in {args.images}")
    read_pixels = max(1, int(DETECTOR_PIXELS / max(args.upscale, 1.0) ** 2))
    if args.crops:
        def name_crops(images):
            probabilities = predict_images(model, images, image_size, flip=args.flip_tta)
            order = probabilities.argsort(axis=1)[:, ::-1]
            rows = []
            for row, (best, second) in zip(probabilities, order[:, :2]):
                character = names[best] if row[best] >= args.unknown_threshold else "unknown"
                rows.append({"character": character, "confidence": float(row[best]), "best_character": names[best],
                             "runner_up": names[second], "runner_up_confidence": float(row[second])})
            return rows

        outcomes = batch.run_batch(paths, lambda path: read_rgb(path, downsize=True), name_crops, chunk_size=64,
                                   desc="naming face crops")
        crops = batch.outcome_table("file", [path.name for path in paths], outcomes, CROP_COLUMNS)
        if labels is not None:
            labelled = crops[crops["file"].isin(labels) & (crops["status"] == "ok")]
            right = (labelled["best_character"] == labelled["file"].map(labels)).mean()
            print(f"{len(labelled)} labelled crops: best guess right for {right:.1%}")
        batch.finish(crops, outcomes, args.out, "images")
        return

    def load(item):
        path, drawn = item
        image = read_rgb(path, read_pixels, downsize=True)
        with Image.open(path) as header:  # the file's own size: boxes are reported in its pixels
            scale = header.size[0] / image.shape[1]
        return path, drawn, image, scale

    def identify(loaded):
        path, drawn, image, scale = loaded[0]
        boxes = detect(image)
        best_names, confidences = name_faces(model, names, image, boxes, image_size, args.margin, args.flip_tta)
        faces, captions = [], []
        for face, (box, best, confidence) in enumerate(zip(boxes, best_names, confidences)):
            character = best if confidence >= args.unknown_threshold else "unknown"
            captions.append(f"{character} {confidence:.2f}")
            position = [round(float(v) * scale, 1) for v in box[:4]]
            faces.append({"file": path.name, "face": face, **dict(zip(BOX_COLUMNS, [*position, float(box[4])])),
                          "character": character, "confidence": float(confidence), "best_character": best})
        save_png(draw_boxes(image, boxes, captions), drawn)
        return [{"faces": faces, "drawn_image": drawn.name}]

    items = list(zip(paths, batch.output_paths(paths, ".png", drawn_dir)))
    outcomes = batch.run_batch(items, load, identify, chunk_size=1, desc="identifying characters")
    faces = pd.DataFrame([face for o in outcomes if o.ok for face in o.result["faces"]], columns=COLUMNS)
    for outcome in outcomes:
        if outcome.ok:
            outcome.result["faces"] = len(outcome.result["faces"])  # the per-image table counts them
    images = batch.outcome_table("file", [path.name for path in paths], outcomes, ["faces", "drawn_image"])
    images["faces"] = images["faces"].astype("Int64")
    write_csv(faces, args.out)
    print(f"{len(faces)} faces in {faces['file'].nunique()} images -> {args.out}, boxes drawn in {drawn_dir}")

    if labels is not None:
        rates = character_hit_rates(faces, labels, args.unknown_threshold)
        print(f"{rates['images']} labelled images: a face detected in {rates['detection_recall']:.1%}; labelled "
              f"character found in {rates['character_found']:.1%} (every face named), "
              f"{rates['character_found_with_unknown']:.1%} (faces under {args.unknown_threshold} unknown)")
    batch.finish(images, outcomes, args.out.with_name(f"{args.out.stem}_images.csv"), "images")


if __name__ == "__main__":
    cli.run(main)
