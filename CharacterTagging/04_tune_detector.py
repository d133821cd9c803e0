"""Choose the face-detector settings of identify_characters.py without measuring on the images that chose them.

The labelled illustrations are split once (seeded, stratified by character, saved) into a tuning part and a test
part. Every cascade setting of the grid is scored on the tuning part by how often the image's labelled character
is among the names found on its faces; then the best setting, and the cascade's default, are measured once on the
test part, with a bootstrap 95% interval.

    python CharacterTagging/04_tune_detector.py
Reads ../shared/data/characters/{illustrations/, labels.csv} and the character model of step 02.
Writes data/characters/illustration_split.csv and data/characters/detector_settings.csv (every setting on the
tuning part; the chosen one and the default also on the test part), and prints the flags to pass to
identify_characters.py.
"""
import itertools
from pathlib import Path

from animeml.core import cli, store
from animeml.core.faces import MIN_NEIGHBORS, SCALE_FACTOR
from animeml.core.paths import SHARED, characters_dir

SETTINGS = dict(
    images=SHARED / "data" / "characters" / "illustrations",
    labels=SHARED / "data" / "characters" / "labels.csv",
    model=store.model_file("characters", "efficientnet_lite0"),
    seed=42,
)
TRAIN_STEP = "CharacterTagging/02_train_characters.py"
GRID = {"scale_factor": (1.05, SCALE_FACTOR), "min_neighbors": (3, MIN_NEIGHBORS), "min_size": (24, 32),
        "upscale": (1.0, 2.0)}
CASCADE_DEFAULT = {"scale_factor": SCALE_FACTOR, "min_neighbors": MIN_NEIGHBORS, "min_size": 24, "upscale": 1.0}
TEST_SHARE = 0.6  # most images measure; the other 40% (about 300 of 756) rank the settings
UNKNOWN_THRESHOLD = 0.5  # as identify_characters.py; the ranking counts every face by its best guess


def face_namer(model, names, image_size):
    """name(file, image, boxes) -> best names of the boxes; a box already named (same file, same box) is not
    classified again, since neighbouring settings of the grid find many of the same faces."""
    from animeml.characters.classifier import name_faces

    cache = {}

    def name(file, image, boxes):
        keys = [(file, *map(float, box[:4])) for box in boxes]
        new = [i for i, key in enumerate(keys) if key not in cache]
        if new:
            best, confidence = name_faces(model, names, image, boxes[new], image_size)
            cache.update(zip([keys[i] for i in new], zip(best, confidence)))
        return [cache[key] for key in keys]

    return name


def detect_all(images, grid, cascade, desc):
    """[{file: boxes} for each setting of the grid] over the images {file: RGB array}; the cascade runs once per
    scale factor and upscale (detect_faces_grid)."""
    from tqdm import tqdm

    from animeml.core.faces import detect_faces_grid

    found = [{} for _ in grid]
    for file, image in tqdm(images.items(), desc=desc, unit="image"):
        for boxes_of, boxes in zip(found, detect_faces_grid(image, cascade, grid)):
            boxes_of[file] = boxes
    return found


def hits(images, labels, boxes_of, name):
    """character_hits of one cascade setting, whose boxes are `boxes_of` {file: boxes}, over the images."""
    import pandas as pd

    from animeml.characters.classifier import character_hits

    faces = [{"file": file, "best_character": best, "confidence": confidence}
             for file, image in images.items() for best, confidence in name(file, image, boxes_of[file])]
    faces = pd.DataFrame(faces, columns=["file", "best_character", "confidence"])
    return character_hits(faces, {file: labels[file] for file in images}, UNKNOWN_THRESHOLD)


def interval(found, seed, level=0.95):
    """Percentile bootstrap interval of the share of images with the character found."""
    import numpy as np

    from animeml.core.metrics import bootstrap_indices

    shares = [found[index].mean() for index in bootstrap_indices(len(found), seed=seed)]
    return tuple(np.quantile(shares, [(1 - level) / 2, (1 + level) / 2]))


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, default=SETTINGS["images"], help="folder of labelled illustrations")
    parser.add_argument("--labels", type=Path, default=SETTINGS["labels"], help="CSV of file,character[,kind]")
    parser.add_argument("--model", type=Path, default=SETTINGS["model"],
                        help="character model of step 02 (.h5 with its .json sidecar)")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"],
                        help="seeds the tuning/test split and the bootstrap")
    args = cli.parse(parser, argv)

    import numpy as np
    import pandas as pd

    from animeml.characters.classifier import load_model, read_image_labels
    from animeml.core.batch import load_model_for
    from animeml.core.faces import load_cascade
    from animeml.core.imagefile import ImageUnreadable, read_rgb
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.runs import RunRecord, fingerprint_files
    from animeml.core.splits import load_or_make_split

    images, labels = {}, {}
    for file, character in read_image_labels(args.labels).items():
        if (args.images / file).exists():
            try:  # an unreadable image is left out with its reason, as identify_characters.py does
                images[file], labels[file] = read_rgb(args.images / file, downsize=True), character
            except ImageUnreadable as err:
                print(f"skipped: {err}")
    if len(labels) < 10:
        raise PipelineError(f"{args.labels}: only {len(labels)} readable labelled images found in {args.images}, "
                            "need 10")
    files = sorted(labels)
    record = RunRecord("characters/04_tune_detector", cli.settings_of(args),
                       inputs={"labels": args.labels, "model": args.model})
    record.add_input("images", fingerprint_files([args.images / file for file in files]))
    characters = sorted(set(labels.values()))
    one_hot = np.array([[labels[file] == character for character in characters] for file in files])
    split = load_or_make_split(characters_dir() / "illustration_split.csv", files, val=0.0, test=TEST_SHARE,
                               seed=args.seed, labels=one_hot)
    parts = {part: {file: images[file] for file, where in zip(files, split) if where == role}
             for part, role in (("tune", "train"), ("test", "test"))}
    print(f"{len(files)} labelled images: {len(parts['tune'])} tune the detector, {len(parts['test'])} measure it")

    model, sidecar = load_model_for(load_model, args.model, TRAIN_STEP, ["labels", "image_size"])
    name = face_namer(model, sidecar["labels"], sidecar["image_size"])
    cascade = load_cascade()
    grid = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    rows = []
    for settings, boxes_of in zip(grid, detect_all(parts["tune"], grid, cascade, "faces on the tuning part")):
        tuned = hits(parts["tune"], labels, boxes_of, name)
        rows.append({**settings, "tune_detection_recall": tuned["with_face"].mean(),
                     "tune_character_found": tuned["found"].mean()})
    table = pd.DataFrame(rows)
    best = table["tune_character_found"].idxmax()  # ties: the first, i.e. the smallest settings of the grid
    chosen = {key: table.at[best, key].item() for key in GRID}

    roles = {"chosen": chosen} if chosen == CASCADE_DEFAULT else {"chosen": chosen, "default": CASCADE_DEFAULT}
    tested_boxes = detect_all(parts["test"], list(roles.values()), cascade, "faces on the test part")
    for (role, settings), boxes_of in zip(roles.items(), tested_boxes):
        tested = hits(parts["test"], labels, boxes_of, name)
        found = tested["found"].to_numpy()
        low, high = interval(found, args.seed)
        row = (table[list(GRID)] == pd.Series(settings)).all(axis=1)
        table.loc[row, ["role", "test_images", "test_detection_recall", "test_character_found", "test_found_low",
                        "test_found_high"]] = [role, len(found), tested["with_face"].mean(), found.mean(), low, high]
        print(f"{role} {settings}: character found in {found.sum()} of {len(found)} test images "
              f"({found.mean():.1%}, 95% interval {low:.1%}-{high:.1%}), a face in {tested['with_face'].mean():.1%}")
    write_csv(table, characters_dir() / "detector_settings.csv")
    measured = table.dropna(subset=["role"]).set_index("role")
    record.finish({"chosen": chosen, "tune_character_found": float(table.at[best, "tune_character_found"]),
                   "test_character_found": measured["test_character_found"].to_dict(),
                   "test_found_interval": measured[["test_found_low", "test_found_high"]].to_dict("index")})
    flags = " ".join(f"--{key.replace('_', '-')} {value:g}" for key, value in chosen.items())
    print(f"identify_characters.py {flags}  (written {characters_dir() / 'detector_settings.csv'})")


if __name__ == "__main__":
    cli.run(main)
