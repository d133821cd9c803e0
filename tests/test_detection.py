import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from animeml.core.io import PipelineError
from animeml.score.detection import (FACE_COLUMN, REASON_COLUMN, count_posters, load_detector,
                                    score_correlations)
from animeml.core.paths import ROOT, SHARED

SCRIPT = ROOT / "AnimeScorePredictionAllParameters" / "07_detect_objects.py"
WEIGHTS = SHARED / "models" / "yolov8n_int8.tflite"
POST_COLUMNS = ["post_members", "post_popularity", "post_rank", "post_favorites", "post_scored_by"]


class FakeDetector:
    """Two classes; finds `n` persons and one cat on the n-th image it sees, and fails on image `fail_at`."""

    names = {0: "person", 1: "cat"}

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at

    def predict(self, image, conf, verbose):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("killed")
        cls = np.array([0] * self.calls + [1], dtype=float)
        return [SimpleNamespace(boxes=SimpleNamespace(cls=SimpleNamespace(cpu=lambda: SimpleNamespace(
            numpy=lambda: cls))))]


@pytest.fixture
def posters(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return pd.DataFrame({"image_path": paths, "anime_id": [10, 11, 12, 13, 13]})


def test_counts_are_resumable_after_a_crash_and_never_counted_twice(posters, tmp_path):
    out = tmp_path / "objects.csv"
    with pytest.raises(RuntimeError):
        count_posters(posters, out, FakeDetector(fail_at=4), cascade=None, save_every=2)
    saved = pd.read_csv(out)
    assert len(saved) == 2  # the first chunk was written, the crashed one was not

    detector = FakeDetector()
    table = count_posters(posters, out, detector, cascade=None, save_every=2)
    assert detector.calls == 3  # only the posters missing from the file
    assert list(table.columns) == ["image_path", "anime_id", "person", "cat", FACE_COLUMN, REASON_COLUMN]
    assert len(table) == 5 and table["image_path"].is_unique
    counts = pd.read_csv(out)[["person", "cat", FACE_COLUMN]]
    assert (counts.dtypes == "int64").all() and (counts >= 0).all().all()
    assert counts["cat"].tolist() == [1] * 5

    again = FakeDetector()
    count_posters(posters, out, again, cascade=None)
    assert again.calls == 0


def test_an_unreadable_poster_is_one_row_with_a_reason_and_is_tried_again(posters, tmp_path):
    out = tmp_path / "objects.csv"
    broken = Path(posters["image_path"][2])
    good = broken.read_bytes()
    broken.write_bytes(good[:200])  # truncated after step 02 checked it
    detector = FakeDetector()
    table = count_posters(posters, out, detector, cascade=None)
    assert detector.calls == 4
    row = table[table["image_path"].str.endswith("2.jpg")].iloc[0]
    assert "2.jpg cannot be read" in row[REASON_COLUMN] and np.isnan(row["cat"])
    assert (table[REASON_COLUMN] == "").sum() == 4

    broken.write_bytes(good)
    again = FakeDetector()
    table = count_posters(posters, out, again, cascade=None)
    assert again.calls == 1  # only the poster that was skipped
    assert len(table) == 5 and (table[REASON_COLUMN] == "").all() and table["image_path"].is_unique


def test_correlations_leave_out_skipped_posters():
    scores = pd.Series(np.linspace(5, 9, 30), index=np.arange(30))
    counts = pd.DataFrame({"image_path": [f"{i}.jpg" for i in range(31)], "anime_id": [*range(30), 0],
                           "person": [*range(30), np.nan], FACE_COLUMN: [1] * 30 + [np.nan],
                           REASON_COLUMN: [""] * 30 + ["x.jpg is truncated"]})
    table = score_correlations(counts, scores, min_posters=20)
    person = table.set_index("class").loc["person"]
    assert person["spearman_rho"] == pytest.approx(1.0) and person["posters_with"] == 29


class ExportedDetector(FakeDetector):
    """Like an Ultralytics model of exported weights (.tflite, .onnx), which loads the file again on each read
    of `names` until its first prediction."""

    loads = 0

    @property
    def names(self):
        self.loads += 1
        return FakeDetector.names


def test_an_exported_detector_is_loaded_once_per_run_not_once_per_class(posters, tmp_path):
    detector = ExportedDetector()
    count_posters(posters, tmp_path / "objects.csv", detector, cascade=None)
    assert detector.calls == 5
    assert detector.loads == 1


def test_counts_from_other_weights_are_refused(posters, tmp_path):
    out = tmp_path / "objects.csv"
    pd.DataFrame({"image_path": ["x.jpg"], "anime_id": [1], "dog": [2], FACE_COLUMN: [0]}).to_csv(out, index=False)
    with pytest.raises(PipelineError, match="other classes"):
        count_posters(posters, out, FakeDetector(), cascade=None)


def test_correlations_per_anime_keep_only_frequent_classes():
    rng = np.random.default_rng(0)
    scores = pd.Series(np.linspace(5, 9, 40), index=np.arange(40))
    counts = pd.DataFrame({
        "image_path": [f"{i}.jpg" for i in range(40)], "anime_id": np.arange(40),
        "person": np.arange(40) // 4,  # rises with the score
        "cat": rng.integers(0, 3, 40), "dog": [1] + [0] * 39,  # noise; too rare
    })
    table = score_correlations(counts, scores, min_posters=5).set_index("class")
    assert "dog" not in table.index
    assert table.loc["person", "spearman_rho"] > 0.95 and table.loc["person", "p_fdr"] < 1e-6
    assert abs(table.loc["cat", "spearman_rho"]) < 0.5
    assert (table["n_anime"] == 40).all()


def test_missing_weights_and_failed_download_are_one_line_errors(monkeypatch):
    with pytest.raises(PipelineError, match="not found"):
        load_detector("no/such/weights.tflite")
    def offline(*args, **kwargs):
        raise ConnectionError("Download failure. Environment may be offline.")

    # a stand-in module: importing torch after TensorFlow in one process can crash, and no download is tried
    monkeypatch.setitem(sys.modules, "ultralytics", SimpleNamespace(YOLO=offline))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with pytest.raises(PipelineError, match="yolov8n_int8.tflite"):
        load_detector("yolov8n.pt")


def test_detect_step_counts_real_posters_with_the_tflite_model(tmp_path):
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} is absent")
    index = pd.read_csv(SHARED / "data" / "posters" / "posters.csv").head(4)
    merged = pd.DataFrame({
        "anime_id": index["anime_id"], "image_path": [str(SHARED / "data" / "posters" / "images" / f)
                                                      for f in index["file"]],
        "score": [6.0, 7.0, 8.0, 9.0], "genres": "Action", "synopsis": "text", "episodes": 12,
        **{column: 1 for column in POST_COLUMNS}})
    data = tmp_path / "data"
    data.mkdir()
    merged.to_csv(data / "ani_data_merged.csv", index=False)
    env = {**os.environ, "ANIMEML_DATA_DIR": str(data)}
    command = [sys.executable, str(SCRIPT), "--weights", str(WEIGHTS), "--min-posters", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    counts = pd.read_csv(data / "anime_all_objects_detected.csv")
    assert len(counts) == 4 and "person" in counts and FACE_COLUMN in counts
    assert counts[REASON_COLUMN].isna().all()  # every poster counted
    values = counts.drop(columns=["image_path", "anime_id", REASON_COLUMN])
    assert values.shape[1] == 81 and (values.dtypes == "int64").all() and (values >= 0).all().all()
    assert values.to_numpy().sum() > 0  # real posters hold people or faces
    correlations = pd.read_csv(data / "reports" / "analysis" / "object_score_correlations.csv")
    assert set(correlations["class"]) <= set(values.columns) and correlations["spearman_rho"].between(-1, 1).all()
    assert (data / "reports" / "analysis" / "object_score_correlations.png").stat().st_size > 0
    record, = [json.loads(p.read_text()) for p in (data / "runs").glob("score_07_detect_objects_*.json")]
    assert record["metrics"]["posters"] == 4 and record["inputs"]["weights"] and record["inputs"]["merged"]
    assert set(record["metrics"]["spearman_rho"]) == set(correlations["class"])

    failed = subprocess.run([sys.executable, str(SCRIPT), "--weights", "missing.tflite"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines() == [
        "error: detector weights not found: missing.tflite"]
