"""Detect every anime face in the images of a folder, with the OpenCV LBP cascade (offline) or an Ultralytics
YOLO face model (--detector-weights).

Writes under --out: faces.csv (one row per face: file, face, x, y, w, h, score), boxes/<image>.png (the image
with its boxes drawn) and crops/<image>_<face>.png (a square crop of each face).
"""
from pathlib import Path

from animeml.core import cli
from animeml.core.faces import DEFAULT_CASCADE, add_detector_arguments
from animeml.core.paths import SHARED, characters_dir

SETTINGS = dict(
    images=SHARED / "data" / "characters" / "illustrations",
    margin=0.1,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, default=SETTINGS["images"], help="folder of images")
    parser.add_argument("--out", type=Path, default=characters_dir() / "detections", help="output folder")
    parser.add_argument("--margin", type=cli.positive_float, default=SETTINGS["margin"],
                        help="crop margin, as a share of the face size")
    add_detector_arguments(parser)
    args = cli.parse(parser, argv)

    import pandas as pd
    from tqdm import tqdm

    from animeml.core.faces import (BOX_COLUMNS, crop_faces, detector_settings, draw_boxes, list_images, load_rgb,
                                    make_detector, save_png)
    from animeml.core.io import write_csv
    from animeml.core.runs import RunRecord, fingerprint_files

    image_paths = list_images(args.images)
    record = RunRecord("characters/01_detect_faces", cli.settings_of(args),
                       inputs={"detector": args.detector_weights or args.cascade or DEFAULT_CASCADE})
    record.add_input("images", fingerprint_files(image_paths))
    detect = make_detector(**detector_settings(args))
    rows, found = [], 0
    for path in tqdm(image_paths, desc="detecting faces"):
        image = load_rgb(path)
        boxes = detect(image)
        found += len(boxes) > 0
        save_png(draw_boxes(image, boxes), args.out / "boxes" / f"{path.stem}.png")
        for face, (box, crop) in enumerate(zip(boxes, crop_faces(image, boxes, args.margin))):
            save_png(crop, args.out / "crops" / f"{path.stem}_{face}.png")
            rows.append({"file": path.name, "face": face, **dict(zip(BOX_COLUMNS, box.tolist()))})
    write_csv(pd.DataFrame(rows, columns=["file", "face", *BOX_COLUMNS]), args.out / "faces.csv")
    share = found / max(len(image_paths), 1)
    record.finish({"images": len(image_paths), "faces": len(rows), "images_with_a_face": found,
                   "share_with_a_face": share})
    print(f"{len(rows)} faces in {len(image_paths)} images; {found} images ({share:.1%}) with a face -> {args.out}")


if __name__ == "__main__":
    cli.run(main)
