"""Find and name the characters in a folder of images: detect anime faces, classify each face crop with a model of
02_train_characters.py, draw each box with its name, and write one CSV row per face.

A face whose softmax confidence is below --unknown-threshold is named "unknown" (the `best_character` column
keeps the best guess). With --labels (a CSV of file,character such as ../shared/data/characters/labels.csv) it
also reports how often each image's labelled character is among the names found.
"""
import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from animeml.characters.classifier import character_hit_rates, load_model, model_path, name_faces, read_image_labels
from animeml.core.cli import run
from animeml.core.io import write_csv
from animeml.core.faces import (BOX_COLUMNS, add_detector_arguments, draw_boxes, list_images, load_rgb, make_detector,
                           save_png)

COLUMNS = ["file", "face", *BOX_COLUMNS, "character", "confidence", "best_character"]
# Cascade settings chosen by 04_tune_detector.py on the tuning part of ../shared's labelled illustrations (the
# cascade's own defaults, made for larger faces, found the character in 54.7% of the test part, these in 71.1%).
ILLUSTRATION_DETECTOR = {"scale_factor": 1.05, "min_neighbors": 3, "min_size": 24, "upscale": 2.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument("--out", type=Path, required=True, help="CSV, one row per face")
    parser.add_argument("--model", default=model_path("characters", "efficientnet_lite0"),
                        help="character model (.h5 with its .json sidecar)")
    parser.add_argument("--unknown-threshold", type=float, default=0.5, help="lowest softmax to name a face")
    parser.add_argument("--drawn-dir", type=Path, help="images with named boxes (default: <out>_boxes/)")
    parser.add_argument("--labels", help="CSV of file,character to measure how often the character is found")
    parser.add_argument("--margin", type=float, default=0.1, help="crop margin, as a share of the face size")
    parser.add_argument("--flip-tta", action="store_true", help="average each face with its mirror image")
    add_detector_arguments(parser, **ILLUSTRATION_DETECTOR)
    args = parser.parse_args()

    model, sidecar = load_model(args.model)
    names, image_size = sidecar["labels"], sidecar["image_size"]
    detect = make_detector(args)
    drawn_dir = args.drawn_dir or args.out.with_name(f"{args.out.stem}_boxes")
    rows = []
    for path in tqdm(list_images(args.images), desc="identifying characters"):
        image = load_rgb(path)
        boxes = detect(image)
        best_names, confidences = name_faces(model, names, image, boxes, image_size, args.margin, args.flip_tta)
        captions = []
        for face, (box, best, confidence) in enumerate(zip(boxes, best_names, confidences)):
            character = best if confidence >= args.unknown_threshold else "unknown"
            captions.append(f"{character} {confidence:.2f}")
            rows.append({"file": path.name, "face": face, **dict(zip(BOX_COLUMNS, box.tolist())),
                         "character": character, "confidence": float(confidence), "best_character": best})
        save_png(draw_boxes(image, boxes, captions), drawn_dir / f"{path.stem}.png")
    faces = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(faces, args.out)
    print(f"{len(faces)} faces in {faces['file'].nunique()} images -> {args.out}, boxes drawn in {drawn_dir}")

    if args.labels:
        rates = character_hit_rates(faces, read_image_labels(args.labels), args.unknown_threshold)
        print(f"{rates['images']} labelled images: a face detected in {rates['detection_recall']:.1%}; labelled "
              f"character found in {rates['character_found']:.1%} (every face named), "
              f"{rates['character_found_with_unknown']:.1%} (faces under {args.unknown_threshold} unknown)")


if __name__ == "__main__":
    run(main)
