"""Tag every image of a folder with a tagger of 03_train_tagger.py: one CSV row per image with its tags and their
confidences, best first. Tags use the per-tag thresholds tuned on validation, or one --threshold for all.

--txt also writes `<image>.txt` beside each image: its tags, comma-separated (the caption files that users of
Danbooru taggers expect).
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from animeml.characters.classifier import load_model, model_path, predict_images
from animeml.core.io import atomic_path, write_csv
from animeml.core.cli import run
from animeml.core.faces import list_images


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument("--out", type=Path, required=True, help="CSV: file, tags, confidences")
    parser.add_argument("--model", default=model_path("tags", "efficientnet_lite0"),
                        help="tagger (.h5 with its .json sidecar)")
    parser.add_argument("--threshold", type=float, help="one threshold for every tag (default: per-tag, tuned)")
    parser.add_argument("--txt", action="store_true", help="also write <image>.txt caption files")
    args = parser.parse_args()

    model, sidecar = load_model(args.model)
    tags = np.asarray(sidecar["labels"])
    thresholds = np.broadcast_to(sidecar["thresholds"] if args.threshold is None else args.threshold, tags.shape)
    paths = list_images(args.images)
    probabilities = predict_images(model, paths, sidecar["image_size"])
    rows = []
    for path, probability in zip(paths, probabilities):
        chosen = [j for j in np.argsort(-probability) if probability[j] >= thresholds[j]]
        caption = ", ".join(tags[chosen])
        rows.append({"file": path.name, "tags": caption,
                     "confidences": ", ".join(f"{probability[j]:.3f}" for j in chosen)})
        if args.txt:
            with atomic_path(path.with_suffix(".txt")) as tmp:
                tmp.write_text(caption + "\n")
    write_csv(pd.DataFrame(rows, columns=["file", "tags", "confidences"]), args.out)
    tagged = sum(bool(row["tags"]) for row in rows)
    print(f"{len(rows)} images tagged ({tagged} with at least one tag) -> {args.out}"
          + (", captions in <image>.txt" if args.txt else ""))


if __name__ == "__main__":
    run(main)
