"""The model store: every task saves and loads its models here, each with a JSON sidecar of the same name."""
from pathlib import Path

from animeml.core.io import PipelineError, atomic_path, write_json


class ModelMissing(PipelineError):
    """A model or its sidecar is missing or corrupt; the message names the file."""


def save_model(model, path, sidecar=None):
    """Save a Keras model as `path` (.h5), and `sidecar` as the JSON of the same name, never half-written."""
    with atomic_path(path) as tmp:
        h5 = tmp.with_suffix(".h5")  # Keras picks the file format from the suffix
        try:
            model.save(h5)
            h5.replace(tmp)
        finally:
            h5.unlink(missing_ok=True)
    if sidecar is not None:
        write_json(sidecar, Path(path).with_suffix(".json"))


def sidecar_path(model_file):
    """The JSON sidecar beside a model: `x.h5` -> `x.json`."""
    return Path(model_file).with_suffix(".json")


def read_sidecar(model_file):
    """The sidecar dict of a model; a missing or corrupt one raises ModelMissing naming the file."""
    import json

    path = sidecar_path(model_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelMissing(f"model sidecar {path} not found") from None
    except (OSError, ValueError) as err:
        raise ModelMissing(f"model sidecar {path} is unreadable or corrupt ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ModelMissing(f"model sidecar {path} is corrupt (not a JSON object)")
    return data


def load_model(path, custom_objects=None):
    """The Keras model at `path` and its sidecar dict. A missing or corrupt file raises ModelMissing naming it (the
    step script adds which step makes it); the files are only read, never changed."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelMissing(f"model {path} not found")
    sidecar = read_sidecar(path)
    try:
        model = keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as err:
        raise ModelMissing(f"model {path} is unreadable or corrupt ({type(err).__name__})") from None
    return model, sidecar
