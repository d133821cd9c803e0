"""The model store: every task saves and loads its models here, each with a JSON sidecar of the same name.

One naming rule: `data/models/<task>_<name>.h5` beside `<task>_<name>.json` (`anime_text_model`,
`genres_efficientnet_lite0_bce`, `characters_small_cnn`, `tags_efficientnet_lite0`). The sidecar holds what a model
needs to be used on its own (labels, image size, thresholds, encoders) and, under `run`, the run record of the step
that trained it (animeml.core.runs). Files a model keeps beside it (`<stem>_boosting.joblib`, ...) are named by
`companion`. A missing or corrupt model or sidecar raises ModelMissing naming the file; the step scripts add which
step makes it.
"""
import json
import logging
from pathlib import Path

from animeml.core import paths
from animeml.core.io import PipelineError, atomic_path, write_json


class ModelMissing(PipelineError):
    """A model or its sidecar is missing or corrupt; the message names the file."""


def model_file(task, name):
    """`data/models/<task>_<name>.h5`: the one place a model's file name is made."""
    return paths.models_dir() / f"{task}_{name}.h5"


def sidecar_path(model_path):
    """The JSON sidecar beside a model: `x.h5` -> `x.json`."""
    return Path(model_path).with_suffix(".json")


def companion(model_path, suffix):
    """A file a model keeps beside it: `x.h5`, `_boosting.joblib` -> `x_boosting.joblib`."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}{suffix}")


def save_model(model, path, sidecar=None, run=None):
    """Save a Keras model as `path` (.h5) and `sidecar` (with `run`, a run record, under "run") as the JSON of the
    same name, neither ever half-written."""
    # .h5 is the format the pipeline's users expect: Keras' "legacy HDF5" warning on each save tells them nothing.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    try:
        absl_log.setLevel(logging.ERROR)
        with atomic_path(path) as tmp:
            h5 = tmp.with_suffix(".h5")  # Keras picks the file format from the suffix
            try:
                model.save(h5)
                h5.replace(tmp)
            finally:
                h5.unlink(missing_ok=True)
    finally:
        absl_log.setLevel(level)
    if sidecar is not None or run is not None:
        write_sidecar(path, {**(sidecar or {}), **({"run": run} if run is not None else {})})


def write_sidecar(model_path, sidecar):
    write_json(sidecar, sidecar_path(model_path))


def read_sidecar(model_path):
    """The sidecar dict of a model; a missing or corrupt one raises ModelMissing naming the file."""
    path = sidecar_path(model_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelMissing(f"model sidecar {path} not found") from None
    except (OSError, ValueError) as err:
        raise ModelMissing(f"model sidecar {path} is unreadable or corrupt ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ModelMissing(f"model sidecar {path} is corrupt (not a JSON object)")
    return data


def read_model_sidecar(path):
    """The sidecar dict of the model at `path`, checked as load_model checks it but without loading the model (nor
    TensorFlow); a missing model or a missing or corrupt sidecar raises ModelMissing naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelMissing(f"model {path} not found")
    return read_sidecar(path)


def load_model(path, custom_objects=None):
    """The Keras model at `path` and its sidecar dict. A missing or corrupt file raises ModelMissing naming it; the
    files are only read, never changed."""
    import keras

    sidecar = read_model_sidecar(path)
    try:
        model = keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as err:
        raise ModelMissing(f"model {path} is unreadable or corrupt ({type(err).__name__})") from None
    return model, sidecar
