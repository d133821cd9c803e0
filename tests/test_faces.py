import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core.io import PipelineError
from animeml.core.faces import crop_faces, detect_faces, detect_faces_grid, draw_boxes, load_cascade, load_rgb

SCRIPT = Path(__file__).resolve().parents[1] / "CharacterTagging" / "01_detect_faces.py"
ILLUSTRATION = "illustrations/ahagon_umiko_0.jpg"


@pytest.fixture
def cascade(shared):
    if not (shared / "models" / "lbpcascade_animeface.xml").exists():
        pytest.skip("the anime-face cascade is absent from ../shared/models")
    return load_cascade()


def test_cascade_finds_the_face_of_a_real_illustration_and_none_in_a_flat_image(shared, cascade):
    image = load_rgb(shared / "data" / "characters" / ILLUSTRATION)
    faces = detect_faces(image, cascade)
    assert faces.shape[1] == 5 and len(faces) >= 1
    x, y, w, h, score = faces[0]
    assert w >= 24 and h >= 24 and x + w <= image.shape[1] and y + h <= image.shape[0] and score > 0
    assert detect_faces(np.full((200, 200, 3), 128, np.uint8), cascade).shape == (0, 5)
    enlarged = detect_faces(image, cascade, min_size=48, upscale=2.0)  # boxes back in original pixels
    centres = enlarged[:, :2] + enlarged[:, 2:4] / 2
    assert (np.abs(centres - (x + w / 2, y + h / 2)).max(axis=1) < w / 4).any()
    face_crop = load_rgb(shared / "data" / "characters" / "faces" / "ahagon_umiko" / "0.jpg")
    assert len(detect_faces(face_crop, cascade)) == 1


def test_a_grid_of_cascade_settings_finds_the_boxes_each_setting_finds_alone(shared, cascade):
    import itertools

    # ahagon_umiko_18 has a face at the image's edge, whose windows OpenCV clips only after grouping them
    files = ["ahagon_umiko_0.jpg", "ahagon_umiko_18.jpg", "suzukaze_aoba_0.jpg", "yagami_kou_0.jpg"]
    values = {"scale_factor": (1.05, 1.1), "min_neighbors": (3, 5), "min_size": (24, 32), "upscale": (1.0, 2.0)}
    grid = [dict(zip(values, setting)) for setting in itertools.product(*values.values())]
    found = 0
    for file in files:
        image = load_rgb(shared / "data" / "characters" / "illustrations" / file)
        for settings, boxes in zip(grid, detect_faces_grid(image, cascade, grid)):
            alone = detect_faces(image, cascade, **settings)
            assert sorted(map(tuple, boxes[:, :4].tolist())) == sorted(map(tuple, alone[:, :4].tolist())), \
                (file, settings)
            found += len(alone)
    assert found > len(files) * len(grid)  # most settings find faces, so the comparison is not of empty lists


def test_missing_cascade_is_a_one_line_error(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_cascade(tmp_path / "missing.xml")


def test_crops_are_square_clipped_and_boxes_are_drawn():
    image = np.zeros((100, 120, 3), np.uint8)
    boxes = np.array([[10, 20, 40, 40, 2.0], [90, 70, 30, 30, 1.0]], np.float32)
    crops = crop_faces(image, boxes, margin=0.1)
    assert crops[0].shape == (48, 48, 3)
    assert crops[1].shape[:2] == (100 - 67, 120 - 87)  # clipped at the bottom-right corner
    drawn = draw_boxes(image, boxes, ["a", "b"])
    assert drawn.shape == image.shape and drawn[20, 10:50].any() and not image.any()


def test_yolo_path_returns_boxes_in_xywh(shared, tmp_path):
    weights = shared / "models" / "yolov8n_int8.tflite"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes((shared / "data" / "characters" / ILLUSTRATION).read_bytes())
    # A subprocess: torch (under ultralytics) can crash when imported after TensorFlow in one process.
    # A COCO model stands in for a face model: every class counts as a "face".
    command = [sys.executable, str(SCRIPT), "--images", str(images), "--out", str(tmp_path / "out"),
               "--detector-weights", str(weights), "--conf", "0.05"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    boxes = pd.read_csv(tmp_path / "out" / "faces.csv")
    width = load_rgb(images / "a.jpg").shape[1]
    assert len(boxes) >= 1 and (boxes[["w", "h"]] > 0).all().all() and (boxes["x"] + boxes["w"] <= width + 1).all()
    assert (boxes["score"].diff().dropna() <= 0).all()  # best first
    assert len(list((tmp_path / "out" / "crops").iterdir())) == len(boxes)


def test_detect_step_writes_boxes_drawn_images_and_crops(shared, cascade, tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("ahagon_umiko_0.jpg", "ahagon_umiko_1.jpg"):
        (images / name).write_bytes((shared / "data" / "characters" / "illustrations" / name).read_bytes())
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(images / "blank.png")
    out = tmp_path / "out"
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", [SCRIPT.name, "--images", str(images), "--out", str(out)])
    runpy.run_path(str(SCRIPT), run_name="__main__")

    faces = pd.read_csv(out / "faces.csv")
    assert list(faces.columns) == ["file", "face", "x", "y", "w", "h", "score"]
    assert "ahagon_umiko_0.jpg" in set(faces["file"]) and "blank.png" not in set(faces["file"])
    assert sorted(p.name for p in (out / "boxes").iterdir()) == ["ahagon_umiko_0.png", "ahagon_umiko_1.png",
                                                                 "blank.png"]
    crops = sorted((out / "crops").iterdir())
    assert len(crops) == len(faces)
    assert all(load_rgb(crop).shape[0] == load_rgb(crop).shape[1] for crop in crops)
    record, = [json.loads(p.read_text()) for p in (tmp_path / "data" / "runs").glob("characters_01_detect_faces_*")]
    assert record["metrics"]["images"] == 3 and record["metrics"]["faces"] == len(faces)
    assert record["inputs"]["images"] and record["inputs"]["detector"] and record["settings"]["margin"] == 0.1
