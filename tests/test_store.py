"""The model store: one naming rule, a sidecar with the run record, one error naming a missing or corrupt file."""
import keras
import pytest

from animeml.core import store
from animeml.core.runs import RunRecord


def test_saving_h5_says_nothing_of_a_legacy_format(tmp_path, caplog):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with caplog.at_level("WARNING"):
        store.save_model(model, tmp_path / "m.h5")
        model.save(tmp_path / "direct.h5")  # Keras itself does warn
    assert [r.getMessage() for r in caplog.records if "HDF5" in r.getMessage()] and len(caplog.records) == 1
    assert (tmp_path / "m.h5").stat().st_size > 0


def test_model_round_trip_with_run_record_and_one_error_for_missing_or_corrupt_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    path = store.model_file("genres", "small_cnn_bce")
    assert path == tmp_path / "data" / "models" / "genres_small_cnn_bce.h5"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    run = RunRecord("test/step", {"seed": 42}, inputs={"nothing": tmp_path / "absent"}).finish({"f1": 0.5})
    store.save_model(model, path, {"labels": ["a", "b"]}, run=run)
    loaded, sidecar = store.load_model(path)
    assert loaded.get_weights()[0].tolist() == model.get_weights()[0].tolist()
    assert sidecar["labels"] == ["a", "b"] and sidecar["run"]["metrics"] == {"f1": 0.5}
    assert sidecar["run"]["seed"] == 42 and "python" in sidecar["run"]["versions"]
    assert list((tmp_path / "data" / "runs").glob("test_step_*.json"))

    with pytest.raises(store.ModelMissing, match="absent.h5 not found"):
        store.load_model(tmp_path / "absent.h5")
    store.sidecar_path(path).write_text("{not json")
    with pytest.raises(store.ModelMissing, match="sidecar .*genres_small_cnn_bce.json is unreadable or corrupt"):
        store.load_model(path)
    store.write_sidecar(path, {})
    path.write_bytes(b"not a model")
    with pytest.raises(store.ModelMissing, match="genres_small_cnn_bce.h5 is unreadable or corrupt"):
        store.load_model(path)
