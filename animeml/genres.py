"""Genre classification from posters (GenreClassification/): the labelled table, the model, its training with
early stopping on validation F1, and the sidecar JSON that makes a saved model usable on its own.

The labelled table (`labels_csv()`) has one row per poster: anime_id, image_path, split, genres ("Action|Drama",
within the vocabulary) and one 0/1 column per genre; the vocabulary is the sidecar's and `vocabulary_json()`'s.
"""
import json

import keras
import numpy as np
import pandas as pd
from keras import layers
from sklearn.metrics import f1_score

from animeml.core import store, trainer
from animeml.core.backbones import BACKBONES, build_backbone
from animeml.core.feature_cache import backbone_features
from animeml.core.io import PipelineError, read_csv
from animeml.core.images import drop_unreadable, image_batch, image_dataset
from animeml.core.fields import split_list
from animeml.core.multilabel import (bootstrap_interval, evaluate, most_frequent_labels, multi_hot, predict,
                                tune_global_threshold, tune_thresholds)
from animeml.core.paths import genres_dir
from animeml.core.splits import SPLITS, load_or_make_split
from animeml.core.table import check_ids

PRETRAINED = tuple(name for name in BACKBONES if name != "small_cnn")  # ImageNet weights where available
LOSSES = ("focal", "bce")
CATALOG_COLUMNS = ("file", "anime_id", "title", "type", "genres")


def labels_csv():
    return genres_dir() / "labels.csv"


def vocabulary_json():
    return genres_dir() / "genres.json"


def model_path(backbone, loss):
    return store.model_file("genres", f"{backbone}_{loss}")


def read_labels():
    """The labelled table and its genre vocabulary, as written by the labelling step."""
    if not labels_csv().exists():
        raise PipelineError(f"{labels_csv()} not found")
    table = drop_unreadable(pd.read_csv(labels_csv(), dtype={"genres": str}), "image_path", "labelled images")
    return table, json.loads(vocabulary_json().read_text())["genres"]


def label_posters(merged, n_genres, split_path, seed=42, val=0.15, test=0.15):
    """One row per poster with a top-`n_genres` genre: its split (grouped by anime, iteratively stratified on
    the genres, saved at `split_path` and reused) and one 0/1 column per genre. Returns (table, genres)."""
    genre_lists = merged["genres"].map(split_list)
    per_anime = genre_lists.groupby(merged["anime_id"]).first()
    genres = most_frequent_labels(per_anime, n_genres)
    y = multi_hot(genre_lists.tolist(), genres)
    keep = y.sum(axis=1) > 0  # a poster with none of the genres has nothing to learn or score
    rows, y = merged[keep].reset_index(drop=True), y[keep]
    groups = rows["anime_id"].to_numpy()
    unique_y = multi_hot(per_anime.loc[np.unique(groups)].tolist(), genres)
    table = pd.DataFrame({
        "anime_id": groups,
        "image_path": rows["image_path"],
        "source": "poster",
        "type": rows["type"],
        "split": load_or_make_split(split_path, groups, labels=unique_y, seed=seed, val=val, test=test),
        "genres": ["|".join(g for g in genres if g in set(lst)) for lst in genre_lists[keep]],
    })
    return pd.concat([table, pd.DataFrame(y, columns=genres)], axis=1), genres


def read_catalog(catalog_csv):
    """A catalog covers CSV (CATALOG_COLUMNS) as text, its anime_id checked: a positive whole number, or 0 where
    blank (catalog_rows matches those by title)."""
    catalog = read_csv(catalog_csv, "catalog covers CSV", CATALOG_COLUMNS, dtype=str, keep_default_na=False)
    catalog["anime_id"] = check_ids([a if a.strip() else None for a in catalog["anime_id"]], str(catalog_csv), empty=0)
    return catalog


def catalog_rows(catalog, covers_dir, merged, table, genres):
    """Catalog covers (read_catalog) as extra training rows. A cover is grouped with its anime (by anime_id, else by
    title); covers of an anime in the validation or test split are left out, so those splits stay unseen posters."""
    id_of_title = {str(name).casefold(): anime_id for name, anime_id in zip(merged["name"], merged["anime_id"])}
    matched = [int(a) if a else id_of_title.get(t.casefold()) for a, t in zip(catalog["anime_id"], catalog["title"])]
    held_out = set(table.loc[table["split"] != "train", "anime_id"])
    genre_lists = catalog["genres"].map(split_list).tolist()
    y = multi_hot(genre_lists, genres)
    keep = np.array([(a is None or int(a) not in held_out) for a in matched]) & (y.sum(axis=1) > 0)
    extra = pd.DataFrame({
        "anime_id": [int(a) if a is not None else -1 for a in matched],
        "image_path": [str(covers_dir / f) for f in catalog["file"]],
        "source": "catalog",
        "type": catalog["type"],
        "split": "train",
        "genres": ["|".join(g for g in genres if g in set(lst)) for lst in genre_lists],
    })
    return pd.concat([extra, pd.DataFrame(y, columns=genres)], axis=1)[keep].reset_index(drop=True)


def split_counts(table, genres):
    """Posters per genre in each split (plus all posters and distinct anime), for the split report."""
    counts = pd.DataFrame({split: table.loc[table["split"] == split, genres].sum() for split in SPLITS})
    counts.loc["(posters)"] = [int((table["split"] == s).sum()) for s in SPLITS]
    counts.loc["(anime)"] = [table.loc[table["split"] == s, "anime_id"].nunique() for s in SPLITS]
    return counts.rename_axis("genre").reset_index()


def targets(table, genres):
    return table[genres].to_numpy(dtype=np.float32)


def make_loss(name, focal_gamma=2.0):
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=focal_gamma)
    if name == "bce":
        return keras.losses.BinaryCrossentropy()
    raise PipelineError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")


def build_model(backbone_name, n_genres, image_size, pretrained=True, dropout=0.3):
    """Poster -> backbone -> head (dropout, one sigmoid per genre, float32 under mixed precision). The head is a
    nested model named "head", so the frozen phase can train it on cached backbone features."""
    backbone = build_backbone(backbone_name, image_size, weights="imagenet" if pretrained else None)
    features = keras.Input(backbone.output.shape[1:], name="features")
    outputs = layers.Dense(n_genres, activation="sigmoid", dtype="float32", name="genres")(
        layers.Dropout(dropout, name="head_dropout")(features))
    head = keras.Model(features, outputs, name="head")
    image = keras.Input(backbone.input.shape[1:], name="image")
    return keras.Model(image, head(backbone(image)), name="genre_classifier")


def is_pretrained(backbone_name, weights):
    return backbone_name in PRETRAINED and weights == "imagenet"


def micro_f1_at_best_threshold(y_true, prob):
    """Micro-F1 at the shared threshold that is best on these rows: the early-stopping monitor."""
    return f1_score(y_true, predict(prob, tune_global_threshold(y_true, prob)), average="micro")


def train(table, genres, backbone_name, loss_name, image_size, pretrained, strategy=None, epochs=40,
          finetune_epochs=3, finetune_layers=30, learning_rate=1e-3, finetune_learning_rate=1e-4, focal_gamma=2.0,
          batch_size=32, patience=3, seed=42, backup_dir=None, resume=False):
    """Train one genre model on the table's train rows, early-stopped on validation micro-F1; returns (model,
    history). Pretrained backbones: `epochs` of the head on cached frozen features, then the top `finetune_layers`
    backbone layers on augmented posters. From scratch: every layer on augmented posters for `epochs`."""
    train_rows, val_rows = table[table["split"] == "train"], table[table["split"] == "val"]
    y_train, y_val = targets(train_rows, genres), targets(val_rows, genres)
    head_data = None
    if pretrained:
        head_data = tuple((backbone_features(backbone_name, image_size, rows["image_path"]), y)
                          for rows, y in ((train_rows, y_train), (val_rows, y_val)))
    return trainer.fit(
        lambda: build_model(backbone_name, len(genres), image_size, pretrained),
        lambda batch: image_dataset(train_rows["image_path"], y_train, image_size=image_size, batch_size=batch,
                                    training=True, cache=True, seed=seed),
        lambda batch: image_dataset(val_rows["image_path"], y_val, image_size=image_size, batch_size=batch,
                                    cache=True),
        loss=make_loss(loss_name, focal_gamma), strategy=strategy, epochs=epochs,
        finetune_epochs=finetune_epochs if pretrained else 0, finetune_layers=finetune_layers,
        learning_rate=learning_rate, finetune_learning_rate=finetune_learning_rate, batch_size=batch_size,
        patience=patience, monitor="val_micro_f1", mode="max", score=micro_f1_at_best_threshold,
        from_scratch=not pretrained, head_data=head_data, backup_dir=backup_dir, resume=resume)


def predict_table(model, images, image_size, batch_size=32):
    """Per-genre probabilities for images given as paths or as decoded arrays (animeml.core.images.read_image), in
    the model's genre order. Batch by batch through one compiled graph (trainer.forward_pass): `model.predict`
    rebuilds its graph on most calls when a script calls it once per chunk."""
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    forward = trainer.forward_pass(model)
    if isinstance(next(iter(images)), np.ndarray):
        batches = (image_batch(images[i:i + batch_size], image_size, np.uint8)
                   for i in range(0, len(images), batch_size))
    else:
        batches = image_dataset(images, image_size=image_size, batch_size=batch_size)
    return np.concatenate([forward(batch).numpy() for batch in batches])


def tuned_thresholds(y_val, prob_val):
    """Per-genre thresholds and one shared threshold, both tuned on validation for micro-F1."""
    return tune_thresholds(y_val, prob_val, "micro"), tune_global_threshold(y_val, prob_val, "micro")


def load_model(path):
    """A saved genre model and its sidecar (genres, thresholds): animeml.core.store.load_model."""
    return store.load_model(path)


SCHEMES = ("per-genre", "shared", "fixed 0.5")


def scheme_thresholds(sidecar, scheme):
    """The thresholds of one scheme: per genre and shared ones come from validation (the sidecar)."""
    if scheme == "per-genre":
        return np.array([sidecar["thresholds"][g] for g in sidecar["genres"]])
    return sidecar["global_threshold"] if scheme == "shared" else 0.5


def result_row(y_test, prob_test, thresholds, genres, **description):
    """One row of the results table: the description, every test metric and a bootstrap interval of micro-F1."""
    low, high = bootstrap_interval(y_test, prob_test, thresholds)
    return {**description, **evaluate(y_test, prob_test, thresholds, genres), "micro_f1_low": low,
            "micro_f1_high": high}


def markdown_results(table, columns, digits=3):
    """A Markdown table of `columns`; micro_f1 is shown with its 95% bootstrap interval."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if column == "micro_f1":
                cells.append(f"{value:.{digits}f} [{row['micro_f1_low']:.{digits}f}, {row['micro_f1_high']:.{digits}f}]")
            else:
                cells.append(f"{value:.{digits}f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_examples(paths, y_true, y_pred, genres, path, columns=4):
    """A grid of posters, each titled with its predicted and true genres (correct predictions marked *)."""
    from matplotlib.figure import Figure
    from PIL import Image

    rows = int(np.ceil(len(paths) / columns))
    fig = Figure(figsize=(3.2 * columns, 4.4 * rows))
    for i, (image_path, truth, pred) in enumerate(zip(paths, y_true, y_pred)):
        ax = fig.add_subplot(rows, columns, i + 1)
        with Image.open(image_path) as image:
            ax.imshow(image.convert("RGB"))
        predicted = [g + ("*" if truth[j] else "") for j, g in enumerate(genres) if pred[j]]
        true = [g for j, g in enumerate(genres) if truth[j]]
        ax.set_title(f"pred: {', '.join(predicted) or '-'}\ntrue: {', '.join(true)}", fontsize=7, wrap=True)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
