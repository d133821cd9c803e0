"""The three score models and their files; they train through animeml.core.trainer.

    vision: image -> score                       data/models/anime_vision_only_model.h5
    hybrid: image + metadata + synopsis -> score data/models/anime_hybrid_model.h5
    text:   metadata + synopsis -> score         data/models/anime_text_model.h5

Each .h5 has a sidecar JSON of the same stem (backbone, image size, inputs, metadata encoder, ...) so that
animeml.score.features.model_inputs can rebuild its inputs for new rows. The text model's score blends in a
gradient boosting model kept beside it (anime_text_model_boosting.joblib, its weight in the sidecar): load_score_model
and predict_scores take care of it. The hybrid model is the trained text
model (frozen, nested as "text_model"), recalibrated to the poster rows by a trainable line fit on the training
posters (they are mostly top-rated anime, in a narrow score range the text model was not trained for), plus a
poster correction that starts at zero: before any training it is the calibrated text model, and training can only
move it where validation agrees.
"""
from pathlib import Path

import joblib
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from animeml.core import paths, store, trainer
from animeml.core.feature_cache import backbone_features
from animeml.core.images import drop_unreadable, image_dataset
from animeml.core.io import PipelineError, atomic_path
from animeml.core.table import read_merged
from animeml.score.features import (MODEL_INPUTS, encode_metadata, metadata_layout, model_inputs, model_path,
                                    score_split)

FROM_SCRATCH = ("small_cnn",)  # backbones without pretrained weights: trained whole from the start


def reports_path():
    return paths.reports_dir() / "score"


def make_sidecar(kind, score_mean, encoder=None, backbone=None, image_size=None, embedding_model="minilm"):
    """What a saved model needs beside its weights to score new rows (see animeml.score.features)."""
    columns, groups = metadata_layout(encoder) if encoder else ([], {})
    return {
        "kind": kind, "inputs": MODEL_INPUTS[kind], "backbone": backbone,
        "image_size": list(image_size) if image_size else None,
        "with_post_release": any(group.startswith("post_") for group in groups),
        "embedding_model": embedding_model if "synopsis" in MODEL_INPUTS[kind] else None,
        "metadata_columns": columns, "input_groups": groups, "encoder": encoder, "score_train_mean": score_mean,
    }


def report_title(name, with_post_release):
    """Every title of a model that saw post-release fields says so."""
    return f"{name} (WITH post-release fields: members, popularity, rank, favorites, scored by)" \
        if with_post_release else f"{name} (pre-release inputs only)"


NEIGHBOUR_ARRAYS = ["ids", "scores", "vectors"]  # of encoder["neighbours"]: kept in <model stem>_neighbours.npz
SYNOPSIS_COMPONENTS = 32  # principal components of the synopsis embedding that the gradient boosting sees


def boosting_path(path):
    return store.companion(path, "_boosting.joblib")


def fit_boosting(inputs, scores, seed=0):
    """Gradient boosting on the text model's inputs (metadata + the top principal components of the synopsis
    embedding), early-stopped on a slice of the training rows. Its errors differ from the MLPs': step 04 blends
    it in with a weight chosen on validation."""
    metadata_dim = inputs["metadata"].shape[1]
    features = np.hstack([inputs["metadata"], inputs["synopsis"]])
    columns = ColumnTransformer([
        ("metadata", "passthrough", slice(0, metadata_dim)),
        ("synopsis", PCA(min(SYNOPSIS_COMPONENTS, features.shape[1] - metadata_dim), random_state=seed),
         slice(metadata_dim, features.shape[1]))])
    boosting = HistGradientBoostingRegressor(max_iter=1000, learning_rate=0.05, early_stopping=True,
                                             validation_fraction=0.1, n_iter_no_change=30, random_state=seed)
    return make_pipeline(columns, boosting).fit(features, scores)


def write_boosting(path, boosting):
    with atomic_path(boosting_path(path)) as tmp:
        joblib.dump(boosting, tmp)


def blended_scores(network_scores, inputs, sidecar):
    """The network's scores, blended with the text model's gradient boosting where its sidecar has one."""
    boosting = sidecar.get("boosting")
    if not boosting:
        return network_scores
    # One thread: each of its few hundred trees is a parallel region too small to share, and on a busy 2-core
    # machine OpenMP's waits made 690 rows take 1-7 s instead of 0.05 s (the same scores).
    with threadpool_limits(1, user_api="openmp"):
        boosted = boosting["model"].predict(np.hstack([inputs["metadata"], inputs["synopsis"]]))
    return (1 - boosting["weight"]) * network_scores + boosting["weight"] * boosted


def write_sidecar(path, sidecar, run=None):
    """<model>.json (with the run record `run`), and the train synopsis vectors of the neighbours group (if any)
    in <model>_neighbours.npz."""
    neighbours = (sidecar["encoder"] or {}).get("neighbours")
    if neighbours:
        arrays_path = store.companion(path, "_neighbours.npz")
        with atomic_path(arrays_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{name: neighbours[name] for name in NEIGHBOUR_ARRAYS})
        stored = {k: v for k, v in neighbours.items() if k not in NEIGHBOUR_ARRAYS}
        sidecar = {**sidecar, "encoder": {**sidecar["encoder"], "neighbours": {**stored, "file": arrays_path.name}}}
    store.write_sidecar(path, {**sidecar, **({"run": run} if run is not None else {})})


def save_score_model(model, path, sidecar, run=None):
    """The model's .h5 and its sidecar (with the run record) in the model store."""
    store.save_model(model, path)
    write_sidecar(path, sidecar, run)


def load_score_model(kind, path=None):
    """(model, sidecar) of a trained model, with the gradient boosting and neighbour vectors kept beside it; a
    missing or corrupt file raises animeml.core.store.ModelMissing naming it."""
    path = Path(path or model_path(kind))
    model, sidecar = store.load_model(path)
    try:
        if sidecar.get("boosting"):
            sidecar["boosting"]["model"] = joblib.load(path.with_name(sidecar["boosting"]["file"]))
        neighbours = (sidecar.get("encoder") or {}).get("neighbours")
        if neighbours:
            with np.load(path.with_name(neighbours["file"])) as arrays:
                neighbours.update({name: arrays[name] for name in NEIGHBOUR_ARRAYS})
    except (OSError, ValueError, KeyError) as err:
        raise store.ModelMissing(f"a file beside model {path} is missing or corrupt ({type(err).__name__}: "
                                 f"{err})") from None
    return model, sidecar


# --- models ----------------------------------------------------------------------------------------------

def score_head(x, score_mean, name="score"):
    """A linear score that starts as the training mean: the first epochs are not spent finding it, and the
    untrained model is the mean baseline."""
    return layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(score_mean),
                        dtype="float32", name=name)(x)


def build_text_model(metadata_dim, synopsis_dim, score_mean, hidden=256, dropout=0.5, name="text_model"):
    """An MLP over metadata + synopsis; step 04 averages several of them trained apart (average_models)."""
    metadata = keras.Input((metadata_dim,), name="metadata")
    synopsis = keras.Input((synopsis_dim,), name="synopsis")
    x = layers.Concatenate()([metadata, synopsis])
    # layer names carry the model's: the .h5 of a hybrid holds every member's weights in one group
    x = layers.Dropout(dropout)(layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(x))
    x = layers.Dropout(dropout)(layers.Dense(hidden // 4, activation="relu", name=f"{name}_bottleneck")(x))
    return keras.Model({"metadata": metadata, "synopsis": synopsis}, score_head(x, score_mean, name=f"{name}_score"),
                       name=name)


def average_models(members, name="text_model"):
    """One model whose score is the mean of `members` (same named inputs), each nested as it was trained.
    Members trained independently (own seed, shuffling and early stop) average better than the same number
    trained jointly as one model (validation MAE 0.475 vs 0.481)."""
    inputs = {key: keras.Input(tensor.shape[1:], name=key) for key, tensor in members[0].input.items()}
    scores = [member(inputs) for member in members]
    return keras.Model(inputs, layers.Average(name="score")(scores) if len(scores) > 1 else scores[0], name=name)


def build_vision_model(backbone, score_mean, dropout=0.3):
    image = keras.Input(backbone.input.shape[1:], name="image")
    features = layers.Dropout(dropout)(backbone(image))
    return keras.Model(image, score_head(features, score_mean), name="vision_model")


def build_hybrid_model(backbone, text_model, calibration=(1.0, 0.0), hidden=64, dropout=0.3):
    """slope * text model score (frozen) + intercept, `calibration` = (slope, intercept) at start, + a correction
    from poster features, metadata and synopsis that starts at zero."""
    image = keras.Input(backbone.input.shape[1:], name="image")
    metadata = keras.Input(text_model.input["metadata"].shape[1:], name="metadata")
    synopsis = keras.Input(text_model.input["synopsis"].shape[1:], name="synopsis")
    text_model.trainable = False
    text_score = text_model({"metadata": metadata, "synopsis": synopsis})
    x = layers.Concatenate()([layers.Dropout(dropout)(backbone(image)), metadata, synopsis])
    x = layers.Dropout(dropout)(layers.Dense(hidden, activation="relu")(x))
    correction = score_head(x, 0.0, name="poster_correction")
    slope, intercept = calibration
    calibrated = layers.Dense(1, kernel_initializer=keras.initializers.Constant(slope),
                              bias_initializer=keras.initializers.Constant(intercept), dtype="float32",
                              name="text_calibration")
    score = layers.Add(dtype="float32", name="score")([calibrated(text_score), correction])
    return keras.Model({"image": image, "metadata": metadata, "synopsis": synopsis}, score, name="hybrid_model")


def array_dataset(inputs, targets, batch_size=64, training=False, seed=0):
    """tf.data batches of in-memory inputs (dict name -> array) and float targets; shuffled when training."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, np.asarray(targets, np.float32)))
    if training:
        ds = ds.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def poster_calibration(text_scores, scores):
    """(slope, intercept) of the least-squares line from text model scores to true scores on poster rows."""
    slope, intercept = np.polyfit(np.asarray(text_scores, float), np.asarray(scores, float), 1)
    return float(slope), float(intercept)


def predict_scores(model, sidecar, table, image_paths=None, batch_size=32, inputs=None):
    """1-D predicted scores for the rows of `table` (and their posters, for a model with an image input); the
    text model's gradient boosting blended in where it has one. `inputs`: model_inputs(table, sidecar) when the
    caller has them already."""
    inputs = model_inputs(table, sidecar) if inputs is None else inputs
    if "image" in sidecar["inputs"]:
        ds = image_dataset(list(image_paths), features=inputs or None, image_size=sidecar["image_size"],
                           batch_size=batch_size)
    else:
        ds = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    return blended_scores(model.predict(ds, verbose=0).reshape(-1), inputs, sidecar)


def poster_problem(path):
    """Why the poster at `path` cannot be scored ("" when it can): missing, or not decodable by tf.data."""
    path = Path(path)
    if not path.is_file():
        return f"no poster: {path} not found"
    try:
        tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError:
        return f"poster {path} is not a readable JPEG, PNG, GIF or BMP image"
    return ""


NAME_ONLY_GROUPS = ("title", "title_words", "anime_id")  # every row has them: nothing about the anime itself


def nothing_known(table, sidecar, metadata=None):
    """Rows with no synopsis and every metadata group but the title and id missing (franchise included): a score
    for them would only echo the mean. `metadata`: the rows' encoding when the caller has it already."""
    metadata = encode_metadata(table, sidecar["encoder"])[0] if metadata is None else metadata
    missing = [metadata[:, end - 1] == 1 for group, (_, end) in sidecar["input_groups"].items()
               if group not in NAME_ONLY_GROUPS]
    return np.logical_and.reduce(missing) & table["synopsis"].isna().to_numpy()


# --- the poster models (steps 05 and OnlyPoster/01) -------------------------------------------------------

def scored_poster_rows(merged_csv):
    """Poster rows of the merged table that have a score, and the shared split of each."""
    merged_csv = Path(merged_csv)
    if not merged_csv.exists():
        raise PipelineError(f"{merged_csv} not found")
    table = read_merged(merged_csv)
    table = drop_unreadable(table[table["score"].notna()], "image_path", "scored posters")
    split = score_split(table["anime_id"])
    if not ((split == "train").any() and (split == "val").any()):
        raise PipelineError(f"{merged_csv}: no scored poster in the train or validation split")
    return table, split


def train_poster_model(build, table, split, inputs, image_size, strategy=None, epochs=8, finetune_epochs=4,
                       finetune_layers=20, learning_rate=1e-3, finetune_learning_rate=1e-4, batch_size=32,
                       patience=3, from_scratch=False, seed=42, backup_dir=None, resume=False, backbone_name=None,
                       weights="imagenet"):
    """Train the model `build()` makes (an image input, maybe more `inputs`) on the train posters against the
    validation posters with MSE; returns (model with its best weights, history). With `backbone_name` (the model's
    backbone, ImageNet weights) the frozen phase trains on that backbone's cached features of the un-augmented
    posters and of their mirror images, computed once for every model and run that uses them; the fine-tune phase
    sees augmented posters."""
    def data(part, training):
        rows = split == part
        return lambda batch: image_dataset(
            table.loc[rows, "image_path"], table.loc[rows, "score"].to_numpy(np.float32),
            features={k: v[rows] for k, v in inputs.items()} or None, image_size=image_size, batch_size=batch,
            training=training, cache=True, seed=seed)

    def features(part, flips=(False,)):
        """The backbone's features of the `part` posters, once per view in `flips` (True: mirrored), and the
        other inputs and scores repeated to match."""
        rows = split == part
        posters = np.concatenate([backbone_features(backbone_name, image_size, table.loc[rows, "image_path"],
                                                    weights=weights, flip=flip) for flip in flips])
        others = {k: np.concatenate([v[rows]] * len(flips)) for k, v in inputs.items()}
        return ({**others, "image": posters} if inputs else posters,
                np.tile(table.loc[rows, "score"].to_numpy(np.float32), len(flips)))

    cached = backbone_name is not None and weights == "imagenet" and not from_scratch
    return trainer.fit(build, data("train", True), data("val", False), loss="mse", metrics=["mae"],
                       strategy=strategy, epochs=epochs, finetune_epochs=finetune_epochs,
                       finetune_layers=finetune_layers, learning_rate=learning_rate,
                       finetune_learning_rate=finetune_learning_rate, batch_size=batch_size, patience=patience,
                       from_scratch=from_scratch,
                       head_data=(features("train", (False, True)), features("val")) if cached else None,
                       backup_dir=backup_dir, resume=resume)


# --- baselines -------------------------------------------------------------------------------------------

def fit_baselines(train, encoder):
    """The reference models of the evaluation, fit on the training anime: a function table -> {name: predictions}
    (the metadata of a table is encoded once for both metadata models).

    The mean score; ridge and gradient boosting on the metadata encoding alone; and TF-IDF of the synopsis +
    ridge, the multimodal popularity paper's traditional benchmark (a row without synopsis gets its intercept).
    """
    metadata, scores = encode_metadata(train, encoder)[0], train["score"].to_numpy()
    synopses = train["synopsis"].fillna("")
    alphas = np.logspace(-2, 3, 11)
    ridge = RidgeCV(alphas=alphas).fit(metadata, scores)
    boosting = HistGradientBoostingRegressor(random_state=0).fit(metadata, scores)
    tfidf = GridSearchCV(  # RidgeCV's leave-one-out would build a dense n x n matrix from the sparse TF-IDF
        make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), stop_words="english"),
                      Ridge()),
        {"ridge__alpha": [0.3, 1.0, 3.0, 10.0]}, cv=3, scoring="neg_mean_absolute_error").fit(synopses, scores)
    mean = float(scores.mean())

    def predict(table):
        encoded = encode_metadata(table, encoder)[0]
        return {"mean score": np.full(len(table), mean), "metadata ridge": ridge.predict(encoded),
                "metadata gradient boosting": boosting.predict(encoded),
                "TF-IDF synopsis + ridge": tfidf.predict(table["synopsis"].fillna(""))}
    return predict
