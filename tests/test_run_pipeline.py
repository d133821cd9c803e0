"""run_pipeline.py reruns a step when its inputs or arguments changed, skips it otherwise, and says why."""
import shutil
import subprocess
import sys

import pandas as pd

from animeml.core.paths import ROOT
from animeml.core.table import read_kaggle_csv


def small_data(shared, folder, n=6):
    """A few real posters in a folder with posters.csv, and the table rows of their anime."""
    posters = pd.read_csv(shared / "data/posters/posters.csv").drop_duplicates("anime_id").head(n)
    images = folder / "posters"
    images.mkdir(parents=True)
    for name in posters["file"]:
        shutil.copy(shared / "data/posters/images" / name, images / name)
    posters[["file", "anime_id", "source"]].to_csv(images / "posters.csv", index=False)
    table = read_kaggle_csv(shared / "data/mal/anime-dataset-2023.csv")
    table = table[table["anime_id"].isin(posters["anime_id"])]
    table.to_csv(folder / "anime.csv", index=False)
    return folder / "anime.csv", images


def pipeline(data, *extra):
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "--data-dir", str(data), "--task", "data", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_changed_input_reruns_its_step_and_those_after_it(shared, tmp_path):
    table, posters = small_data(shared, tmp_path)
    data = tmp_path / "data"
    offline = ["--metadata-csv", table, "--posters-dir", posters]

    first = pipeline(data, *offline)
    assert first.count("run ") == 3 and "is missing" in first

    again = pipeline(data, *offline)
    assert again.count("skip ") == 3 and "unchanged" in again

    edited = pd.read_csv(table)
    edited.loc[0, "Score"] = 9.99
    edited.to_csv(table, index=False)
    after_edit = pipeline(data, *offline)
    assert f"run score/01_fetch_metadata (input changed: {table})" in after_edit
    assert "skip score/02_download_posters" in after_edit  # its input, the posters folder, did not change
    assert "run score/03_merge_data (input changed:" in after_edit
    merged = pd.read_csv(data / "ani_data_merged.csv")
    assert 9.99 in merged["score"].round(2).tolist()

    other = tmp_path / "other.csv"
    shutil.copy(table, other)
    moved = pipeline(data, "--metadata-csv", other, "--posters-dir", posters)
    assert "run score/01_fetch_metadata (input changed" in moved or "arguments changed" in moved

    forced = pipeline(data, "--metadata-csv", other, "--posters-dir", posters, "--force")
    assert forced.count("run ") == 3 and forced.count("(forced)") == 3


def test_version_and_outputs_made_outside_the_runner(tmp_path):
    version = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("animeml ")

    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    (data / "raw" / "anime.csv").write_text("anime_id,Name,Score,Genres\n1,A,7.0,Action\n")
    result = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--data-dir", str(data), "--only", "01",
                             "--metadata-csv", str(tmp_path / "absent.csv")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "made outside the runner" in result.stdout


def test_a_folder_named_like_an_output_is_not_taken_for_it(shared, tmp_path):
    table, posters = small_data(shared, tmp_path, n=2)
    data = tmp_path / "data"
    (data / "raw" / "anime.csv").mkdir(parents=True)
    (data / "raw" / "anime.csv" / "mine.txt").write_text("the user's")
    result = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--data-dir", str(data), "--only", "01",
                             "--metadata-csv", str(table), "--posters-dir", str(posters)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert f"run score/01_fetch_metadata ({data / 'raw' / 'anime.csv'} is not a file)" in result.stdout
    assert "anime.csv is a folder" in result.stderr and "Traceback" not in result.stderr
    assert (data / "raw" / "anime.csv" / "mine.txt").read_text() == "the user's"
