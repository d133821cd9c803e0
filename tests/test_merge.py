"""Step 03 and the offline pipeline, on a small real sample from ../shared."""
import shutil
import subprocess
import sys

import pandas as pd

from animeml.core.table import merge_posters, read_merged
from animeml.core.table import POST_RELEASE_COLUMNS, read_kaggle_csv
from animeml.core.paths import ROOT


def sample(shared, tmp_path, n=25):
    """A few real posters (several of one anime included), one poster of an anime the table lacks, and the
    table rows of those anime, one of them with its score blanked."""
    posters = pd.read_csv(shared / "data/posters/posters.csv")
    repeated = posters[posters["anime_id"] == posters.loc[posters["anime_id"].duplicated(), "anime_id"].iloc[0]]
    picked = pd.concat([repeated, posters.drop(repeated.index).head(n - len(repeated))])
    folder = tmp_path / "posters"
    folder.mkdir()
    for name in picked["file"]:
        shutil.copy(shared / "data/posters/images" / name, folder / name)
    stray = picked.iloc[[-1]].assign(anime_id=999_999_999, file="stray.jpg")
    shutil.copy(folder / picked["file"].iloc[-1], folder / "stray.jpg")
    pd.concat([picked, stray])[["file", "anime_id", "source"]].to_csv(folder / "posters.csv", index=False)

    table = read_kaggle_csv(shared / "data/mal/anime-dataset-2023.csv")
    table = table[table["anime_id"].isin(picked["anime_id"])].copy()
    table.loc[table.index[0], "Score"] = None
    table.to_csv(tmp_path / "anime.csv", index=False)
    return folder, tmp_path / "anime.csv", picked, int(table["anime_id"].iloc[0])


def test_merge_keeps_every_poster_typed(shared, tmp_path):
    folder, raw, picked, unscored_id = sample(shared, tmp_path)
    merged = merge_posters(raw, folder)
    assert len(merged) == len(picked) + 1
    assert merged["anime_id"].duplicated().any(), "several posters of one anime must stay several rows"
    assert merged.loc[merged["anime_id"] == 999_999_999, "has_metadata"].item() is False
    assert merged.loc[merged["anime_id"] == unscored_id, "score"].isna().all()
    assert merged.columns[-len(POST_RELEASE_COLUMNS):].tolist() == POST_RELEASE_COLUMNS
    assert merged["score"].dropna().between(1, 10).all()

    out = tmp_path / "merged.csv"
    merged.to_csv(out, index=False)
    again = read_merged(out)
    assert all(shutil.os.path.exists(p) for p in again["image_path"])
    assert str(again["episodes"].dtype) == "Int64"
    cowboy = again.dropna(subset=["genres"]).iloc[0]
    assert isinstance(cowboy["genres"], str) and cowboy["name"]


def test_offline_pipeline_runs_skips_and_names_missing_inputs(shared, tmp_path):
    folder, raw, picked, _ = sample(shared, tmp_path)
    data = tmp_path / "data"
    pipeline = [sys.executable, str(ROOT / "run_pipeline.py"), "--data-dir", str(data), "--task", "data"]
    offline = ["--metadata-csv", str(raw), "--posters-dir", str(folder)]

    first = subprocess.run(pipeline + offline, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    merged = pd.read_csv(data / "ani_data_merged.csv")
    assert len(merged) == len(picked) + 1

    second = subprocess.run(pipeline + offline, capture_output=True, text=True, timeout=300)
    assert second.stdout.count("skip ") == 3

    (data / "raw" / "anime.csv").unlink()
    missing = subprocess.run(pipeline + ["--only", "03", "--force"], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "score/01_fetch_metadata" in missing.stderr
