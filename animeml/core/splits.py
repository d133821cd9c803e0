"""Train/validation/test splits grouped by anime (or franchise), seeded, saved to disk and reused.

A split is a CSV of `group,split`. Every model of a task reads the same file, so their test rows are the same;
rows of one group (all posters of one anime) never land in two splits.
"""
import numpy as np
import pandas as pd

from animeml.core.io import PipelineError, read_csv, write_csv

SPLITS = ("train", "val", "test")


def assign_groups(groups, val=0.15, test=0.15, seed=42, labels=None):
    """Map each unique group to train/val/test (`val=0`: train and test only). With `labels` (one multi-hot row
    per group, aligned with `np.unique(groups)`) the split is iteratively stratified, so rare labels reach every
    split."""
    # imported where a split is made, so that importing this module (predict_score does) costs no scikit-learn
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
    from sklearn.model_selection import train_test_split

    unique = np.unique(np.asarray(groups))
    if len(unique) < 3:
        raise PipelineError(f"need at least 3 groups to split, got {len(unique)}")
    index = np.arange(len(unique))
    if labels is None:
        rest, test_idx = train_test_split(index, test_size=test, random_state=seed)
        train_idx, val_idx = (train_test_split(rest, test_size=val / (1 - test), random_state=seed) if val
                              else (rest, rest[:0]))
    else:
        labels = np.asarray(labels)
        labels = labels[:, None] if labels.ndim == 1 else labels
        if labels.shape[1] == 1:  # one label (a single class, or yes/no) is not a multilabel target: add its complement
            labels = np.hstack([labels, 1 - labels])
        outer = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test, random_state=seed)
        rest, test_idx = next(outer.split(index, labels))
        train_idx, val_idx = rest, rest[:0]
        if val:
            inner = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val / (1 - test), random_state=seed)
            train_rel, val_rel = next(inner.split(rest, labels[rest]))
            train_idx, val_idx = rest[train_rel], rest[val_rel]
    split = np.empty(len(unique), dtype=object)
    split[train_idx], split[val_idx], split[test_idx] = "train", "val", "test"
    return pd.DataFrame({"group": unique, "split": split})


def load_or_make_split(path, groups, **kwargs):
    """Reuse the split saved at `path`; make and save one if absent. Groups new since then go to train, so a
    test set never changes once written. Returns an array of split names aligned with `groups`."""
    groups = pd.Series(np.asarray(groups))
    if path.exists():
        table = read_csv(path, "split file", ("group", "split"), dtype={"group": groups.dtype})
    else:
        table = assign_groups(groups, **kwargs)
        write_csv(table, path)
    split_of = dict(zip(table["group"], table["split"]))
    return groups.map(split_of).fillna("train").to_numpy()


def connected_groups(items, links):
    """Union-find over `items` joined by `links` (pairs of items), transitively: {item: group}, each group named
    by its smallest item, so the names do not depend on the order of `links`. An item in no link is its own group."""
    parent = {item: item for item in items}

    def root(item):
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving keeps the trees flat
            item = parent[item]
        return item

    for a, b in links:
        if a not in parent or b not in parent:
            raise PipelineError(f"link ({a!r}, {b!r}) names an item that is not in the list")
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {item: root(item) for item in parent}


def grouped_split(groups, val=0.15, test=0.15, seed=42):
    """train/val/test per row, every group whole on one side, the parts' row counts near the fractions asked.

    Groups are taken in a seeded random order; each goes to the part it brings closest to its target row count
    (so a group too big for val or test goes to train instead of overshooting them). Raises PipelineError when a
    part asked for ends up empty (too few groups)."""
    groups = np.asarray(groups)
    unique, sizes = np.unique(groups, return_counts=True)
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    parts = [part for part in SPLITS if fractions[part] > 0]
    target = {part: fractions[part] * len(groups) for part in parts}
    filled = dict.fromkeys(parts, 0)
    part_of = {}
    for i in np.random.default_rng(seed).permutation(len(unique)):
        gain = {part: abs(filled[part] - target[part]) - abs(filled[part] + sizes[i] - target[part])
                for part in parts}
        best = max(parts, key=lambda part: gain[part])
        part_of[unique[i]] = best
        filled[best] += sizes[i]
    empty = [part for part in parts if filled[part] == 0]
    if empty:
        raise PipelineError(f"{len(unique)} groups are too few for a {'/'.join(parts)} split: "
                            f"{', '.join(empty)} would be empty")
    return np.array([part_of[g] for g in groups], dtype=object)


def illustration_groups(files):
    """The illustration each face crop comes from, so a split keeps its crops on one side: crops named
    `<hash>-<n>.<ext>` share their `<hash>` (in any character folder: one illustration may show several
    characters); any other file (e.g. `3.jpg`) is its own group, named by its path."""
    groups = []
    for file in map(str, files):
        stem = file.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        hash_, dash, number = stem.rpartition("-")
        groups.append(hash_ if dash and hash_ and number.isdigit() else file)
    return np.array(groups, dtype=object)


def carve_validation(groups, labels, share=0.15, seed=42):
    """A validation part of about `share` of the rows carved from a training part, whole groups only and
    iteratively stratified by `labels` (one multi-hot row per row of `groups`; a group's label row is the union
    of its rows'). Returns an array of "train"/"val" aligned with `groups`."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    groups = np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < 2:
        raise PipelineError(f"need at least 2 groups to carve a validation part, got {len(unique)}")
    group_labels = np.zeros((len(unique), np.asarray(labels).shape[1]), dtype=int)
    np.maximum.at(group_labels, inverse, np.asarray(labels, dtype=int))
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
    _, val_idx = next(splitter.split(np.arange(len(unique)), group_labels))
    is_val = np.zeros(len(unique), dtype=bool)
    is_val[val_idx] = True
    return np.where(is_val[inverse], "val", "train").astype(object)
