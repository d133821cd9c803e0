"""Score models end to end on a tiny synthetic table: 80 anime whose score is planted in their genres, synopsis
and poster brightness (32x32 posters, small_cnn, a few epochs). The sentence model is replaced by a fake."""
import contextlib
import json
import os
import runpy
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core import paths
from animeml.score import features as score_features
from animeml.core.io import write_csv
from animeml.core.table import merge_posters
from animeml.core.io import PipelineError
from animeml.core.table import KAGGLE_COLUMNS, read_anime_table, read_kaggle_csv
from animeml.score.features import encode_metadata, fit_metadata_encoder, score_split

N_ANIME, N_POSTERS = 80, 48
SMALL = ["--backbone", "small_cnn", "--image-size", "32", "32", "--batch-size", "8"]


def no_child(texts, model):
    """embedding_ahead without its child process: fake_embed needs no cache."""
    return contextlib.nullcontext()


def fake_embed(texts, model="minilm", batch_size=64):
    """Two words of the synopsis as two dimensions; a missing synopsis is a zero row, as in embed_texts."""
    vectors = np.zeros((len(texts), 4), np.float32)
    for row, text in enumerate(texts):
        if isinstance(text, str) and text:
            vectors[row] = ["battle" in text, "comedy" in text, 1.0, 0.0]
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def kaggle_rows(ids, high, synopsis=True):
    rows = pd.DataFrame("UNKNOWN", index=range(len(ids)), columns=KAGGLE_COLUMNS)
    rows["anime_id"], rows["Name"] = ids, [f"Show {i}" for i in ids]
    rows["Genres"] = np.where(high, "Action, Drama", "Comedy")
    if synopsis:
        rows["Synopsis"] = np.where(high, "a long battle", "a school comedy")
    rows["Episodes"], rows["Type"] = "12", np.where(np.arange(len(ids)) % 2, "TV", "Movie")
    return rows


def write_poster(path, bright, seed):
    noise = np.random.default_rng(seed).integers(0, 30, (32, 32, 3))
    Image.fromarray((noise + (200 if bright else 20)).astype(np.uint8)).save(path)


@pytest.fixture
def score_data(tmp_path, monkeypatch):
    """data/raw/anime.csv, data/posters/ and data/ani_data_merged.csv in a temporary data folder."""
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(score_features, "embed_texts", fake_embed)
    monkeypatch.setattr(score_features, "embedding_ahead", no_child)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = np.arange(1, N_ANIME + 1)
    high = rng.random(N_ANIME) < 0.5
    table = kaggle_rows(ids, high)
    table["Score"] = np.round(np.where(high, 8.0, 6.0) + rng.normal(0, 0.1, N_ANIME), 2)
    paths.raw_csv().parent.mkdir(parents=True)
    table.to_csv(paths.raw_csv(), index=False)
    paths.posters_dir().mkdir()
    for anime_id, bright in zip(ids[:N_POSTERS], high):
        write_poster(paths.posters_dir() / f"{anime_id}_test_0.jpg", bright, anime_id)
    pd.DataFrame({"file": [f"{i}_test_0.jpg" for i in ids[:N_POSTERS]], "anime_id": ids[:N_POSTERS],
                  "source": "test"}).to_csv(paths.posters_dir() / "posters.csv", index=False)
    write_csv(merge_posters(paths.raw_csv(), paths.posters_dir()), paths.merged_csv())
    return tmp_path


def run_step(script, *args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    runpy.run_path(str(paths.ROOT / script), run_name="__main__")


def test_metadata_encoding_has_missing_indicators_and_train_only_vocabulary():
    train = pd.DataFrame({"genres": ["Action, Drama"] * 5 + [None], "type": ["TV"] * 5 + ["Movie"],
                          "episodes": [12, 24, 12, 13, 1, None], "name": ["A", "A 2nd Season", "B", "C", "D", "E"]})
    spec = fit_metadata_encoder(train)
    rows = pd.DataFrame({"genres": [None, "Horror"], "type": ["Movie", None], "episodes": [None, 12],
                         "name": ["X: The Movie", None]})
    X, columns, groups = encode_metadata(rows, spec)
    assert X.shape == (2, len(columns))
    assert [g[0] for g in groups.values()][1:] == [g[1] for g in groups.values()][:-1] and \
        list(groups.values())[-1][1] == len(columns)
    column = {name: X[:, i] for i, name in enumerate(columns)}
    assert list(column["genres_missing"]) == [1, 0] and list(column["genres_other"]) == [0, 1]
    assert list(column["type_other"]) == [1, 0]  # "Movie" is seen once in train: below MIN_COUNT
    assert list(column["episodes_missing"]) == [1, 0] and column["episodes"][0] == 0
    assert list(column["year_missing"]) == [1, 1] and list(column["title=movie"]) == [1, 0]
    assert column["episodes=7-13"].tolist() == [0, 1] and column["episodes=1-1"].tolist() == [0, 0]
    assert "post_members" not in groups and "post_members" in fit_metadata_encoder(train, True)["groups"]


def test_franchise_feature_uses_only_earlier_train_scores():
    """Train: ids 1 (8.0) and 3 (6.0) of one franchise; id 5 is a test anime, never given to the encoder."""
    train = pd.DataFrame({"anime_id": [1, 3, 7], "name": ["Foo", "Foo 2nd Season", "Bar"], "score": [8.0, 6.0, 5.0]})
    rows = pd.DataFrame({"anime_id": [1, 2, 4, 5, 6], "name": ["Foo", "Foo: Movie", "Foo Season 3", "Foo OVA", "Baz"]})

    def franchise(train):
        """The franchise columns of `rows`, mean and latest back on the score scale."""
        spec = fit_metadata_encoder(train)
        X, columns, groups = encode_metadata(rows, spec)
        start, end = groups["franchise"]
        got = pd.DataFrame(X[:, start:end], columns=columns[start:end], index=rows["anime_id"])
        mean, std = spec["franchise"]["scaling"]
        got[["franchise_mean", "franchise_latest"]] = got[["franchise_mean", "franchise_latest"]] * std + mean
        return got.where(got["franchise_missing"] == 0)

    got = franchise(train)
    assert list(got["franchise_missing"].isna()) == [True, False, False, False, True]  # id 1 never sees itself
    assert got.loc[2, "franchise_mean"] == pytest.approx(8.0)  # id 3 came later: left out
    assert got.loc[4, ["franchise_mean", "franchise_latest"]].tolist() == pytest.approx([7.0, 6.0])
    assert got.loc[5, "franchise_count"] == pytest.approx(np.log1p(2))
    assert got.loc[5, "franchise_mean"] == pytest.approx(7.0) and got.loc[6].isna().all()
    # a later train entry's score changes nothing of an earlier row
    later = franchise(pd.concat([train.assign(score=[8.0, 9.5, 5.0]),
                                 pd.DataFrame({"anime_id": [8], "name": ["Foo Final"], "score": [1.0]})]))
    assert later.loc[2, "franchise_mean"] == pytest.approx(8.0)
    assert later.loc[4, "franchise_mean"] == pytest.approx(8.75)
    assert later.loc[5, "franchise_count"] == pytest.approx(np.log1p(2))


def test_title_neighbours_use_only_earlier_train_titles():
    """Train ids 1 (8.0), 3 (6.0) and 7 (5.0); rows are encoded from train titles with a smaller id only."""
    train = pd.DataFrame({"anime_id": [1, 3, 7], "name": ["Foo", "Foo 2nd Season", "Bar"], "score": [8.0, 6.0, 5.0]})
    rows = pd.DataFrame({"anime_id": [1, 2, 5, 9, 9], "name": ["Foo", "Foo Movie", "Foo 2nd Season", "Bar", None]})

    def title_neighbours(train):
        spec = fit_metadata_encoder(train)
        X, columns, groups = encode_metadata(rows, spec)
        start, end = groups["title_neighbours"]
        mean, std = spec["title_neighbours"]["scaling"]
        got = pd.DataFrame(X[:, start:end], columns=columns[start:end])
        got["top_score"] = got["title_neighbours_top_score"] * std + mean
        return got

    got = title_neighbours(train)
    assert got["title_neighbours_missing"].tolist() == [1, 0, 0, 0, 1]  # id 1 has no earlier train title
    assert got.loc[1, "top_score"] == pytest.approx(8.0)  # "Foo 2nd Season" (id 3) came later: left out
    assert got.loc[2, "title_neighbours_top_similarity"] == pytest.approx(1.0)  # the same title, earlier
    assert got.loc[2, "top_score"] == pytest.approx(6.0)
    assert got.loc[3, "top_score"] == pytest.approx(5.0) and got.loc[4].drop("top_score").iloc[:6].eq(0).all()
    # a later train entry's score changes nothing of an earlier row
    later = title_neighbours(pd.concat([train, pd.DataFrame({"anime_id": [4], "name": ["Foo Movie"],
                                                             "score": [1.0]})]))
    assert later.loc[1, "top_score"] == pytest.approx(8.0)


def test_neighbours_never_count_the_row_itself(monkeypatch):
    monkeypatch.setattr(score_features, "embed_texts", fake_embed)
    monkeypatch.setattr(score_features, "embedding_ahead", no_child)
    train = pd.DataFrame({"anime_id": [1, 2, 3], "score": [9.0, 5.0, 7.0],
                          "synopsis": ["a long battle", "a school comedy", "a battle comedy"]})
    spec = {"groups": ["neighbours"], "neighbours": score_features.fit_neighbours(train, "minilm")}
    spec["neighbours"]["k"] = 1
    rows = pd.DataFrame({"anime_id": [1, 9, 10], "synopsis": ["a long battle", "a long battle", None]})
    X, columns, _ = encode_metadata(rows, spec)
    mean, std = spec["neighbours"]["scaling"]
    assert columns == ["neighbours_mean", "neighbours_similarity", "neighbours_missing"]
    assert X[0, 0] == pytest.approx((7.0 - mean) / std)  # anime 1's twin is itself: its next-nearest counts
    assert X[1, 0] == pytest.approx((9.0 - mean) / std)  # a new anime with the same synopsis gets anime 1
    assert list(X[:, 2]) == [0, 0, 1] and X[2, 0] == 0


def test_read_kaggle_csv_without_score_for_new_anime(tmp_path):
    path = tmp_path / "new.csv"
    kaggle_rows([1], np.array([True])).drop(columns=["Score"]).to_csv(path, index=False)
    with pytest.raises(PipelineError, match="Score"):
        read_kaggle_csv(path)
    table = read_kaggle_csv(path, required=["anime_id", "Name"])
    assert table["Score"].isna().all() and table.loc[0, "Name"] == "Show 1"


def test_one_split_for_poster_and_table_rows(score_data):
    table = read_anime_table(paths.raw_csv())
    everyone = score_split(table["anime_id"])
    posters = score_split(table["anime_id"][:N_POSTERS])
    assert (posters == everyone[:N_POSTERS]).all() and set(everyone) == {"train", "val", "test"}
    assert len(pd.read_csv(paths.data_dir() / "splits" / "score_split.csv")) == N_ANIME


def test_train_evaluate_and_predict(score_data, monkeypatch, capsys):
    run_step("AnimeScorePredictionAllParameters/04_train_text_model.py", "--epochs", 40, "--batch-size", 8,
             "--with-neighbours", monkeypatch=monkeypatch)  # its train vectors travel in an .npz beside each model
    # A test poster cut short after step 03 merged it: the poster steps leave it out with its reason
    poster_ids = np.arange(1, N_POSTERS + 1)
    cut = paths.posters_dir() / f"{poster_ids[score_split(poster_ids) == 'test'][0]}_test_0.jpg"
    cut.write_bytes(cut.read_bytes()[:200])
    capsys.readouterr()
    run_step("AnimeScorePredictionOnlyPoster/01_train_vision_model.py", *SMALL, "--epochs", 6,
             monkeypatch=monkeypatch)
    run_step("AnimeScorePredictionAllParameters/05_train_hybrid_model.py", *SMALL, "--epochs", 2,
             "--finetune-epochs", 1, monkeypatch=monkeypatch)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning: ")] == \
        [f"warning: 1 of {N_POSTERS} scored posters cannot be read and are left out:"] * 2
    assert err.count(f"  {cut} cannot be read: Truncated File Read") == 2  # the file and the reason, for each step
    models, reports = paths.models_dir(), paths.reports_dir() / "score"
    for stem in ["anime_text_model", "anime_vision_only_model", "anime_hybrid_model"]:
        assert (models / f"{stem}.h5").exists()
        for suffix in ["_history.csv", "_curve.png"]:
            assert (reports / f"{stem}{suffix}").exists()
    assert (models / "anime_hybrid_model_neighbours.npz").exists()
    assert (models / "anime_text_model_boosting.joblib").exists()  # blended into every text model score

    sidecar = json.loads((models / "anime_hybrid_model.json").read_text())
    assert sidecar["backbone"] == "small_cnn" and sidecar["image_size"] == [32, 32]
    assert sidecar["with_post_release"] is False and sidecar["embedding_model"] == "minilm"
    assert list(sidecar["input_groups"].values())[-1][1] == len(sidecar["metadata_columns"])
    hybrid = keras.models.load_model(models / "anime_hybrid_model.h5", compile=False)
    assert set(hybrid.input) == {"image", "metadata", "synopsis"}
    assert hybrid.get_layer("backbone") is not None and hybrid.get_layer("text_model") is not None

    run_step("AnimeScorePredictionAllParameters/06_evaluate.py", "--n-boot", 50, monkeypatch=monkeypatch)
    metrics = pd.read_csv(reports / "score_metrics.csv").set_index(["rows", "model"])
    everyone = [r for r in metrics.index.levels[0] if r.startswith("All test anime")][0]
    text, mean = metrics.loc[(everyone, "text model")], metrics.loc[(everyone, "mean score (baseline)")]
    assert text["Pearson"] > 0.9 and text["MAE"] < mean["MAE"] / 2  # the planted genre/synopsis signal
    posters = [r for r in metrics.index.levels[0] if r.startswith("Poster")][0]
    models_on_posters = set(metrics.loc[posters].index)
    assert {"hybrid model (small_cnn)", "vision-only model (small_cnn)", "text model"} <= models_on_posters
    predictions = pd.read_csv(reports / "test_predictions.csv")
    poster_rows = predictions[predictions["row_set"] == "poster"]
    assert poster_rows["image_path"].notna().all() and poster_rows["pred_hybrid_model_small_cnn"].notna().all()
    assert cut.name not in {Path(p).name for p in poster_rows["image_path"]} and len(poster_rows) >= 5

    new = kaggle_rows([1001, 1002, 1003, 1004], np.array([True, False, True, False]))
    new.loc[3, ["Genres", "Synopsis", "Episodes", "Type"]] = "UNKNOWN"
    new.loc[3, "Name"] = "Untitled Project"  # no train franchise-mate either
    new.drop(columns=["Score"]).to_csv(score_data / "new.csv", index=False)  # new anime have no score yet
    images = score_data / "new_posters"
    images.mkdir()
    write_poster(images / "1001.jpg", True, 0)
    (images / "1003.jpg").write_bytes(b"not an image")
    for kind in ["hybrid", "text"]:
        out = score_data / f"{kind}.csv"
        run_step("AnimeScorePredictionAllParameters/predict_score.py", "--model", kind, "--csv", score_data / "new.csv",
                 "--images", images, "--out", out, monkeypatch=monkeypatch)
        scored = pd.read_csv(out, keep_default_na=False).set_index("anime_id")
        assert len(scored) == 4
        assert scored.loc[1001, "predicted_score"] != "" and scored.loc[1001, "reason"] == ""
        assert "neither synopsis nor metadata" in scored.loc[1004, "reason"] or kind == "hybrid"
    assert "no poster" in scored_reason(score_data / "hybrid.csv", 1002)
    assert "not a readable" in scored_reason(score_data / "hybrid.csv", 1003)
    assert scored_reason(score_data / "text.csv", 1002) == ""


def scored_reason(csv, anime_id):
    return pd.read_csv(csv, keep_default_na=False).set_index("anime_id").loc[anime_id, "reason"]


def test_a_pretrained_poster_model_trains_its_frozen_phase_on_cached_poster_features(tmp_path, monkeypatch,
                                                                                     capsys):
    from animeml.core import store
    from animeml.core.backbones import build_backbone
    from animeml.core.images import image_batch
    from animeml.score.models import build_vision_model, train_poster_model

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    files = [tmp_path / f"{i}.png" for i in range(12)]
    for i, file in enumerate(files):
        write_poster(file, i % 2, i)
    table = pd.DataFrame({"image_path": [str(f) for f in files], "score": [6.0 + 2 * (i % 2) for i in range(12)]})
    split = np.array(["train"] * 8 + ["val"] * 4)

    def train():
        return train_poster_model(lambda: build_vision_model(build_backbone("efficientnet_lite0", 32), 7.0), table,
                                  split, {}, 32, epochs=2, finetune_epochs=1, finetune_layers=3, batch_size=4,
                                  backbone_name="efficientnet_lite0")

    model, history = train()
    cached = sorted((tmp_path / "data" / "cache" / "features").iterdir())
    # the train posters, their mirror images and the validation posters, once each, with their lists of images
    assert len(cached) == 6 and len([f for f in cached if f.suffix == ".npy"]) == 3
    assert history["phase"].tolist()[:2] == ["start", "frozen"] and "finetune" in history["phase"].tolist()
    store.save_model(model, tmp_path / "vision.h5", {})
    images = image_batch(files, 32)
    assert np.allclose(store.load_model(tmp_path / "vision.h5")[0].predict(images, verbose=0),
                       model.predict(images, verbose=0), atol=1e-5)
    train()  # a second model reads the same features back
    assert sorted((tmp_path / "data" / "cache" / "features").iterdir()) == cached

    from animeml.core.feature_cache import backbone_features
    mirrored = image_batch(files[:8], 32)[:, :, ::-1]
    expected = build_backbone("efficientnet_lite0", 32).predict(mirrored, verbose=0)
    flipped = backbone_features("efficientnet_lite0", 32, table["image_path"][:8], flip=True)  # from the cache
    assert np.allclose(flipped, expected, atol=1e-4)
    assert not np.allclose(backbone_features("efficientnet_lite0", 32, table["image_path"][:8]), expected, atol=1e-2)
    file, = [f for f in cached if "-flipped" in f.name and f.suffix == ".npy"]
    for damage in ("cut short", "another list's"):
        if damage == "cut short":
            file.write_bytes(file.read_bytes()[:100])
        else:
            np.save(file, np.zeros((3, 1280), np.float32))
        capsys.readouterr()
        assert np.allclose(backbone_features("efficientnet_lite0", 32, table["image_path"][:8], flip=True), expected,
                           atol=1e-4)
        assert np.load(file).shape == expected.shape  # computed again and written back
        if damage == "cut short":  # named once, not again when its own listing is looked at for earlier lists
            assert capsys.readouterr().err.count(f"the cache file {file} is damaged") == 1


class NotRun:
    """A backbone that fails if the cache sends it images."""

    def predict(self, *args, **kwargs):
        raise AssertionError("the backbone ran")


def test_a_list_of_images_that_an_earlier_cached_list_holds_takes_its_rows_from_that_file(tmp_path, monkeypatch):
    from animeml.core.backbones import build_backbone
    from animeml.core.feature_cache import backbone_features, cache_dir

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    files = [tmp_path / f"{i}.png" for i in range(6)]
    for i, file in enumerate(files):
        write_poster(file, i % 2, i)
    backbone = build_backbone("small_cnn", 32)
    features = backbone_features("small_cnn", 32, files, backbone=backbone)
    written = sorted(cache_dir().iterdir())

    subset = [4, 1, 3]  # fewer images, another order: rows of the file above, the backbone never runs
    assert np.array_equal(backbone_features("small_cnn", 32, [files[i] for i in subset], backbone=NotRun()),
                          features[subset])
    assert sorted(cache_dir().iterdir()) == written  # nothing new written for it
    with pytest.raises(AssertionError, match="the backbone ran"):  # mirror images are other features
        backbone_features("small_cnn", 32, files[:2], backbone=NotRun(), flip=True)
    with pytest.raises(AssertionError, match="the backbone ran"):  # another image size
        backbone_features("small_cnn", 24, files[:2], backbone=NotRun())

    os.utime(files[1], ns=(0, 0))  # a changed image is not taken from the old list
    with pytest.raises(AssertionError, match="the backbone ran"):
        backbone_features("small_cnn", 32, [files[1]], backbone=NotRun())
    assert np.array_equal(backbone_features("small_cnn", 32, [files[4]], backbone=NotRun()), features[[4]])

    listing, = [f for f in written if f.name.endswith(".rows.json")]
    stored = json.loads(listing.read_text())
    damaged = ["{not json", json.dumps([stored]), json.dumps({**stored, "rows": 2}),
               json.dumps({**stored, "rows": [[1]]}), json.dumps({**stored, "rows": stored["rows"] + ["more"]})]
    for damage in damaged:  # a damaged list is never a reason to stop, nor to take wrong rows
        listing.write_text(damage)
        with pytest.raises(AssertionError, match="the backbone ran"):
            backbone_features("small_cnn", 32, [files[4]], backbone=NotRun())
