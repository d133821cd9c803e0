import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from animeml.characters.classifier import (character_hit_rates, read_face_folders, read_image_labels,
                                           resolve_train_from)
from animeml.core.io import PipelineError
from animeml.core.faces import detect_faces, load_cascade, load_rgb
from conftest import jpeg_bytes

SCRIPTS = Path(__file__).resolve().parents[1] / "CharacterTagging"
CHARACTERS = ("ahagon_umiko", "suzukaze_aoba", "yagami_kou")
ILLUSTRATIONS = ("ahagon_umiko_0.jpg", "ahagon_umiko_1.jpg", "suzukaze_aoba_0.jpg")


def run_script(name, *args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


def test_face_folders_need_two_characters(tmp_path):
    (tmp_path / "only_one").mkdir()
    (tmp_path / "only_one" / "a.jpg").write_bytes(b"")
    with pytest.raises(PipelineError, match="two character folders"):
        read_face_folders(tmp_path)
    (tmp_path / "another").mkdir()  # two folders, but the faces of one do not decode: still one character
    (tmp_path / "another" / "b.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(PipelineError, match="two character folders with images that decode"):
        read_face_folders(tmp_path)


def test_hit_rates_count_images_without_faces_as_misses():
    faces = pd.DataFrame({"file": ["a.jpg", "a.jpg", "b.jpg"], "best_character": ["x", "y", "z"],
                          "confidence": [0.9, 0.3, 0.95]})
    rates = character_hit_rates(faces, {"a.jpg": "y", "b.jpg": "y", "c.jpg": "x"}, unknown_threshold=0.5)
    assert rates["images"] == 3
    assert rates["detection_recall"] == pytest.approx(2 / 3)
    assert rates["character_found"] == pytest.approx(1 / 3)  # only a.jpg, by its second face
    assert rates["character_found_with_unknown"] == 0.0  # that face is under the threshold


def test_tiny_character_model_trains_and_names_every_face(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    faces = tmp_path / "characters" / "faces"  # the set's name, `characters`, names the model and report folder
    for character in CHARACTERS:
        (faces / character).mkdir(parents=True)
        for source in sorted((shared / "data" / "characters" / "faces" / character).glob("*.jpg"))[:8]:
            (faces / character / source.name).write_bytes(source.read_bytes())
    run_script("02_train_characters.py", "--faces-dir", faces, "--backbones", "small_cnn", "--image-size", 32,
               "--head-epochs", 1, "--finetune-epochs", 1, "--baseline-backbones", monkeypatch=monkeypatch)

    data = tmp_path / "data"
    model = data / "models" / "characters_small_cnn.h5"
    assert model.stat().st_size > 0
    assert json.loads(model.with_suffix(".json").read_text())["labels"] == list(CHARACTERS)
    metrics = pd.read_csv(data / "characters" / "metrics.csv")
    assert list(metrics["model"]) == ["majority class", "small_cnn"] and metrics["top1"].between(0, 1).all()
    assert (data / "characters" / "confusion_small_cnn.png").stat().st_size > 0
    split = pd.read_csv(data / "characters" / "split.csv")  # every file its own illustration here
    assert len(split) == 24 and set(split["split"]) == {"train", "test"}

    images = tmp_path / "illustrations"
    images.mkdir()
    for name in ILLUSTRATIONS:
        (images / name).write_bytes((shared / "data" / "characters" / "illustrations" / name).read_bytes())
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"file": [f"illustrations/{name}" for name in ILLUSTRATIONS],
                  "character": ["ahagon_umiko", "ahagon_umiko", "suzukaze_aoba"]}).to_csv(labels, index=False)
    out = tmp_path / "identified.csv"
    run_script("identify_characters.py", "--images", images, "--out", out, "--model", model, "--labels", labels,
               "--scale-factor", 1.1, "--min-neighbors", 5, "--min-size", 24, "--upscale", 1,
               monkeypatch=monkeypatch)

    rows = pd.read_csv(out)
    cascade = load_cascade()
    expected = {name: len(detect_faces(load_rgb(images / name), cascade)) for name in ILLUSTRATIONS}
    assert rows.groupby("file").size().to_dict() == {name: n for name, n in expected.items() if n}
    assert set(rows["best_character"]) <= set(CHARACTERS)
    assert ((rows["character"] == "unknown") == (rows["confidence"] < 0.5)).all()
    assert sorted(p.name for p in (tmp_path / "identified_boxes").iterdir()) == sorted(
        f"{Path(name).stem}.png" for name in ILLUSTRATIONS)
    assert "3 labelled images: a face detected in" in capsys.readouterr().out
    assert read_image_labels(labels) == {"ahagon_umiko_0.jpg": "ahagon_umiko", "ahagon_umiko_1.jpg": "ahagon_umiko",
                                         "suzukaze_aoba_0.jpg": "suzukaze_aoba"}


def test_flip_tta_averages_an_image_and_its_mirror():
    import keras
    import numpy as np

    from animeml.characters.classifier import predict_images

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(2, "softmax")])
    images = [np.random.default_rng(i).integers(0, 255, (4, 4, 3), dtype=np.uint8) for i in range(3)]
    plain = predict_images(model, images, 4)
    mirrored = predict_images(model, [image[:, ::-1] for image in images], 4)
    assert not np.allclose(plain, mirrored)
    assert np.allclose(predict_images(model, images, 4, flip=True), (plain + mirrored) / 2, atol=1e-5)


def test_detector_is_tuned_on_one_part_and_measured_on_the_other(shared, tmp_path, monkeypatch, capsys):
    import keras

    from animeml.characters.classifier import build_classifier
    from animeml.core.store import save_model

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    keras.utils.set_random_seed(0)
    model = tmp_path / "characters.h5"
    save_model(build_classifier("small_cnn", len(CHARACTERS), 32, multi_label=False), model,
               {"labels": list(CHARACTERS), "image_size": 32})
    images = tmp_path / "illustrations"
    images.mkdir()
    labelled = {}
    for character in CHARACTERS[:2]:
        for source in sorted((shared / "data" / "characters" / "illustrations").glob(f"{character}_*.jpg"))[:5]:
            (images / source.name).write_bytes(source.read_bytes())
            labelled[source.name] = character
    (images / "broken.jpg").write_bytes(b"not an image")  # one unreadable illustration among good ones
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"file": [*labelled, "broken.jpg"], "character": [*labelled.values(), CHARACTERS[0]]}).to_csv(
        labels, index=False)
    run_script("04_tune_detector.py", "--images", images, "--labels", labels, "--model", model,
               monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "skipped: " in out and "broken.jpg" in out  # one line with its reason; the run goes on without it

    split = pd.read_csv(tmp_path / "data" / "characters" / "illustration_split.csv")
    assert sorted(split["group"]) == sorted(labelled) and split["split"].value_counts().to_dict() == {"test": 6,
                                                                                                      "train": 4}
    test_characters = [labelled[file] for file in split["group"][split["split"] == "test"]]
    assert sorted(test_characters) == sorted(CHARACTERS[:2] * 3)  # stratified by character
    settings = pd.read_csv(tmp_path / "data" / "characters" / "detector_settings.csv")
    assert len(settings) == 16 and settings["tune_character_found"].between(0, 1).all()
    measured = settings[settings["role"].notna()]
    assert set(measured["role"]) <= {"chosen", "default"} and (measured["test_images"] == 6).all()
    chosen = settings[settings["role"] == "chosen"].iloc[0]
    assert chosen["tune_character_found"] == settings["tune_character_found"].max()
    assert "identify_characters.py --scale-factor" in out


def test_train_from_names_a_lite_stage_or_a_layer():
    assert resolve_train_from("efficientnet_lite0", "auto") == "block5c_add"  # the characters' default
    assert resolve_train_from("efficientnet_lite0", "stage3") == "block3b_add"  # the tagger's
    assert resolve_train_from("efficientnet_lite1", "stage3") == "block3c_add"  # Lite1 repeats stage 3 three times
    assert resolve_train_from("efficientnet_lite0", "block4a_project_bn") == "block4a_project_bn"
    assert resolve_train_from("efficientnet_lite0", "none") is None
    assert resolve_train_from("resnet50", "stage3") is None  # no Lite stages: head, then fine-tuning
