import numpy as np
import pandas as pd

from animeml.core.splits import assign_groups, load_or_make_split


def test_groups_never_cross_splits_and_split_is_reused(tmp_path):
    groups = np.repeat(np.arange(60), 3)
    path = tmp_path / "split.csv"
    first = load_or_make_split(path, groups, seed=1)
    per_group = pd.DataFrame({"g": groups, "s": first}).groupby("g")["s"].nunique()
    assert (per_group == 1).all()
    assert set(first) == {"train", "val", "test"}
    again = load_or_make_split(path, groups, seed=999)
    assert (again == first).all()
    with_new = load_or_make_split(path, np.append(groups, 1000))
    assert with_new[-1] == "train" and (with_new[:-1] == first).all()


def test_multilabel_split_puts_a_rare_label_in_every_split():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < [0.5, 0.3, 0.2, 0.06]).astype(int)
    table = assign_groups(np.arange(200), val=0.2, test=0.2, seed=0, labels=labels)
    for name in ("train", "val", "test"):
        rare = labels[table["split"].to_numpy() == name, 3]
        assert rare.sum() >= 1
    sizes = table["split"].value_counts(normalize=True)
    assert abs(sizes["test"] - 0.2) < 0.05 and abs(sizes["val"] - 0.2) < 0.05


def test_no_validation_part_when_val_is_zero():
    labels = np.eye(4, dtype=int)[np.arange(40) % 4]
    for kwargs in ({}, {"labels": labels}):
        split = assign_groups(np.arange(40), val=0.0, test=0.5, seed=0, **kwargs)["split"].to_numpy()
        assert sorted(set(split)) == ["test", "train"] and (split == "test").sum() == 20
    stratified = assign_groups(np.arange(40), val=0.0, test=0.5, seed=0, labels=labels)["split"].to_numpy()
    assert ((stratified == "test")[:, None] & labels.astype(bool)).sum(axis=0).tolist() == [5, 5, 5, 5]


def test_one_label_column_still_splits_stratified():
    one_class = np.ones((30, 1), dtype=int)  # every group of one character
    split = assign_groups(np.arange(30), val=0.0, test=0.6, seed=0, labels=one_class)["split"].to_numpy()
    assert (split == "test").sum() == 18 and (split == "train").sum() == 12
    yes_no = (np.arange(40) % 4 == 0).astype(int)  # a yes/no label, 10 of 40
    split = assign_groups(np.arange(40), val=0.0, test=0.5, seed=0, labels=yes_no)["split"].to_numpy()
    assert yes_no[split == "test"].sum() == 5
