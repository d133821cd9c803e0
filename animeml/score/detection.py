"""Object and anime-face counts per poster (Ultralytics YOLO + the OpenCV anime-face cascade), resumable, and
their rank correlation with the score.

Ultralytics is imported lazily by `load_detector`, after the environment is set: it would otherwise pin
OMP_NUM_THREADS to 1 and, with local weights, look for the network for nothing.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, spearmanr
from tqdm import tqdm

from animeml.core.io import PipelineError, atomic_path, write_csv
from animeml.core.faces import detect_faces
from animeml.core.imagefile import ImageUnreadable, read_rgb
from animeml.core.table import relative_to_root
from animeml.core.paths import ROOT

FACE_COLUMN = "anime_face"
KEY_COLUMNS = ["image_path", "anime_id"]
REASON_COLUMN = "reason"  # why a poster could not be counted (its counts are empty); blank when it was


def load_detector(weights):
    """An Ultralytics YOLO detector from a local file (.pt, .onnx, .tflite) or a name Ultralytics downloads."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    if Path(weights).exists():
        os.environ.setdefault("YOLO_OFFLINE", "1")
    elif Path(weights).suffix != ".pt" or len(Path(weights).parts) > 1:
        raise PipelineError(f"detector weights not found: {weights}")
    from ultralytics import YOLO

    try:
        return YOLO(str(weights), task="detect")
    except (ConnectionError, OSError) as err:
        raise PipelineError(f"could not get YOLO weights {weights} ({type(err).__name__}); offline, pass a local "
                            "file such as --weights ../shared/models/yolov8n_int8.tflite") from None


def class_names(detector):
    """The detector's class names in class-id order, as CSV column names. `detector.names` is read once: until
    the first prediction, each read of it loads an exported model (.tflite, .onnx) again."""
    names = detector.names
    return [names[i].replace(" ", "_") for i in sorted(names)]


def count_objects(rgb, detector, conf=0.25, names=None):
    """Boxes per class that `detector` finds in one RGB uint8 image, as a dict column -> count.
    `names`: the detector's class_names, when the caller has them already."""
    names = names or class_names(detector)
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # Ultralytics reads numpy images as BGR
    classes = detector.predict(bgr, conf=conf, verbose=False)[0].boxes.cls.cpu().numpy().astype(int)
    return dict(zip(names, np.bincount(classes, minlength=len(names)).tolist()))


def read_counts(path):
    """The counts written so far (an empty table when there is no file yet); files written before the reason
    column existed get a blank one."""
    if not Path(path).exists():
        return pd.DataFrame(columns=KEY_COLUMNS)
    table = pd.read_csv(path)
    table[REASON_COLUMN] = table[REASON_COLUMN].fillna("") if REASON_COLUMN in table else ""
    return table


def count_posters(posters, out_path, detector, cascade, conf=0.25, save_every=50):
    """Count objects on every poster of `posters` (columns image_path, anime_id) not yet counted in `out_path`.

    Rows for new posters are appended and the file is rewritten atomically every `save_every` posters, so an
    interrupted run loses at most that many and a rerun only counts what is missing. A poster that cannot be read
    is one row with empty counts and its reason, and is tried again by the next run. Paths are stored relative
    to the project, like ani_data_merged.csv. Returns the full table.
    """
    table = read_counts(out_path)
    names = class_names(detector)
    columns = KEY_COLUMNS + names + [FACE_COLUMN, REASON_COLUMN]
    if len(table) and list(table.columns) != columns:
        raise PipelineError(f"{out_path} holds other classes than these weights detect: remove it or pass --out")
    table = table.reindex(columns=columns)
    table = counted(table)
    posters = posters.assign(image_path=[relative_to_root(Path(p)) for p in posters["image_path"]])
    todo = posters[~posters["image_path"].isin(table["image_path"])].drop_duplicates("image_path")
    # The face cascade runs in a thread while YOLO runs: each takes one core here (Ultralytics sets OpenCV to one
    # thread and gives a LiteRT model cpu_count - 1), about 50 ms a poster each on two cores, and neither holds
    # the GIL meanwhile.
    with tqdm(total=len(todo), desc="counting objects", unit="poster") as progress, \
            ThreadPoolExecutor(1) as face_finder:
        for start in range(0, len(todo), save_every):
            rows = []
            for path, anime_id in todo.iloc[start:start + save_every][KEY_COLUMNS].itertuples(index=False):
                try:
                    rgb = read_rgb(ROOT / path, downsize=True)
                except ImageUnreadable as err:
                    rows.append({"image_path": path, "anime_id": anime_id, REASON_COLUMN: str(err)})
                else:
                    faces = face_finder.submit(detect_faces, rgb, cascade)
                    rows.append({"image_path": path, "anime_id": anime_id,
                                 **count_objects(rgb, detector, conf, names), FACE_COLUMN: len(faces.result()),
                                 REASON_COLUMN: ""})
                progress.update()
            new = pd.DataFrame(rows, columns=columns)
            table = new if table.empty else pd.concat([table, new], ignore_index=True)
            write_csv(table, out_path)
    return table


def count_columns(table):
    return [c for c in table.columns if c not in (*KEY_COLUMNS, REASON_COLUMN)]


def counted(table):
    """The rows of posters that were counted (not skipped with a reason)."""
    return table[table[REASON_COLUMN].fillna("") == ""] if REASON_COLUMN in table else table


def score_correlations(counts, scores, min_posters=20):
    """Spearman correlation between each count column and the score, one observation per anime (counts averaged
    over its posters, so an anime with several posters is not counted several times).

    Only classes seen on at least `min_posters` posters are tested. `p_fdr` is the Benjamini-Hochberg adjusted
    p-value over the classes tested.
    """
    counts = counted(counts)
    columns = [c for c in count_columns(counts) if (counts[c] > 0).sum() >= min_posters]
    if not columns:
        raise PipelineError(f"no class was found on {min_posters} posters or more; lower --min-posters")
    per_anime = counts.groupby("anime_id")[columns].mean().join(scores.rename("score"), how="inner")
    per_anime = per_anime.dropna(subset=["score"])
    rows = []
    for column in columns:
        rho, p = spearmanr(per_anime[column], per_anime["score"])
        rows.append({"class": column, "posters_with": int((counts[column] > 0).sum()),
                     "mean_count": counts[column].mean(), "spearman_rho": rho, "p_value": p,
                     "n_anime": len(per_anime)})
    table = pd.DataFrame(rows)
    table["p_fdr"] = false_discovery_control(table["p_value"].fillna(1.0))
    return table.sort_values("spearman_rho", key=np.abs, ascending=False, ignore_index=True)


def plot_correlations(table, path):
    """Horizontal bars of Spearman rho per class; classes significant after FDR (p_fdr < 0.05) in a darker blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table.sort_values("spearman_rho")
    colors = ["tab:blue" if p < 0.05 else "lightsteelblue" for p in table["p_fdr"]]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(table) + 1.2))
    ax.barh(table["class"], table["spearman_rho"], color=colors)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Spearman rho with score (dark: FDR-adjusted p < 0.05)")
    ax.set_title(f"Objects on posters vs score ({table['n_anime'].iloc[0]} anime)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
