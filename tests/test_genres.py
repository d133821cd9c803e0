import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from script_runs import assert_one_error_line, run_script as run_in_process

from animeml.core.io import PipelineError
from animeml.core.table import POST_RELEASE_COLUMNS

SCRIPTS = Path(__file__).resolve().parents[1] / "GenreClassification"
COLOURS = {"Red": (220, 30, 30), "Blue": (30, 30, 220), "Green": (30, 200, 30)}


def run_script(name, *args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


@pytest.fixture
def posters(tmp_path, monkeypatch):
    """A merged table of 48 synthetic posters of 40 anime whose genres are their colours, in a fresh data dir."""
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rows = []
    for i in range(48):
        anime_id = i % 40 + 1  # MyAnimeList ids start at 1
        genres = [g for g in COLOURS if rng.random() < 0.45] or ["Red"]
        if i == 47:
            genres = ["Horror"]  # outside the vocabulary: dropped
        colour = np.mean([COLOURS.get(g, (128, 128, 128)) for g in genres], axis=0)
        pixels = np.clip(colour + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
        path = image_dir / f"{anime_id}_{i}.jpg"
        Image.fromarray(pixels).save(path)
        rows.append({"anime_id": anime_id, "image_path": str(path), "name": f"anime {anime_id}",
                     "genres": ", ".join(genres), "type": "TV" if i % 2 else "Movie", "episodes": 12})
    merged = pd.DataFrame(rows).assign(**{c: pd.NA for c in POST_RELEASE_COLUMNS})
    merged_csv = tmp_path / "merged.csv"
    merged.to_csv(merged_csv, index=False)
    return merged_csv, image_dir


def test_labels_split_by_anime_with_counts(posters, monkeypatch, tmp_path):
    merged_csv, _ = posters
    run_script("01_make_labels.py", "--merged", merged_csv, "--top", 3, monkeypatch=monkeypatch)
    genres_dir = tmp_path / "data" / "genres"
    table = pd.read_csv(genres_dir / "labels.csv")
    genres = json.loads((genres_dir / "genres.json").read_text())["genres"]
    assert sorted(genres) == sorted(COLOURS) and len(table) == 47
    assert (table.groupby("anime_id")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "val", "test"}
    assert (table[genres].sum(axis=1) > 0).all()
    counts = pd.read_csv(genres_dir / "split_counts.csv").set_index("genre")
    assert counts.loc["Red", "test"] == table.loc[table["split"] == "test", "Red"].sum()
    first_split = pd.read_csv(genres_dir / "split.csv")
    run_script("01_make_labels.py", "--merged", merged_csv, "--top", 3, "--types", "TV", monkeypatch=monkeypatch)
    assert pd.read_csv(genres_dir / "split.csv").equals(first_split)
    assert (pd.read_csv(genres_dir / "labels.csv")["type"] == "TV").all()


def test_catalog_covers_never_enter_validation_or_test(posters, tmp_path):
    from animeml.genres import catalog_rows, label_posters, read_catalog
    from animeml.core.table import read_merged

    merged_csv, image_dir = posters
    merged = read_merged(merged_csv)
    table, genres = label_posters(merged, 3, tmp_path / "split.csv")
    held_out = table.loc[table["split"] == "test", "anime_id"].iloc[0]
    train_id = table.loc[table["split"] == "train", "anime_id"].iloc[0]
    catalog = pd.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                            "anime_id": [held_out, train_id, None, None],
                            "title": ["x", "y", f"anime {held_out}", "new title"],
                            "genres": ["Red", "Blue", "Green", "Red, Blue"], "type": "TV"})
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    extra = catalog_rows(read_catalog(tmp_path / "catalog.csv"), image_dir, merged, table, genres)
    assert extra["image_path"].map(lambda p: Path(p).name).tolist() == ["b.jpg", "d.jpg"]
    assert (extra["split"] == "train").all() and extra[["Red", "Blue"]].iloc[1].tolist() == [1, 1]


@pytest.mark.parametrize("text, words", [
    (None, ["catalog covers CSV not found"]),
    ("", ["catalog covers CSV", "is empty"]),
    ("file,anime_id,title,genres\na.jpg,1,x,Red\n", ["required column(s) missing: type"]),
    ("file,anime_id,title,type,genres\na.jpg,1,x,TV,Red\nb.jpg,twelve,y,TV,Blue\n",
     ["anime_id 'twelve' (data row 2) is not a positive whole number"]),
])
def test_an_unusable_catalog_covers_csv_is_one_error_line_and_writes_nothing(posters, tmp_path, text, words):
    merged_csv, _ = posters
    (tmp_path / "covers").mkdir()
    if text is not None:
        (tmp_path / "covers" / "catalog_covers.csv").write_text(text)
    status, _, err = run_in_process("GenreClassification/01_make_labels.py", "--merged", merged_csv,
                                    "--catalog-covers", tmp_path / "covers")
    assert_one_error_line(status, err, *words)
    assert not (tmp_path / "data" / "genres").exists()  # not even the split file


def test_train_evaluate_and_predict_end_to_end(posters, monkeypatch, tmp_path, capsys):
    merged_csv, image_dir = posters
    run_script("01_make_labels.py", "--merged", merged_csv, "--top", 3, monkeypatch=monkeypatch)
    labels = pd.read_csv(tmp_path / "data" / "genres" / "labels.csv")
    cut = Path(labels.loc[labels["split"] == "test", "image_path"].iloc[0])  # cut short after labelling
    cut.write_bytes(cut.read_bytes()[:200])
    capsys.readouterr()
    run_script("02_train.py", "--backbone", "small_cnn", "--loss", "bce", "--image-size", 32, "--scratch-epochs", 1,
               "--batch-size", 8, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert f"1 of {len(labels)} labelled images cannot be read" in err and f"{cut} " in err
    model = tmp_path / "data" / "models" / "genres_small_cnn_bce.h5"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert model.exists() and sorted(sidecar["genres"]) == sorted(COLOURS)
    assert set(sidecar["thresholds"]) == set(COLOURS) and 0 < sidecar["global_threshold"] < 1

    run_script("03_evaluate.py", monkeypatch=monkeypatch)
    assert f"1 of {len(labels)} labelled images cannot be read" in capsys.readouterr().err
    results = pd.read_csv(tmp_path / "data" / "genres" / "results.csv")
    assert {"small_cnn", "label prior"} <= set(results["model"])
    assert results["micro_f1"].between(0, 1).all()
    for png in ("examples.png", "pr_curves_genres_small_cnn_bce.png"):
        assert (tmp_path / "data" / "genres" / png).read_bytes()[:4] == b"\x89PNG"

    few = tmp_path / "few"
    few.mkdir()
    for path in [path for path in sorted(image_dir.glob("*.jpg")) if path != cut][:3]:
        (few / path.name).write_bytes(path.read_bytes())
    (few / "notes.txt").write_text("not an image")
    run_script("predict_genres.py", "--images", few, "--out", tmp_path / "out.csv", "--model", model,
               monkeypatch=monkeypatch)
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert len(out) == 3 and list(out.columns[:2]) == ["file", "predicted_genres"]
    assert out[sidecar["genres"]].apply(lambda c: c.between(0, 1)).all().all()
    for row in out.itertuples():
        predicted = set(filter(None, row.predicted_genres.split("|")))
        expected = {g for g in sidecar["genres"] if getattr(out, g)[row.Index] >= sidecar["thresholds"][g]}
        assert predicted == expected

    with pytest.raises(SystemExit) as exit_info:
        run_script("predict_genres.py", "--images", few, "--out", tmp_path / "x.csv", "--model", tmp_path / "no.h5",
                   monkeypatch=monkeypatch)
    assert exit_info.value.code == 2 and "no.h5 not found" in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [
    ("", ["merged table", "is empty"]),
    ("anime_id,name\n1,x\n", ["required column(s) missing: image_path"]),
])
def test_an_unusable_merged_table_is_one_error_line(tmp_path, monkeypatch, text, words):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "merged.csv").write_text(text)
    status, _, err = run_in_process("GenreClassification/01_make_labels.py", "--merged", tmp_path / "merged.csv")
    assert_one_error_line(status, err, *words)
    assert not (tmp_path / "data" / "genres").exists()


def test_a_saved_split_file_without_its_columns_is_one_error(tmp_path):
    from animeml.core.splits import load_or_make_split

    (tmp_path / "split.csv").write_text("anime_id,part\n1,train\n")
    with pytest.raises(PipelineError, match="split file .* required column\\(s\\) missing: group, split"):
        load_or_make_split(tmp_path / "split.csv", np.arange(1, 5))
