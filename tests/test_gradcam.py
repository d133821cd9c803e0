import json
import runpy
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core.paths import ROOT, SHARED

SCRIPT = ROOT / "AnimeScorePredictionOnlyPoster" / "02_gradcam.py"
IMAGE_SIZE = (64, 48)


@pytest.fixture(scope="module")
def posters():
    """Twelve real posters with made-up scores, four of them in the test split."""
    index = SHARED / "data" / "posters" / "posters.csv"
    if not index.exists():
        pytest.skip(f"{SHARED} (the real data folder) is absent")
    files = pd.read_csv(index).drop_duplicates("anime_id").head(12)
    return pd.DataFrame({
        "anime_id": files["anime_id"].to_numpy(),
        "image_path": [str(SHARED / "data" / "posters" / "images" / f) for f in files["file"]],
        "score": np.linspace(5.0, 9.0, len(files)), "name": [f"anime {i}" for i in range(len(files))],
        "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 4,
    })


@pytest.fixture(scope="module")
def vision_model(posters, tmp_path_factory):
    """A tiny vision model (small_cnn backbone) trained for a few steps, saved with its sidecar."""
    import keras

    from animeml.core.backbones import build_backbone
    from animeml.core.store import save_model
    from animeml.core.images import image_dataset
    from animeml.score.models import build_vision_model, make_sidecar, write_sidecar

    keras.utils.set_random_seed(0)
    model = build_vision_model(build_backbone("small_cnn", IMAGE_SIZE), score_mean=7.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(image_dataset(posters["image_path"], posters["score"], image_size=IMAGE_SIZE, batch_size=4),
              epochs=3, verbose=0)
    # Grad-CAM keeps what pushes the score up (ReLU): with a positive score kernel over the non-negative
    # pooled features, some region must, so the maps of this tiny model cannot be all zero by chance.
    head = model.get_layer("score")
    head.kernel.assign(np.abs(np.asarray(head.kernel)) + 0.01)
    path = tmp_path_factory.mktemp("models") / "anime_vision_only_model.h5"
    save_model(model, path)
    write_sidecar(path, make_sidecar("vision", 7.0, backbone="small_cnn", image_size=IMAGE_SIZE))
    return path


def test_flat_view_predicts_like_the_model_and_maps_follow_the_poster(vision_model, posters):
    from animeml.score.gradcam import METHODS, TARGET, class_activation_maps, flat_view, resize_map
    from animeml.core.images import load_image
    from animeml.score.models import load_score_model

    model, _ = load_score_model("vision", vision_model)
    flat = flat_view(model)
    assert TARGET in [layer.name for layer in flat.layers]
    images = np.stack([load_image(p, IMAGE_SIZE).numpy() for p in posters["image_path"][:3]])
    np.testing.assert_allclose(flat.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    poster = np.asarray(Image.open(posters["image_path"][0]))
    for method in METHODS:
        maps = class_activation_maps(flat, images, method)
        assert maps.shape == (3, *flat.get_layer(TARGET).output.shape[1:3])
        heatmap = resize_map(maps[0], *poster.shape[:2])
        assert heatmap.shape == poster.shape[:2]
        assert heatmap.std() > 0.01 and 0 <= heatmap.min() and heatmap.max() <= 1


def test_heat_statistics_locate_the_heat():
    from animeml.score.gradcam import heat_statistics

    heatmap = np.zeros((100, 80), np.float32)
    heatmap[40:60, 30:50] = 1.0  # all heat in the centre, inside the face box below
    faces = np.array([[20, 30, 40, 40, 1.0]], np.float32)
    stats = heat_statistics(heatmap, faces)
    assert stats["centre_heat_share"] == pytest.approx(1.0)
    assert stats["centre_area_share"] == pytest.approx(0.25)
    assert stats["face_heat_share"] == pytest.approx(1.0)
    assert stats["face_area_share"] == pytest.approx(40 * 40 / (100 * 80))
    uniform = heat_statistics(np.ones((100, 80)), faces)
    assert uniform["face_heat_share"] == pytest.approx(uniform["face_area_share"])
    assert heat_statistics(heatmap, np.zeros((0, 5)))["face_heat_share"] == 0


def test_pick_examples_takes_best_worst_and_typical():
    from animeml.score.gradcam import pick_examples

    table = pd.DataFrame({"score": np.zeros(9), "predicted": np.arange(9.0)})
    picked = pick_examples(table, per_group=2)
    assert picked.loc[picked["group"] == "best", "predicted"].tolist() == [0, 1]
    assert picked.loc[picked["group"] == "worst", "predicted"].tolist() == [8, 7]
    assert sorted(picked.loc[picked["group"] == "typical", "predicted"]) == [3, 4]


def test_gradcam_step_writes_overlays_grid_and_csv(vision_model, posters, tmp_path, monkeypatch):
    from animeml.core.table import read_merged

    data = tmp_path / "data"
    (data / "splits").mkdir(parents=True)
    posters.rename(columns={"anime_id": "group"})[["group", "split"]].to_csv(data / "splits" / "score_split.csv",
                                                                          index=False)
    merged = posters.drop(columns="split").assign(genres="Action", synopsis="text", episodes=12)
    for column in ["post_members", "post_popularity", "post_rank", "post_favorites", "post_scored_by"]:
        merged[column] = 1
    merged.to_csv(data / "ani_data_merged.csv", index=False)
    assert len(read_merged(data / "ani_data_merged.csv")) == len(posters)
    extra = tmp_path / "extra.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 50, 3), dtype=np.uint8)).save(extra)

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(data))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--model", str(vision_model), "--per-group", "1",
                                      "--merged", str(data / "ani_data_merged.csv"), "--out", str(tmp_path / "out"),
                                      "--images", str(extra)])
    runpy.run_path(str(SCRIPT), run_name="__main__")

    table = pd.read_csv(tmp_path / "out" / "gradcam_posters.csv")
    assert sorted(table["group"].unique()) == ["best", "extra", "typical", "worst"]
    assert len(table) == 4 * 2  # four posters, two methods
    assert set(table.loc[table["group"] != "extra", "anime_id"]) <= set(posters.loc[posters["split"] == "test",
                                                                                   "anime_id"])
    assert table.loc[table["group"] == "extra", "true_score"].isna().all()
    shares = table[["centre_heat_share", "face_heat_share", "face_area_share"]]
    assert ((shares >= 0) & (shares <= 1 + 1e-6)).all().all()
    for row in table.itertuples():
        overlay = Image.open(tmp_path / "out" / row.overlay_png)
        assert overlay.size == Image.open(row.image_path).size
    assert (tmp_path / "out" / "gradcam_grid.png").stat().st_size > 0
    assert json.loads(vision_model.with_suffix(".json").read_text())["image_size"] == list(IMAGE_SIZE)
    record, = [json.loads(p.read_text()) for p in (data / "runs").glob("poster_02_gradcam_*.json")]
    assert record["settings"]["per_group"] == 1 and record["inputs"]["model"] and record["inputs"]["merged"]
    assert record["metrics"]["posters_explained"] == 4
    assert set(record["metrics"]["mean_shares"]) == set(table["method"]) == {"gradcam", "gradcam++"}
    assert 0 <= record["metrics"]["test_mae"] < 10 and record["metrics"]["train_mean_baseline_mae"] >= 0
