"""Image classifiers of CharacterTagging/: one character per face crop (softmax) and many tags per illustration
(sigmoid), trained the same way by animeml.core.trainer and saved in the model store as `.h5` with a sidecar JSON
(labels, image size, thresholds, run record) that makes the saved model usable on its own.

A pretrained backbone: the head first learns on cached features of the frozen backbone (animeml.core.feature_cache),
then the top of the backbone is fine-tuned with augmentation, keeping the epoch with the best validation loss.
A from-scratch backbone (small_cnn) trains end to end with augmentation.
"""
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers

from animeml.core import store, trainer
from animeml.core.backbones import build_backbone
from animeml.core.faces import list_images
from animeml.core.feature_cache import backbone_features
from animeml.core.images import image_batch, image_dataset
from animeml.core.io import PipelineError, atomic_path

SCRATCH_BACKBONES = ("small_cnn",)


def model_path(task, backbone):
    return store.model_file(task, backbone)


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
    """Image (raw 0..255) -> backbone -> head (dropout, dense softmax for one class or sigmoid for multi-label,
    float32 under mixed precision). The head is a nested model named "head", so it can train on cached features."""
    weights = "imagenet" if pretrained and backbone_name not in SCRATCH_BACKBONES else None
    backbone = build_backbone(backbone_name, image_size=image_size, weights=weights)
    features = keras.Input(backbone.output.shape[1:], name="features")
    x = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = layers.Dense(n_outputs, activation="sigmoid" if multi_label else "softmax", dtype="float32",
                           name="outputs")(x)
    head = keras.Model(features, outputs, name="head")
    image = keras.Input(backbone.input.shape[1:], name="image")
    return keras.Model(image, head(backbone(image)), name=f"{backbone_name}_classifier")


def loss_of(multi_label):
    return "binary_crossentropy" if multi_label else "sparse_categorical_crossentropy"


def balanced_class_weights(y, n_classes):
    """Weights n / (n_classes * count) per class id, so rare characters count as much as frequent ones."""
    counts = np.bincount(y, minlength=n_classes)
    return {i: len(y) / (n_classes * count) for i, count in enumerate(counts) if count}


def train_classifier(backbone_name, n_outputs, train, val, image_size, multi_label, strategy=None, epochs=40,
                     finetune_epochs=10, finetune_layers=60, learning_rate=1e-3, finetune_learning_rate=1e-4,
                     batch_size=32, patience=5, class_weight=None, seed=42, backup_dir=None, resume=False):
    """Build and train a classifier on `train` and `val`, each a `(paths, targets)` pair; returns (model, history).

    Pretrained backbone: `epochs` of the head on cached frozen features, then `finetune_epochs` of the top
    `finetune_layers` backbone layers with augmentation. From scratch: `epochs + finetune_epochs` end to end.
    `class_weight`: {class id: weight} for the loss of single-label training.
    """
    from_scratch = backbone_name in SCRATCH_BACKBONES
    head_data = None
    if not from_scratch:
        head_data = tuple((backbone_features(backbone_name, image_size, paths), targets) for paths, targets in (train, val))
    return trainer.fit(
        lambda: build_classifier(backbone_name, n_outputs, image_size, multi_label),
        lambda batch: image_dataset(train[0], train[1], image_size=image_size, batch_size=batch, training=True,
                                    cache=True, seed=seed),
        lambda batch: image_dataset(val[0], val[1], image_size=image_size, batch_size=batch, cache=True),
        loss=loss_of(multi_label), strategy=strategy, epochs=epochs, finetune_epochs=finetune_epochs,
        finetune_layers=finetune_layers, learning_rate=learning_rate, finetune_learning_rate=finetune_learning_rate,
        batch_size=batch_size, patience=patience, from_scratch=from_scratch, head_data=head_data,
        class_weight=class_weight, backup_dir=backup_dir, resume=resume)


def predict_images(model, images, image_size, batch_size=64, flip=False):
    """Class or tag probabilities (n, n_outputs) of paths or RGB arrays, each prepared as in training
    (animeml.core.images); `flip` averages them with those of the mirrored images (test-time augmentation)."""
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
