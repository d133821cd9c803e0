"""Image classifiers of CharacterTagging/: one character per face crop (softmax) and many tags per illustration
(sigmoid), trained the same way and saved as `.h5` with a sidecar JSON (labels, image size, thresholds) that
makes the saved model usable on its own.

Training a pretrained backbone: the head first learns on cached features of the frozen backbone (fast), then
the top of the backbone is fine-tuned with augmentation, keeping the epoch with the best validation loss.
A from-scratch backbone (small_cnn) trains end to end with augmentation.
"""
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers

from animeml.core.backbones import build_backbone, set_trainable
from animeml.core.io import PipelineError, atomic_path
from animeml.core.images import image_dataset
from animeml.core.faces import list_images
from animeml.core.paths import models_dir

SCRATCH_BACKBONES = ("small_cnn",)


def model_path(task, backbone):
    return models_dir() / f"{task}_{backbone}.h5"


def sidecar_path(model_file):
    return Path(model_file).with_suffix(".json")


def read_face_folders(root):
    """The moeimouto-faces layout `root/<character>/*.png|jpg` as a table of `path, character`."""
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"face folder not found: {root}")
    rows = [(str(path), folder.name) for folder in sorted(root.iterdir()) if folder.is_dir()
            for path in list_images(folder)]
    table = pd.DataFrame(rows, columns=["path", "character"])
    if table["character"].nunique() < 2:
        raise PipelineError(f"{root} needs at least two character folders with images")
    return table


def build_classifier(backbone_name, n_outputs, image_size, multi_label, pretrained=True, dropout=0.2):
    """Backbone (raw 0..255 images) -> dropout -> dense softmax (one class) or sigmoid (multi-label)."""
    weights = "imagenet" if pretrained and backbone_name not in SCRATCH_BACKBONES else None
    backbone = build_backbone(backbone_name, image_size=image_size, weights=weights)
    x = layers.Dropout(dropout, name="head_dropout")(backbone.output)
    outputs = layers.Dense(n_outputs, activation="sigmoid" if multi_label else "softmax", name="head")(x)
    return keras.Model(backbone.input, outputs, name=f"{backbone_name}_classifier")


def _loss(multi_label):
    return "binary_crossentropy" if multi_label else "sparse_categorical_crossentropy"


def balanced_class_weights(y, n_classes):
    """Weights n / (n_classes * count) per class id, so rare characters count as much as frequent ones."""
    counts = np.bincount(y, minlength=n_classes)
    return {i: len(y) / (n_classes * count) for i, count in enumerate(counts) if count}


def _fit(model, train_ds, val_ds, epochs, learning_rate, multi_label, patience, class_weight=None):
    model.compile(keras.optimizers.Adam(learning_rate), _loss(multi_label))
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop], class_weight=class_weight,
                     verbose=2)


def train_classifier(model, train, val, image_size, multi_label, from_scratch=False, head_epochs=40,
                     finetune_epochs=10, finetune_layers=60, finetune_lr=1e-4, batch_size=32, patience=5,
                     class_weight=None, seed=0):
    """Train `model` (from build_classifier) on `train` and `val`, each a `(paths, targets)` pair.

    Pretrained backbone: `head_epochs` of the head on cached frozen features, then `finetune_epochs` of the top
    `finetune_layers` backbone layers with augmentation. From scratch: `head_epochs + finetune_epochs` end to end.
    `class_weight`: {class id: weight} for the loss of single-label training.
    """
    keras.utils.set_random_seed(seed)
    train_images = image_dataset(train[0], train[1], image_size=image_size, batch_size=batch_size, training=True,
                                 cache=True, seed=seed)
    val_images = image_dataset(val[0], val[1], image_size=image_size, batch_size=batch_size, cache=True)
    if from_scratch:
        return _fit(model, train_images, val_images, head_epochs + finetune_epochs, 1e-3, multi_label, patience,
                    class_weight)

    features = keras.Model(model.input, model.get_layer("head_dropout").input)
    set_trainable(features, 0)
    plain = [image_dataset(paths, image_size=image_size, batch_size=64) for paths, _ in (train, val)]
    train_x, val_x = (features.predict(ds, verbose=0) for ds in plain)
    head = keras.Sequential([keras.Input(train_x.shape[1:]), model.get_layer("head_dropout"), model.get_layer("head")])
    _fit(head, tf.data.Dataset.from_tensor_slices((train_x, train[1])).shuffle(len(train_x), seed=seed)
         .batch(batch_size), tf.data.Dataset.from_tensor_slices((val_x, val[1])).batch(batch_size),
         head_epochs, 1e-3, multi_label, patience, class_weight)
    if finetune_epochs:
        set_trainable(features, finetune_layers)
        _fit(model, train_images, val_images, finetune_epochs, finetune_lr, multi_label, patience, class_weight)
    return model


def image_batch(images, image_size):
    """Paths or RGB uint8 arrays -> one float32 batch (n, H, W, 3) in 0..255, resized like animeml.core.images."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    batch = []
    for image in images:
        if isinstance(image, (str, Path)):
            image = tf.io.decode_image(tf.io.read_file(str(image)), channels=3, expand_animations=False)
        batch.append(tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True))
    return np.stack(batch) if batch else np.zeros((0, height, width, 3), np.float32)


def predict_images(model, images, image_size, batch_size=64, flip=False):
    """Class or tag probabilities (n, n_outputs) of paths or RGB arrays; `flip` averages them with those of the
    mirrored images (test-time augmentation)."""
    outputs = []
    for i in range(0, len(images), batch_size):
        batch = image_batch(images[i:i + batch_size], image_size)
        probabilities = model.predict(batch, verbose=0)
        if flip:
            probabilities = (probabilities + model.predict(batch[:, :, ::-1], verbose=0)) / 2
        outputs.append(probabilities)
    return np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]), np.float32)


def name_faces(model, names, image, boxes, image_size, margin=0.1, flip=False):
    """The best character name and its softmax confidence for each face box of an RGB image."""
    from animeml.core.faces import crop_faces

    probabilities = predict_images(model, crop_faces(image, boxes, margin), image_size, flip=flip)
    return [names[i] for i in probabilities.argmax(axis=1)], probabilities.max(axis=1, initial=0.0)


def load_model(path):
    """The saved model and its sidecar dict."""
    path = Path(path)
    if not path.exists() or not sidecar_path(path).exists():
        raise PipelineError(f"model {path} (and its {sidecar_path(path).name}) not found: train it first")
    return keras.models.load_model(path, compile=False), json.loads(sidecar_path(path).read_text())


def class_report(y_true, y_pred, labels):
    """Accuracy and per-class precision, recall, F1 and support of a single-label prediction (class ids)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    ids = np.arange(len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    per_class = pd.DataFrame({"label": labels, "precision": precision, "recall": recall, "f1": f1,
                              "support": support})
    return float(accuracy_score(y_true, y_pred)), per_class


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
    if not path.exists():
        raise PipelineError(f"labels CSV not found: {path}")
    table = pd.read_csv(path, dtype=str)
    if not {"file", "character"} <= set(table.columns):
        raise PipelineError(f"{path} needs the columns file,character")
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
