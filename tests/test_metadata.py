"""Step 01: the Jikan fetcher against a local server, and the Kaggle file reader's errors."""
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from animeml.core.io import PipelineError
from animeml.core.http import make_session
from animeml.core.table import KAGGLE_COLUMNS, read_kaggle_csv
from animeml.core.jikan import fetch_jikan
from animeml.core.paths import ROOT

SCRIPT = ROOT / "AnimeScorePredictionAllParameters" / "01_fetch_metadata.py"
PAGES, PER_PAGE = 3, 4


def jikan_item(mal_id):
    return {
        "mal_id": mal_id, "title": f"Anime {mal_id}", "title_english": None, "title_japanese": "アニメ",
        "score": 7.0 + mal_id / 100, "genres": [{"name": "Action"}], "explicit_genres": [],
        "synopsis": f"Story {mal_id}.", "type": "TV", "episodes": 12, "aired": {"string": "Apr 3, 1998 to ?"},
        "season": "spring", "year": 1998, "status": "Finished Airing", "producers": [{"name": "P"}],
        "licensors": [], "studios": [{"name": "Sunrise"}, {"name": "Bones"}], "source": "Original",
        "duration": "24 min per ep", "rating": "PG-13", "rank": 5, "popularity": 10, "favorites": 3,
        "scored_by": 100, "members": 1000,
        "images": {"jpg": {"image_url": f"http://img/{mal_id}.jpg", "large_image_url": f"http://img/{mal_id}l.jpg"}},
    }


@pytest.fixture
def jikan(server):
    state = {"rate_limited": set(), "broken": set()}

    def anime(request, query):
        page = int(query["page"][0])
        if page in state["broken"]:
            return 500, {"Content-Type": "text/plain"}, b"down"
        if page in state["rate_limited"]:
            state["rate_limited"].discard(page)
            return 429, {"Retry-After": "1", "Content-Type": "application/json"}, b"{}"
        items = [jikan_item((page - 1) * PER_PAGE + i + 1) for i in range(PER_PAGE)]
        body = {"pagination": {"has_next_page": page < PAGES, "current_page": page}, "data": items}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    server.routes["/v4/anime"] = anime
    server.state = state
    return server


def test_paginates_honours_429_and_keeps_the_kaggle_layout(jikan, tmp_path):
    jikan.state["rate_limited"].add(2)
    started = time.monotonic()
    table = fetch_jikan(f"{jikan.url}/v4", tmp_path / "cache", session=make_session(backoff=0.05))
    assert time.monotonic() - started >= 1.0
    assert list(table.columns) == KAGGLE_COLUMNS
    assert list(table["anime_id"]) == list(range(1, PAGES * PER_PAGE + 1))
    assert jikan.count("/v4/anime?page=2") == 2
    first = table.iloc[0]
    assert first["Studios"] == "Sunrise, Bones" and first["Premiered"] == "spring 1998"
    assert first["Image URL"] == "http://img/1l.jpg"


def test_rate_limit_and_resume_from_cache(jikan, tmp_path):
    jikan.state["broken"].add(3)
    session = make_session(retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(PipelineError, match="500"):
        fetch_jikan(f"{jikan.url}/v4", tmp_path / "cache", session=session, requests_per_second=3)
    assert time.monotonic() - started >= 2 / 3, "more than 3 requests a second"
    [base] = (tmp_path / "cache").iterdir()  # one folder per API base
    assert sorted(p.name.split("-")[0] for p in base.iterdir()) == ["anime_page_1", "anime_page_2"]

    jikan.state["broken"].clear()
    table = fetch_jikan(f"{jikan.url}/v4", tmp_path / "cache", session=session)
    assert len(table) == PAGES * PER_PAGE
    assert jikan.count("/v4/anime?page=1") == 1 and jikan.count("/v4/anime?page=2") == 1


def test_cli_limit_writes_the_table(jikan, tmp_path):
    out = tmp_path / "anime.csv"
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--source", "jikan", "--api-base", f"{jikan.url}/v4",
                             "--limit", "6", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert len(read_kaggle_csv(out)) == 6
    assert jikan.count("/v4/anime?page=3") == 0


@pytest.mark.parametrize("change, message", [
    (lambda df: df.drop(columns=["Score"]), "required column(s) missing: Score"),
    (lambda df: df.assign(Score=["8.1", "eight"]), "'Score' has a value that is not a number: 'eight'"),
])
def test_malformed_csv_gives_one_line_error(tmp_path, change, message):
    good = pd.DataFrame({"anime_id": [1, 2], "Name": ["A", "B"], "Score": ["8.1", "UNKNOWN"], "Genres": ["x", "y"]})
    path = tmp_path / "bad.csv"
    change(good).to_csv(path, index=False)
    result = subprocess.run([sys.executable, str(SCRIPT), "--csv", str(path), "--out", str(tmp_path / "o.csv")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_unknown_is_missing(tmp_path):
    path = tmp_path / "a.csv"
    pd.DataFrame({"anime_id": [1], "Name": ["A"], "Score": ["UNKNOWN"], "Genres": ["UNKNOWN"]}).to_csv(path, index=False)
    table = read_kaggle_csv(path)
    assert pd.isna(table.loc[0, "Score"]) and pd.isna(table.loc[0, "Genres"])
