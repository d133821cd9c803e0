"""Recommendation on a small synthetic catalogue: ranking, vectorised == loop, titles, favourites, the scripts."""
import io
import json
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest

from animeml.core import paths
from animeml.core.fields import franchise_key
from animeml.core.table import read_anime_table
from animeml.recommendation import (Favorites, Recommender, TitleNotFound, evaluate, franchise_queries, hybrid_loop, python_items)

SPACE = "Bounty hunters Spike and Jet chase criminals across the solar system aboard their spaceship."
ROWS = [  # anime_id, Name, Genres, Episodes, Score, Type, Studios, Duration, Premiered, Synopsis, Members
    (1, "Star Hunters", "Action, Sci-Fi", 26, 8.7, "TV", "Sunrise", "24 min per ep", "spring 1998", SPACE, 1000),
    (2, "Star Hunters 2nd Season", "Action, Sci-Fi, Drama", 13, 8.4, None, None, None, None,
     "Spike and Jet return: the bounty hunters take their spaceship to Mars for one last job.", None),
    (3, "Star Hunters: The Movie", "Action, Sci-Fi", 1, 8.3, "Movie", "Bones", "1 hr 55 min", "fall 2001",
     "On Mars, bounty hunters Spike and Jet face a terrorist who threatens the whole city.", 800),
    (4, "Cake Club", "Comedy, Slice of Life", 12, 7.1, "TV", "Kyoto Animation", "24 min per ep", "spring 2009",
     "Four high school girls bake cakes after class and enter a baking contest.", 5000),
    (5, "Cake Club Specials", "Comedy, Slice of Life", 2, 6.9, None, None, None, None, None, None),
    (6, "Tennis Stars", "Sports", 48, 7.5, "TV", "Production I.G", "23 min per ep", "fall 2001",
     "A young tennis prodigy joins a famous school team and aims for the national championship.", 3000),
    (7, "Haunted School", "Horror, Mystery", 12, 6.5, "TV", "Madhouse", "24 min per ep", "summer 2004",
     "Students vanish one by one from a haunted school at night.", 2000),
    (8, "Space Tennis", "Sports, Sci-Fi", 24, 6.0, None, None, None, None, None, None),
    (9, "Quiet Village", None, 26, None, None, None, None, None, None, None),
    (10, "Ramen Road", "Gourmet, Slice of Life", 10, 6.8, None, None, None, None,
     "A salaryman travels the country in search of the perfect bowl of ramen.", None),
    (11, "Dragon Knights", "Action, Fantasy", 24, 7.0, "TV", "Sunrise", "24 min per ep", "winter 1999",
     "A knight and her dragon defend the kingdom from an invading army.", 900),
    (12, "Love Letters", "Romance, Drama", 12, 7.3, "TV", "Kyoto Animation", "24 min per ep", "fall 2006",
     "A shy boy finds a love letter in his shoe locker and searches for its writer.", 4000),
]
COLUMNS = ["anime_id", "Name", "Genres", "Episodes", "Score", "Type", "Studios", "Duration", "Premiered",
           "Synopsis", "Members"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """ANIMEML_DATA_DIR with the synthetic table as data/raw/anime.csv and its index built with the USE model."""
    root = tmp_path_factory.mktemp("data")
    (root / "raw").mkdir()
    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(root / "raw" / "anime.csv", index=False)
    status, out, err = script(root, "Recommendation/01_build_index.py", "--model", "use")
    assert status == 0, err
    assert "9 of 12 synopses embedded" in out
    return root


@pytest.fixture(scope="module")
def rec(data_dir):
    return Recommender.load(read_anime_table(data_dir / "raw" / "anime.csv"), data_dir / "recommendation")


def script(data_dir, *args):
    """Run `python Recommendation/... args` in this process (no second interpreter): (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.setenv("ANIMEML_DATA_DIR", str(data_dir))
        mp.setattr(sys, "argv", list(args))
        try:
            runpy.run_path(str(paths.ROOT / args[0]), run_name="__main__")
            status = 0
        except SystemExit as stop:
            status = stop.code
    return status, out.getvalue(), err.getvalue()


def recommended_ids(stdout):
    """The anime_id column of the table that recommend.py prints."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "anime_id"])
    return [int(line.split()[1]) for line in lines[header + 1:]]


def test_franchise_key_strips_seasons_movies_subtitles():
    assert franchise_key("Shingeki no Kyojin Season 2") == "shingeki no kyojin"
    assert franchise_key("Shingeki no Kyojin Movie 1: Guren no Yumiya") == "shingeki no kyojin"
    assert franchise_key("Gintama'") == franchise_key("Gintama.: Shirogane no Tamashii-hen") == "gintama"
    assert franchise_key("Kidou Senshi Gundam 0083: Stardust Memory") == "kidou senshi gundam"
    assert franchise_key("Re:Zero kara Hajimeru Isekai Seikatsu 2nd Season") == \
        franchise_key("Re:Zero kara Hajimeru Isekai Seikatsu")
    assert franchise_key("Re:Zero kara Hajimeru Isekai Seikatsu") != franchise_key("Re: Cutey Honey")
    assert franchise_key("Cowboy Bebop") != franchise_key("Trigun")


def test_sequel_ranks_above_unrelated_titles(rec):
    row = rec.row_of[1]
    result = rec.recommend([row])
    top = rec.table.loc[rec.top(result.scores, 3, [row]), "anime_id"].tolist()
    assert set(top[:2]) == {2, 3}
    # metadata alone also finds them, and the synopsis cosine of a sequel beats that of an unrelated show
    assert result.text[rec.row_of[2]] > result.text[rec.row_of[4]]
    assert rec.recommend([row], alpha=1.0).metadata[rec.row_of[3]] > result.metadata[rec.row_of[12]]


def test_the_saved_query_columns_recommend_as_the_table_does(rec, data_dir):
    saved = Recommender.load(None, data_dir / "recommendation")  # what recommend.py loads: no pandas
    assert saved.row_of == rec.row_of
    for row in range(rec.n):
        np.testing.assert_array_equal(saved.hybrid(row), rec.hybrid(row))
    assert saved.table["anime_id"].tolist() == rec.table["anime_id"].tolist()  # the whole table, when asked


def test_anime_without_synopsis_gets_metadata_recommendations(rec):
    row = rec.row_of[5]  # Cake Club Specials: no synopsis, no type, no studio
    result = rec.recommend([row])
    assert np.isnan(result.text).all()
    assert rec.table.at[rec.top(result.scores, 1, [row])[0], "anime_id"] == 4


def test_a_single_shared_minor_field_is_not_a_perfect_match(rec):
    # Quiet Village shares only the episode count (26) with Star Hunters
    assert rec.metadata_similarity(rec.row_of[1])[rec.row_of[9]] < 0.2


def test_vectorised_scores_equal_the_per_item_loop(rec):
    items = python_items(rec)
    for row in range(rec.n):
        for alpha in (0.0, 0.5, 1.0):
            loop = np.array([np.nan if s is None else s for s in hybrid_loop(items, rec.spans, row, alpha)])
            np.testing.assert_allclose(rec.hybrid(row, alpha), loop, atol=1e-5)


def test_title_match_exact_typo_and_did_you_mean(rec):
    assert rec.match_title("star hunters")[0] == rec.row_of[1]
    assert rec.match_title("Star Huntres")[0] == rec.row_of[1]
    with pytest.raises(TitleNotFound) as err:
        rec.match_title("Stor Huntrs Muvie")
    assert "Star Hunters: The Movie" in err.value.suggestions


def test_search_and_details(rec):
    found = rec.search("star", ["sci-fi"])
    assert set(found["anime_id"]) == {1, 2, 3}
    assert set(rec.search(None, ["Sports"])["anime_id"]) == {6, 8}
    details = rec.details(rec.row_of[2])
    assert details["franchise"] == "star hunters"
    assert "Star Hunters: The Movie" in details["franchise_entries"]


def test_favorites_store(tmp_path):
    store = Favorites(tmp_path / "fav.sqlite")
    assert store.add(1, "Star Hunters") and not store.add(1, "Star Hunters")
    assert store.add(4, "Cake Club")
    assert store.remove(4) and not store.remove(4)
    assert store.list()["anime_id"].tolist() == [1]


def test_evaluation_hybrid_beats_random(rec):
    queries = franchise_queries(rec)
    assert set(rec.table.loc[queries, "anime_id"]) == {1, 2, 3, 4, 5}
    results = evaluate(rec, queries, k=1)
    hit = results.groupby("method")["hit"].mean()
    assert hit["hybrid"] == 1.0 and hit["random"] < 1.0
    assert set(hit.index) == {"hybrid", "metadata only", "synopsis only", "popularity", "random"}


def test_scripts_favorites_never_recommended(data_dir):
    db = str(data_dir / "fav.sqlite")
    assert script(data_dir, "Recommendation/favorites.py", "add", "Star Hunters", "--db", db)[0] == 0
    assert script(data_dir, "Recommendation/favorites.py", "add", "Cake Club", "--db", db)[0] == 0
    listed = script(data_dir, "Recommendation/favorites.py", "list", "--db", db)[1]
    assert "Star Hunters" in listed and "Cake Club" in listed

    status, out, err = script(data_dir, "Recommendation/recommend.py", "--favorites", "-k", "20", "--db", db)
    assert status == 0, err
    ids = recommended_ids(out)
    assert len(ids) == 10 and not {1, 4} & set(ids)  # all 12 but the two favourites
    assert set(ids[:3]) == {2, 3, 5}  # their franchise entries come first

    out = script(data_dir, "Recommendation/recommend.py", "--favorites", "-k", "20", "--db", db,
                 "--exclude-franchise")[1]
    assert set(recommended_ids(out)) == set(range(6, 13))


def test_script_title_typo_prints_did_you_mean(data_dir):
    status, _, err = script(data_dir, "Recommendation/recommend.py", "--title", "Stor Huntrs Muvie")
    assert status == 2
    assert "did you mean" in err and "Star Hunters: The Movie" in err
    status, out, _ = script(data_dir, "Recommendation/recommend.py", "--title", "Star Huntres", "-k", "2")
    assert status == 0 and "fuzzy match" in out and set(recommended_ids(out)) == {2, 3}


def test_evaluate_and_benchmark_scripts(data_dir):
    status, out, err = script(data_dir, "Recommendation/02_evaluate.py", "-k", "2")
    assert status == 0, err
    summary = pd.read_csv(data_dir / "recommendation" / "evaluation_summary.csv")
    everything = summary[summary["queries"] == "all queries"].set_index("method")
    assert everything.loc["hybrid", "n"] == 5 and everything.loc["synopsis only", "n"] == 4
    assert everything.loc["hybrid", "hit@2"] > everything.loc["random", "hit@2"]

    status, out, err = script(data_dir, "Recommendation/03_benchmark.py", "--queries", "5", "--loop-queries", "3")
    assert status == 0, err
    report = json.loads(out)
    assert report["catalogue"] == 12 and report["largest_score_difference"] < 1e-5
