"""Detect every anime face in the images of a folder, with the OpenCV LBP cascade (offline) or an Ultralytics
YOLO face model (--detector-weights).

Writes under --out: faces.csv (one row per face: file, face, x, y, w, h, score), boxes/<image>.png (the image
with its boxes drawn) and crops/<image>_<face>.png (a square crop of each face).
"""
import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from animeml.core.cli import run

from animeml.core.io import write_csv
from animeml.core.faces import (BOX_COLUMNS, add_detector_arguments, crop_faces, draw_boxes, list_images, load_rgb,
                           make_detector, save_png)
from animeml.core.paths import SHARED, characters_dir

DEFAULT_IMAGES = SHARED / "data" / "characters" / "illustrations"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=DEFAULT_IMAGES, help="folder of images")
    parser.add_argument("--out", type=Path, default=characters_dir() / "detections", help="output folder")
    parser.add_argument("--margin", type=float, default=0.1, help="crop margin, as a share of the face size")
    add_detector_arguments(parser)
    args = parser.parse_args()

    detect = make_detector(args)
    paths = list_images(args.images)
    rows, found = [], 0
    for path in tqdm(paths, desc="detecting faces"):
        image = load_rgb(path)
        boxes = detect(image)
        found += len(boxes) > 0
        save_png(draw_boxes(image, boxes), args.out / "boxes" / f"{path.stem}.png")
        for face, (box, crop) in enumerate(zip(boxes, crop_faces(image, boxes, args.margin))):
            save_png(crop, args.out / "crops" / f"{path.stem}_{face}.png")
            rows.append({"file": path.name, "face": face, **dict(zip(BOX_COLUMNS, box.tolist()))})
    write_csv(pd.DataFrame(rows, columns=["file", "face", *BOX_COLUMNS]), args.out / "faces.csv")
    print(f"{len(rows)} faces in {len(paths)} images; {found} images ({found / max(len(paths), 1):.1%}) with a face "
          f"-> {args.out}")


if __name__ == "__main__":
    run(main)
