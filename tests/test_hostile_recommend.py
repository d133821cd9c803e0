"""The recommendation scripts against hostile input: nonsense counts and titles, corrupt favourites files, a
truncated FAISS index, ids that do not match it, a corrupt catalogue. Each ends with exit status 2 and one
`error:` line naming the file and the step that rebuilds it, never a traceback, and the broken file is unchanged."""
import hashlib
import resource
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from animeml.core.paths import ROOT
from animeml.core.table import read_anime_table
from animeml.recommendation import save_index

from script_runs import assert_one_error_line, run_script

ROWS = [  # anime_id, Name, Genres, Episodes, Score, Type, Synopsis
    (1, "Star Hunters", "Action, Sci-Fi", 26, 8.7, "TV", "Bounty hunters chase criminals across space."),
    (2, "Star Hunters 2nd Season", "Action, Sci-Fi, Drama", 13, 8.4, "TV", "The bounty hunters return."),
    (3, "Cake Club", "Comedy, Slice of Life", 12, 7.1, "TV", "Girls bake cakes after class."),
    (4, "Tennis Stars", "Sports", 48, 7.5, "TV", None),
    (5, "Haunted School", "Horror, Mystery", 12, 6.5, "TV", "Students vanish from a haunted school."),
    (6, "Dragon Knights", "Action, Fantasy", 24, 7.0, "TV", "A knight and her dragon defend the kingdom."),
]
SCRIPTS = ["Recommendation/01_build_index.py", "Recommendation/02_evaluate.py", "Recommendation/03_benchmark.py",
           "Recommendation/recommend.py", "Recommendation/search.py", "Recommendation/favorites.py"]
REBUILD = "Recommendation/01_build_index.py"


@pytest.fixture
def data(tmp_path, monkeypatch):
    """ANIMEML_DATA_DIR with the table, and the index files step 01 writes (random unit vectors stand in for the
    synopsis embeddings: these tests are about the files, not the ranking)."""
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path))
    (tmp_path / "raw").mkdir()
    columns = ["anime_id", "Name", "Genres", "Episodes", "Score", "Type", "Synopsis"]
    pd.DataFrame(ROWS, columns=columns).to_csv(tmp_path / "raw" / "anime.csv", index=False)
    table = read_anime_table(tmp_path / "raw" / "anime.csv")
    with_synopsis = table[table["synopsis"].notna()]
    vectors = np.random.default_rng(0).normal(size=(len(with_synopsis), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    save_index(tmp_path / "recommendation", with_synopsis["anime_id"].to_numpy(), vectors, table)
    return tmp_path



def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_query_works_from_the_saved_catalogue(data):
    status, out, err = run_script("Recommendation/recommend.py", "--title", "Star Hunters", "-k", "2")
    assert status == 0, err
    assert "Star Hunters (anime_id 1)" in out and "Star Hunters 2nd Season" in out


@pytest.mark.parametrize("args, fragment", [
    (["Recommendation/recommend.py", "--title", "Star Hunters", "-k", "0"], "-k: '0' is not an integer >= 1"),
    (["Recommendation/recommend.py", "--title", "Star Hunters", "-k", "-1"], "-k"),
    (["Recommendation/recommend.py", "--title", ""], "--title: must not be empty"),
    (["Recommendation/recommend.py", "--title", "   "], "--title: must not be empty"),
    (["Recommendation/recommend.py", "--title", "Star Hunters", "--alpha", "1.5"], "--alpha"),
    (["Recommendation/search.py", "--name", "star", "-n", "0"], "-n: '0' is not an integer >= 1"),
    (["Recommendation/search.py", "--name", "star", "-k", "0"], "-k"),
    (["Recommendation/search.py"], "give --name, --genre or --show"),
    (["Recommendation/favorites.py", "add"], "add needs a TITLE"),
    (["Recommendation/02_evaluate.py", "--limit", "0"], "--limit"),
    (["Recommendation/03_benchmark.py", "--queries", "0"], "--queries"),
])
def test_nonsense_arguments_are_refused_by_argparse(data, args, fragment):
    status, out, err = run_script(*args)
    assert status == 2 and fragment in err and "Traceback" not in err and out == ""


def test_old_flag_spellings_warn_once_and_work(data):
    status, out, err = run_script("Recommendation/search.py", "--name", "star", "-n", "1")
    assert status == 0 and err.count("-n is deprecated") == 1
    assert len([line for line in out.splitlines() if "Star Hunters" in line]) == 1


@pytest.mark.parametrize("content", [b"this is not a database at all" * 40, "other database"])
def test_a_broken_favourites_file_is_reported_and_left_alone(data, content):
    db = data / "favorites.sqlite"
    if content == "other database":  # a real SQLite file, of something else: not ours to add a table to
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
            other.execute("INSERT INTO notes VALUES ('mine')")
        other.close()
    else:
        db.write_bytes(content)
    before = digest(db)
    for args in (["Recommendation/recommend.py", "--favorites", "--db", db],
                 ["Recommendation/favorites.py", "add", "Star Hunters", "--db", db],
                 ["Recommendation/favorites.py", "list", "--db", db]):
        status, _, err = run_script(*args)
        assert_one_error_line(status, err, str(db), "favorites.py add")
        assert digest(db) == before


def test_recommending_for_favourites_without_a_file_creates_none(data):
    db = data / "none.sqlite"
    status, _, err = run_script("Recommendation/recommend.py", "--favorites", "--db", db)
    assert_one_error_line(status, err, str(db), "favorites.py add")
    assert not db.exists()
    assert run_script("Recommendation/favorites.py", "add", "Cake Club", "--db", db)[0] == 0
    status, out, err = run_script("Recommendation/recommend.py", "--favorites", "--db", db, "-k", "2")
    assert status == 0 and "favourites (1): Cake Club" in out, err


def truncate(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def wrong_length_ids(path):
    np.save(path, np.array([1, 2], dtype=np.int64))


def text_ids(path):
    np.save(path, np.array(["one", "two", "three", "five", "six"]))


def drop_last_row(path):
    pd.read_parquet(path).iloc[:-1].to_parquet(path, index=False)


EVERY_READER = ["recommend", "search", "evaluate"]
WHOLE_TABLE_READERS = ["search", "evaluate"]  # a --title query reads the query columns alone


@pytest.mark.parametrize("name, damage, fragment, readers", [
    ("synopsis.faiss", truncate, "not a readable FAISS index", EVERY_READER),
    ("synopsis_ids.npy", wrong_length_ids, "do not belong together", EVERY_READER),
    ("synopsis_ids.npy", text_ids, "whole-number anime ids", EVERY_READER),
    ("synopsis_ids.npy", truncate, "not a readable .npy file", EVERY_READER),
    ("catalogue_columns.json", truncate, "not a readable table of catalogue columns", EVERY_READER),
    ("catalogue.parquet", truncate, "not a readable Parquet table", WHOLE_TABLE_READERS),
    ("catalogue.parquet", drop_last_row, "lists other anime than catalogue_columns.json", WHOLE_TABLE_READERS),
])
def test_a_damaged_index_names_the_file_and_the_step_and_stays_as_it_is(data, name, damage, fragment, readers):
    path = data / "recommendation" / name
    damage(path)
    before = digest(path)
    commands = {"recommend": ["Recommendation/recommend.py", "--title", "Star Hunters"],
                "search": ["Recommendation/search.py", "--name", "star"],
                "evaluate": ["Recommendation/02_evaluate.py"]}
    for reader in readers:
        status, _, err = run_script(*commands[reader])
        assert_one_error_line(status, err, str(path), fragment, REBUILD)
        assert digest(path) == before


def test_outputs_of_the_wrong_kind_are_refused(data):
    status, _, err = run_script("Recommendation/02_evaluate.py", "--out-dir", data / "raw" / "anime.csv")
    assert_one_error_line(status, err, "is a file")
    status, _, err = run_script("Recommendation/03_benchmark.py", "--queries", "1", "--loop-queries", "1",
                                "--out", data)
    assert_one_error_line(status, err, "is a folder")
    status, _, err = run_script("Recommendation/03_benchmark.py", "--queries", "100")
    assert_one_error_line(status, err, "more than the 6 anime")


def test_a_missing_index_names_the_step(data):
    shutil.rmtree(data / "recommendation")
    status, _, err = run_script("Recommendation/recommend.py", "--title", "Star Hunters")
    assert_one_error_line(status, err, "synopsis.faiss not found", REBUILD)


def test_one_query_loads_no_deep_learning_library_and_answers_quickly(data):
    """A real run: recommend.py never imports TensorFlow, torch, Keras or scikit-learn, and is quick."""
    code = ("import runpy, sys\n"
            "sys.argv = [sys.argv[1], '--title', 'Star Hunters', '-k', '2']\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'torch', 'keras', 'sklearn'}))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "Recommendation/recommend.py")],
                          capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]" and "Star Hunters 2nd Season" in done.stdout
    # CPU time, not wall time: the machine may be shared. About 1 s for the 24k anime of ../shared.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 3, f"one query used {cpu:.1f} s of CPU"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_at_once(script):
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert done.returncode == 0 and "usage:" in done.stdout and done.stderr == ""
    assert elapsed < 1.5, f"{script} --help took {elapsed:.2f} s"
