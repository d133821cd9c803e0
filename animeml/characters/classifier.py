"""Image classifiers of CharacterTagging/: one character per face crop (softmax) and many tags per illustration
(sigmoid; a softmax over each group of tags of which every image has exactly one, such as a face's hair colour),
trained the same way by animeml.core.trainer and saved in the model store as `.h5` with a sidecar JSON (labels,
image size, thresholds, run record) that makes the saved model usable on its own.

A pretrained backbone: the head first learns on cached features of the frozen backbone (animeml.core.feature_cache),
then the top of the backbone is fine-tuned with augmentation, keeping the epoch with the best validation loss.
With `train_from` (a layer of an EfficientNet-Lite) the head holds the backbone's layers above that one too, and
learns on cached activations of the layers below, of each image and its mirror: the top stages are fine-tuned
for the price of a small model (see resolve_train_from).
A from-scratch backbone (small_cnn) trains end to end with augmentation.

Outlier exposure (Hendrycks et al. 2019): faces of other characters, labelled OUTLIER, train towards the uniform
distribution (outlier_exposure_loss), so a face the model does not know gets a low best probability.
"""
import math
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers, ops

from animeml.core import store, trainer
from animeml.core.backbones import LITE_VARIANTS, build_backbone, layer_output, lite_stage_end
from animeml.core.faces import list_images
from animeml.core.feature_cache import backbone_features
from animeml.core.images import drop_unreadable, image_batch, image_dataset
from animeml.core.io import PipelineError, atomic_path, read_csv
from animeml.core.metrics import bootstrap_samples
from animeml.core.multilabel import f1_from_counts

SCRATCH_BACKBONES = ("small_cnn",)
# `--train-from auto`: the end of EfficientNet-Lite's stage 5 (its last stage before the final stride 2). On the
# 96 px characters20 faces (validation part carved from train) Lite0 trained from there (8 epochs, flipped copies)
# named 0.959 right, against 0.794 for logistic regression on its frozen features.
AUTO_STAGE = 5


def resolve_train_from(backbone_name, train_from):
    """The layer of `backbone_name` that `--train-from` names: "none" -> None (head, then fine-tuning); "auto" ->
    the end of stage AUTO_STAGE and "stage<N>" the end of stage N of an EfficientNet-Lite (None for the other
    backbones, which have no stages by that name); anything else is a layer name, as given."""
    if train_from == "none":
        return None
    stage = re.fullmatch(r"stage(\d+)", f"stage{AUTO_STAGE}" if train_from == "auto" else train_from)
    if stage is None:
        return train_from
    return lite_stage_end(backbone_name, int(stage[1])) if backbone_name in LITE_VARIANTS else None


def model_path(task, backbone):
    return store.model_file(task, backbone)


def read_face_folders(root):
    """The moeimouto-faces layout `root/<character>/*.png|jpg` as a table of `path, character`; faces that do not
    decode are left out (with their reasons on stderr)."""
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"face folder not found: {root}")
    rows = [(str(path), folder.name) for folder in sorted(root.iterdir()) if folder.is_dir()
            for path in list_images(folder)]
    table = drop_unreadable(pd.DataFrame(rows, columns=["path", "character"]), "path", "faces")
    if table["character"].nunique() < 2:
        raise PipelineError(f"{root} needs at least two character folders with images that decode")
    return table


def read_split_file(path, table):
    """`file,character,split` rows (files relative to the CSV's folder) -> the split of each face of `table`
    (`path` column); every face must be listed, with a split of train or test."""
    path = Path(path)
    split = read_csv(path, "split CSV", ("file", "split"), dtype=str)
    bad = sorted(set(split["split"]) - {"train", "test"})
    if bad:
        raise PipelineError(f"{path}: split must be train or test, not {', '.join(map(str, bad))}")
    split_of = {str((path.parent / file).resolve()): part for file, part in zip(split["file"], split["split"])}
    parts = table["path"].map(lambda face: split_of.get(str(Path(face).resolve())))
    if parts.isna().any():
        missing = table["path"][parts.isna()]
        raise PipelineError(f"{path} lists no split for {len(missing)} face(s), e.g. {missing.iloc[0]}")
    return parts.to_numpy(dtype=object)


def face_set(faces_dir, split_csv, split_path, val_share=0.15, test_share=0.2, seed=42, image_size=None):
    """The faces of `faces_dir` (read_face_folders) with `file` (character/name), `group` (their illustration,
    animeml.core.splits.illustration_groups) and `split` columns, and the image size to train at (`image_size`,
    else the first face's side). The test part comes from `split_csv`, else from the grouped split kept at
    `split_path` (made there once, stratified by character); validation is carved from train, whole groups."""
    from PIL import Image

    from animeml.core.splits import carve_validation, illustration_groups, load_or_make_split

    table = read_face_folders(faces_dir)
    table["file"] = table["character"] + "/" + table["path"].map(lambda path: Path(path).name)
    table = table.sort_values("file", ignore_index=True)
    table["group"] = illustration_groups(table["file"])
    names = sorted(table["character"].unique())
    one_hot = np.eye(len(names), dtype=int)[table["character"].map({name: i for i, name in enumerate(names)})]
    if split_csv:
        table["split"] = read_split_file(split_csv, table)
    else:
        groups, inverse = np.unique(table["group"], return_inverse=True)
        group_labels = np.zeros((len(groups), len(names)), dtype=int)
        np.maximum.at(group_labels, inverse, one_hot)
        table["split"] = load_or_make_split(split_path, table["group"], val=0.0, test=test_share, seed=seed,
                                            labels=group_labels)
    train = (table["split"] == "train").to_numpy()
    table.loc[train, "split"] = carve_validation(table["group"][train], one_hot[train], val_share, seed)
    if image_size is None:
        with Image.open(table["path"][0]) as first:
            image_size = first.size[0]
    return table, image_size


@keras.saving.register_keras_serializable(package="animeml")
class GroupSoftmax(layers.Layer):
    """Tag probabilities from logits: a softmax over each group of mutually exclusive tags (`groups`, lists of
    column indices: the hair colours of a face), a sigmoid for every other tag."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = [[int(column) for column in group] for group in groups]

    def call(self, logits):
        others = ungrouped(self.groups, logits.shape[-1])
        parts = [ops.softmax(ops.take(logits, group, axis=-1), axis=-1) for group in self.groups]
        if others:
            parts.append(ops.sigmoid(ops.take(logits, others, axis=-1)))
        order = [column for group in self.groups for column in group] + others
        return ops.take(ops.concatenate(parts, axis=-1), np.argsort(order), axis=-1)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def ungrouped(groups, n_outputs):
    """The columns of `n_outputs` in none of `groups`: the tags that keep a sigmoid."""
    grouped = {column for group in groups for column in group}
    return [column for column in range(n_outputs) if column not in grouped]


def grouped_crossentropy(groups, n_outputs):
    """The loss of GroupSoftmax's probabilities: the cross-entropy of each group (one true tag of several) and the
    binary cross-entropy of every other tag, averaged over the groups and those tags."""
    others = ungrouped(groups, n_outputs)

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        total = sum(-ops.sum(ops.take(y_true, group, axis=-1) * ops.log(ops.take(y_pred, group, axis=-1)), axis=-1)
                    for group in groups)
        if others:
            y, p = ops.take(y_true, others, axis=-1), ops.take(y_pred, others, axis=-1)
            total = total - ops.sum(y * ops.log(p) + (1 - y) * ops.log(1 - p), axis=-1)
        return total / (len(groups) + len(others))

    return loss


def build_classifier(backbone_name, n_outputs, image_size, multi_label, pretrained=True, dropout=0.2,
                     train_from=None, exclusive_groups=()):
    """Image (raw 0..255) -> backbone -> head (dropout, dense softmax for one class or sigmoid for multi-label,
    float32 under mixed precision). The head is a nested model named "head", so it can train on cached features.

    `train_from`: a layer of the backbone; the nested model "backbone" then ends there and the head starts with the
    backbone's layers above it (BatchNormalization frozen, in inference mode), so they train with the head.
    `exclusive_groups` (multi-label): groups of tags of which every image has exactly one, each given a softmax
    (GroupSoftmax) instead of a sigmoid per tag."""
    weights = "imagenet" if pretrained and backbone_name not in SCRATCH_BACKBONES else None
    backbone = build_backbone(backbone_name, image_size=image_size, weights=weights)
    if train_from:
        cut = layer_output(backbone, train_from)
        upper = keras.Model(cut, backbone.output, name="upper")
        for layer in upper.layers:
            layer.trainable = not isinstance(layer, layers.BatchNormalization)
        backbone = keras.Model(backbone.input, cut, name="backbone")
    features = keras.Input(backbone.output.shape[1:], name="features")
    x = upper(features) if train_from else features
    x = layers.Dropout(dropout, name="head_dropout")(x)
    if multi_label and exclusive_groups:
        logits = layers.Dense(n_outputs, dtype="float32", name="logits")(x)
        outputs = GroupSoftmax(exclusive_groups, dtype="float32", name="outputs")(logits)
    else:
        outputs = layers.Dense(n_outputs, activation="sigmoid" if multi_label else "softmax", dtype="float32",
                               name="outputs")(x)
    head = keras.Model(features, outputs, name="head")
    image = keras.Input(backbone.input.shape[1:], name="image")
    return keras.Model(image, head(backbone(image)), name=f"{backbone_name}_classifier")


def lower_features(backbone_name, image_size, parts, train_from):
    """Cached activations of `train_from` (the backbone's layers up to it, ImageNet weights): one array
    (n, h, w, channels) per `(paths, flip)` of `parts`, of the images or, with `flip`, of their mirror images."""
    backbone = build_backbone(backbone_name, image_size=image_size)
    lower = keras.Model(backbone.input, layer_output(backbone, train_from))
    return [backbone_features(f"{backbone_name}-{train_from}", image_size, paths, backbone=lower, flip=flip)
            for paths, flip in parts]


class HeadCosineSchedule(keras.callbacks.Callback):
    """The learning rate of the head's phase (the model named "head"): a linear warm-up over the first `warmup`
    of the steps, then down along half a cosine to 0 at the end of `epochs`; other phases keep theirs. Without the
    warm-up the first full-rate steps can wreck the pretrained top (a characters20 run stayed at chance)."""

    def __init__(self, learning_rate, epochs, warmup=0.05):
        super().__init__()
        self.learning_rate, self.epochs, self.warmup = learning_rate, epochs, warmup
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.model.name == "head":
            progress = min((self.epoch + batch / max(self.params.get("steps") or 1, 1)) / self.epochs, 1.0)
            warm = min(1.0, (progress + 1e-3) / self.warmup)
            rate = self.learning_rate * warm * 0.5 * (1 + math.cos(math.pi * progress))
            self.model.optimizer.learning_rate.assign(rate)


def loss_of(multi_label):
    return "binary_crossentropy" if multi_label else "sparse_categorical_crossentropy"


OUTLIER = -1  # the class id of a face of none of the characters (outlier exposure)


def outlier_exposure_loss(weight=0.5):
    """Sparse categorical cross-entropy on faces of the characters, and on OUTLIER faces `weight` times the
    cross-entropy to the uniform distribution over the characters (Hendrycks et al. 2019, weight 0.5 there)."""
    def loss(y_true, y_pred):
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        known = ops.take_along_axis(log_p, ops.expand_dims(ops.maximum(y_true, 0), 1), axis=1)[:, 0]
        return -ops.where(y_true == OUTLIER, weight * ops.mean(log_p, axis=1), known)

    return loss


def balanced_class_weights(y, n_classes):
    """Weights n / (n_classes * count) per class id, so rare characters count as much as frequent ones."""
    counts = np.bincount(y, minlength=n_classes)
    return {i: len(y) / (n_classes * count) for i, count in enumerate(counts) if count}


def train_classifier(backbone_name, n_outputs, train, val, image_size, multi_label, strategy=None, epochs=40,
                     finetune_epochs=10, finetune_layers=60, learning_rate=1e-3, finetune_learning_rate=1e-4,
                     batch_size=32, patience=5, class_weight=None, seed=42, backup_dir=None, resume=False,
                     train_from=None, outliers=(), outlier_weight=0.5, exclusive_groups=()):
    """Build and train a classifier on `train` and `val`, each a `(paths, targets)` pair; returns (model, history).

    Pretrained backbone: `epochs` of the head on cached frozen features, then `finetune_epochs` of the top
    `finetune_layers` backbone layers with augmentation. With `train_from` (see build_classifier) the head, the
    backbone's layers above that layer included, learns on cached activations of the training images and their
    mirrors, its learning rate falling along a cosine over `epochs`. From scratch: `epochs + finetune_epochs` end
    to end. `class_weight`: {class id: weight} for the loss of single-label training. Single-label training keeps
    the epoch with the best validation accuracy, multi-label the one with the lowest validation loss.
    `outliers`: paths of faces of none of the classes, trained with outlier_exposure_loss(`outlier_weight`)
    (single-label only; its training accuracy counts them as wrong, validation has none).
    `exclusive_groups` (multi-label): groups of tags trained with a softmax each (build_classifier) and
    grouped_crossentropy.
    """
    from_scratch = backbone_name in SCRATCH_BACKBONES
    train_from = None if from_scratch else train_from
    outliers = [str(path) for path in outliers]
    head_data, callbacks = None, ()
    if train_from:
        (train_paths, y_train), (val_paths, y_val) = train, val
        # Each list apart, so the activations of the characters' faces come from the cache of runs without outliers.
        parts = [(train_paths, False), (train_paths, True)] + [(outliers, flip) for flip in (False, True) if outliers]
        *x_train, x_val = lower_features(backbone_name, image_size, parts + [(val_paths, False)], train_from)
        y_outliers = np.full(len(outliers), OUTLIER)
        y_head = [y_train, y_train] + ([y_outliers, y_outliers] if outliers else [])
        head_data = ((np.concatenate(x_train), np.concatenate(y_head)), (x_val, y_val))
        callbacks = (HeadCosineSchedule(learning_rate, epochs),)
    if outliers:
        train = (list(train[0]) + outliers, np.concatenate([train[1], np.full(len(outliers), OUTLIER)]))
    if not train_from and not from_scratch:
        head_data = tuple((backbone_features(backbone_name, image_size, paths), targets) for paths, targets in (train, val))
    return trainer.fit(
        lambda: build_classifier(backbone_name, n_outputs, image_size, multi_label, train_from=train_from,
                                 exclusive_groups=exclusive_groups),
        lambda batch: image_dataset(train[0], train[1], image_size=image_size, batch_size=batch, training=True,
                                    cache=True, seed=seed),
        lambda batch: image_dataset(val[0], val[1], image_size=image_size, batch_size=batch, cache=True),
        loss=(outlier_exposure_loss(outlier_weight) if outliers else
              grouped_crossentropy(exclusive_groups, n_outputs) if multi_label and exclusive_groups else
              loss_of(multi_label)), strategy=strategy,
        epochs=epochs, finetune_epochs=finetune_epochs, finetune_layers=finetune_layers, learning_rate=learning_rate,
        finetune_learning_rate=finetune_learning_rate, batch_size=batch_size, patience=patience,
        from_scratch=from_scratch, head_data=head_data, class_weight=class_weight, backup_dir=backup_dir,
        resume=resume, callbacks=callbacks,
        # One class per image: keep the epoch that names most validation images right. Its validation loss
        # rises sooner (confident mistakes): on characters20 it was lowest at epoch 3 of 8.
        **({} if multi_label else dict(metrics=["accuracy"], monitor="val_accuracy", mode="max")))


def average_models(models, name):
    """One model whose output is the mean of the outputs of `models` (an ensemble of classifiers trained with
    different seeds; each member keeps its own backbone and head, nested as `member_<i>`); one model is returned
    as it is."""
    if len(models) == 1:
        return models[0]
    members = [keras.Model(model.input, model.output, name=f"member_{i}") for i, model in enumerate(models)]
    image = keras.Input(models[0].input.shape[1:], name="image")
    return keras.Model(image, layers.Average(name="average")([member(image) for member in members]), name=name)


def predict_images(model, images, image_size, batch_size=64, flip=False):
    """Class or tag probabilities (n, n_outputs) of paths or RGB arrays, each prepared as in training
    (animeml.core.images); `flip` averages them with those of the mirrored images (test-time augmentation)."""
    forward = trainer.forward_pass(model)
    outputs = []
    for i in range(0, len(images), batch_size):
        batch = image_batch(images[i:i + batch_size], image_size, np.uint8)
        probabilities = forward(batch).numpy()
        if flip:
            probabilities = (probabilities + forward(np.ascontiguousarray(batch[:, :, ::-1])).numpy()) / 2
        outputs.append(probabilities)
    return np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]), np.float32)


def name_faces(model, names, image, boxes, image_size, margin=0.1, flip=False):
    """The best character name and its softmax confidence for each face box of an RGB image."""
    from animeml.core.faces import crop_faces

    probabilities = predict_images(model, crop_faces(image, boxes, margin), image_size, flip=flip)
    return [names[i] for i in probabilities.argmax(axis=1)], probabilities.max(axis=1, initial=0.0)


def load_model(path):
    """The saved model and its sidecar dict (animeml.core.store.load_model)."""
    return store.load_model(path)


def class_report(y_true, y_pred, labels):
    """Accuracy and per-class precision, recall, F1 and support of a single-label prediction (class ids)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    ids = np.arange(len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    per_class = pd.DataFrame({"label": labels, "precision": precision, "recall": recall, "f1": f1,
                              "support": support})
    return float(accuracy_score(y_true, y_pred)), per_class


def classification_scores(y_true, scores, k=5):
    """Top-1 and top-`k` accuracy and macro-F1 (over the classes present in `y_true` or predicted) of class
    scores (n, n_classes): probabilities, or any score where higher means more likely."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(y_true))[None]
    return {name: float(value[0]) for name, value in resampled_scores(y_true, top, scores.shape[1], rows, k).items()}


def resampled_scores(y_true, top, n_classes, indices, k=5):
    """classification_scores of each resample (row of `indices`, resamples x rows), given each row's `top`
    classes (rows x k, best first). Macro-F1 is sklearn's f1_score(average="macro", zero_division=0): the mean F1
    over the classes a resample has in its truth or its predictions."""
    hit = top == y_true[:, None]
    predicted, truth = top[:, 0][indices], y_true[indices]
    offsets = np.arange(len(indices))[:, None] * n_classes

    def per_class(ids, weights=None):
        return np.bincount((offsets + ids).ravel(), None if weights is None else weights.ravel(),
                           minlength=len(indices) * n_classes).reshape(len(indices), n_classes)

    true_positives = per_class(truth, hit[:, 0][indices].astype(float))
    true, named = per_class(truth), per_class(predicted)
    present = (true + named) > 0
    f1 = f1_from_counts(true_positives, named - true_positives, true - true_positives)
    return {"top1": hit[:, 0][indices].mean(axis=1), f"top{k}": hit.any(axis=1)[indices].mean(axis=1),
            "macro_f1": f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)}


def scores_with_intervals(y_true, scores, n_boot=1000, seed=0, level=0.95, k=5):
    """classification_scores and, for each, `<name>_low`/`<name>_high`: a percentile bootstrap interval over
    resampled rows (the same resamples for every model scored with the same `seed` on the same rows)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    point = classification_scores(y_true, scores, k)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    indices = np.random.default_rng(seed).integers(0, len(y_true), size=(n_boot, len(y_true)))
    samples = bootstrap_samples(lambda block: resampled_scores(y_true, top, scores.shape[1], block, k), indices)
    tail = (1 - level) / 2 * 100
    result = {}
    for name, value in point.items():
        result[name] = value
        result[f"{name}_low"], result[f"{name}_high"] = (float(v) for v in np.percentile(samples[name],
                                                                                          [tail, 100 - tail]))
    return result


def nearest_neighbour_scores(train_features, y_train, features, n_classes):
    """A nearest-neighbour classifier on frozen features: for each row of `features`, the highest cosine
    similarity to a training face of each class (n, n_classes); its argmax is the nearest face's class."""
    def unit(x):
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(features) @ unit(train_features).T
    scores = np.full((len(features), n_classes), -np.inf, np.float32)
    for label in np.unique(y_train):
        scores[:, label] = similarity[:, np.asarray(y_train) == label].max(axis=1)
    return scores


def plot_confusion(y_true, y_pred, labels, path, title):
    """Confusion matrix (rows true, columns predicted) as a PNG, written atomically."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = Figure(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=np.arange(len(labels)), display_labels=labels,
                                            ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def read_image_labels(path):
    """`file,character[,kind]` rows (as ../shared/data/characters/labels.csv) -> {image file name: character};
    with a `kind` column only the `illustration` rows."""
    path = Path(path)
    table = read_csv(path, "labels CSV", ("file", "character"), dtype=str)
    if "kind" in table.columns:
        table = table[table["kind"] == "illustration"]
    return dict(zip(table["file"].map(lambda file: Path(file).name), table["character"]))


def character_hits(faces, labels, unknown_threshold):
    """One row per labelled image (`file`, `with_face`, `found`, `found_confident`): whether any face was found,
    whether the image's character is among the faces' best guesses, and among the guesses whose confidence
    reaches `unknown_threshold`. `faces`: one row per face with `file`, `best_character` and `confidence`."""
    found = {file: group for file, group in faces.groupby("file")}
    rows = []
    for file, character in labels.items():
        group = found.get(file, faces.iloc[:0])
        confident = group[group["confidence"] >= unknown_threshold]
        rows.append({"file": file, "with_face": len(group) > 0, "found": character in set(group["best_character"]),
                     "found_confident": character in set(confident["best_character"])})
    return pd.DataFrame(rows, columns=["file", "with_face", "found", "found_confident"])


def character_hit_rates(faces, labels, unknown_threshold):
    """The shares of labelled images (see character_hits) with any face (detection recall), with the character
    found counting every face by its best guess, and counting only faces that reach `unknown_threshold`."""
    rates = character_hits(faces, labels, unknown_threshold)[["with_face", "found", "found_confident"]].mean()
    return {"images": len(labels), "detection_recall": float(rates["with_face"]),
            "character_found": float(rates["found"]), "character_found_with_unknown": float(rates["found_confident"])}
