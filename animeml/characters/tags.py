"""Tag sources for the illustration tagger: a CSV of `file,tags` ("blonde hair, blue eyes") or Danbooru metadata
JSON (one post per line). Both become a table of `path` (an image file that decodes) and `tags` (a list).

Danbooru tag names use underscores ("blonde_hair"); they are read with spaces ("blonde hair"), as in the CSV and
in the captions that image-generation tools expect.
"""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from animeml.core.io import PipelineError, read_csv


def split_tags(text, separator=","):
    return [tag.strip() for tag in str(text).split(separator) if tag.strip()]


def read_tags_csv(path, images_dir=None):
    """`file,tags` rows; `file` is relative to `images_dir` (default: the CSV's folder)."""
    path = Path(path)
    table = read_csv(path, "tags CSV", ("file", "tags"), dtype=str, keep_default_na=False)
    root = Path(images_dir) if images_dir else path.parent
    return _readable(pd.DataFrame({"path": [str(root / file) for file in table["file"]],
                                   "tags": [split_tags(tags) for tags in table["tags"]]}), path)


def danbooru_tags(post):
    """Tag names of one post: `tag_string` (Danbooru API and recent dumps) or `tags` (Danbooru2017-2020 dumps:
    a list of {"name": ...} or of names)."""
    if "tag_string" in post:
        names = str(post["tag_string"]).split()
    else:
        names = [tag["name"] if isinstance(tag, dict) else tag for tag in post.get("tags", [])]
    return [name.replace("_", " ") for name in names]


def danbooru_candidates(post, root):
    """Where a post's image may be under `root`: an explicit file field, the Danbooru2018+ layout
    `<id % 1000 as 4 digits>/<id>.<ext>` (original/ or 512px/, whose files are .jpg), `<id>.<ext>`, `<md5>.<ext>`."""
    for key in ("file", "file_path", "path"):
        if post.get(key):
            yield root / post[key]
    ext = post.get("file_ext", "jpg")
    if "id" in post:
        post_id = int(post["id"])
        for name in (f"{post_id}.{ext}", f"{post_id}.jpg"):
            yield root / f"{post_id % 1000:04d}" / name
            yield root / name
    if "md5" in post:
        yield root / f"{post['md5']}.{ext}"


def read_danbooru_json(path, images_dir):
    """Danbooru metadata, one JSON post per line; posts whose image is not under `images_dir` are left out."""
    path, root = Path(path), Path(images_dir)
    if not path.exists():
        raise PipelineError(f"Danbooru metadata not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                post = json.loads(line)
            except json.JSONDecodeError:
                raise PipelineError(f"{path}:{number} is not a JSON object") from None
            image = next((file for file in danbooru_candidates(post, root) if file.exists()), None)
            if image is not None:
                rows.append({"path": str(image), "tags": danbooru_tags(post)})
    if not rows:
        raise PipelineError(f"no image of {path} found under {root}")
    return _readable(pd.DataFrame(rows), path)


def read_tag_sources(tags_csvs=(), danbooru_jsons=(), images_dirs=()):
    """Several tag sources as one table of `path`, `tags`, `source` (0 for the first source: the CSVs first, then
    the Danbooru files, in the order given) and `file` (the path under its source's image root, so a saved split
    survives a moved folder; an image listed twice in one source is kept once). Danbooru file i finds its images
    under `images_dirs[i]`, or under `images_dirs[0]` when only one is given."""
    if danbooru_jsons and len(images_dirs) not in (1, len(danbooru_jsons)):
        raise PipelineError(f"{len(danbooru_jsons)} Danbooru files need one image folder each, or one for all; "
                            f"got {len(images_dirs)}")
    tables = [read_tags_csv(path) for path in tags_csvs]
    tables += [read_danbooru_json(path, images_dirs[min(i, len(images_dirs) - 1)])
               for i, path in enumerate(danbooru_jsons)]
    for source, table in enumerate(tables):
        root = (os.path.commonpath(list(table["path"])) if len(table) > 1
                else os.path.dirname(table["path"][0]))
        table["file"] = table["path"].map(lambda path: os.path.relpath(path, root))
        table["source"] = source
    return pd.concat([table.drop_duplicates("file") for table in tables], ignore_index=True)


def _readable(table, source):
    """The rows of `table` whose image exists and decodes (the others are printed with their reason)."""
    from animeml.core.images import drop_unreadable

    table = drop_unreadable(table, "path", f"images listed in {source}")
    if table.empty:
        raise PipelineError(f"none of the images listed in {source} can be read")
    return table


def exclusive_groups(tags, y):
    """Groups of tags that share their last word ("blonde hair", "red hair") and of which every row of `y`
    (multi-hot, one column per tag) has exactly one: the hair and eye colours of a face set. Danbooru-style
    sources, where an image may have no hair tag or two, have none. Lists of column indices."""
    y = np.asarray(y)
    by_word = {}
    for column, tag in enumerate(tags):
        words = tag.split()
        if len(words) > 1:
            by_word.setdefault(words[-1], []).append(column)
    return [group for group in by_word.values()
            if len(group) > 1 and len(y) and (y[:, group].sum(axis=1) == 1).all()]


def one_per_group(probabilities, groups):
    """Scores where, within each exclusive group, only the most likely tag keeps its probability and the others get
    -1, below any threshold, so at most one tag of a group is named; tags outside the groups keep theirs."""
    scores = np.array(probabilities, dtype=float)
    for group in groups:
        part = scores[:, group]
        scores[:, group] = np.where(part == part.max(axis=1, keepdims=True), part, -1.0)
    return scores


def tag_thresholds(sidecar, threshold=None):
    """{tag: threshold} of a tagger: its sidecar's tuned ones, or one `threshold` for every tag."""
    labels = list(sidecar["labels"])
    return dict(zip(labels, np.broadcast_to(sidecar["thresholds"] if threshold is None else threshold,
                                            len(labels)).tolist()))


def chosen_tags(probabilities, sidecar, threshold=None):
    """The tags a tagger names for each row of `probabilities` (predicted as its sidecar's "flip" says), decoded as
    its thresholds were tuned on validation: within each of the sidecar's "exclusive_groups" only the best tag
    may pass, then each score is held against its tag's threshold (or one `threshold` for all).
    A list per row of (tag, score) pairs, best first."""
    labels = list(sidecar["labels"])
    groups = [[labels.index(tag) for tag in group] for group in sidecar.get("exclusive_groups", [])]
    scores = one_per_group(probabilities, groups)
    cut = tag_thresholds(sidecar, threshold)
    return [[(labels[j], float(row[j])) for j in np.argsort(-row, kind="stable") if row[j] >= cut[labels[j]]]
            for row in scores]


def cross_validated_f1(y_true, scores, tune, folds=5, seed=0):
    """Micro-F1 of a decoding on held-out folds of (validation) rows: `tune(y, scores)` -> thresholds is fitted on
    the other folds each time. Thresholds scored on the rows they were tuned on flatter the decodings with more of
    them (per-tag thresholds); this compares decodings as they fare on new images."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import KFold

    y_true, scores = np.asarray(y_true), np.asarray(scores)
    if len(y_true) < 2:
        raise PipelineError(f"{len(y_true)} validation image(s): at least 2 are needed to choose the decoding")
    predicted = np.zeros_like(y_true)
    for fit, held_out in KFold(min(folds, len(y_true)), shuffle=True, random_state=seed).split(scores):
        predicted[held_out] = scores[held_out] >= tune(y_true[fit], scores[fit])
    return float(f1_score(y_true, predicted, average="micro", zero_division=0))
