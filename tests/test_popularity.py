"""Popularity before release (issue 17): the character-cluster split on hand-made cases, description chunking, the
characters step against a misbehaving local Jikan, and steps 09 -> 10 -> 11 end to end on ~30 real anime of the
shared table with real face crops as portraits (served by a local server) and descriptions written here. Tiny
settings: small_cnn at 32 px, a few epochs, and a fake sentence model (hashed words) instead of MiniLM."""
import hashlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.splits import connected_groups, grouped_split
from animeml.core.table import read_kaggle_csv
from animeml.score import popularity
from conftest import jpeg_bytes

STEPS = paths.ROOT / "AnimeScorePredictionAllParameters"
TINY = ["--backbone", "small_cnn", "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--hidden", "16"]


def step(name):
    spec = importlib.util.spec_from_file_location(name, STEPS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_embed(texts, model="minilm", batch_size=64):
    """Each word hashed into one of 16 dimensions, L2-normalised; a blank text is a zero row, as in embed_texts."""
    vectors = np.zeros((len(texts), 16), np.float32)
    for row, text in enumerate(texts):
        for word in (text or "").split() if isinstance(text, str) else []:
            vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 16] += 1
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(popularity, "embed_texts", fake_embed)
    return tmp_path / "data"


# --- the cluster split -----------------------------------------------------------------------------------------

def test_chains_of_shared_characters_form_one_group_whatever_the_link_order():
    links = [(3, 4), (1, 2), (2, 3), (6, 7)]
    groups = connected_groups(range(1, 9), links)
    assert groups == {1: 1, 2: 1, 3: 1, 4: 1, 5: 5, 6: 6, 7: 6, 8: 8}
    assert connected_groups(range(1, 9), links[::-1]) == groups
    with pytest.raises(PipelineError):
        connected_groups([1, 2], [(1, 9)])


def test_grouped_split_keeps_every_group_on_one_side_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), rng.integers(1, 6, 200))
    groups[:40] = 999  # one big cluster, too big for test or validation
    split = grouped_split(groups, val=0.15, test=0.15, seed=1)
    sides = pd.DataFrame({"group": groups, "split": split}).groupby("group")["split"].nunique()
    assert (sides == 1).all()
    assert set(split[groups == 999]) == {"train"}
    shares = pd.Series(split).value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.03 and abs(shares["val"] - 0.15) < 0.03
    assert (grouped_split(groups, seed=1) == grouped_split(groups, seed=1)).all()
    assert (grouped_split(groups, seed=1) != grouped_split(groups, seed=2)).any()
    with pytest.raises(PipelineError, match="too few"):
        grouped_split([1, 1, 2], val=0.2, test=0.2)


def test_character_clusters_are_saved_and_new_anime_join_their_cluster(data_dir):
    characters = pd.DataFrame({"anime_id": [1, 2, 2, 3, 5, 6], "character_id": [10, 10, 11, 11, 12, 12]})
    ids = list(range(1, 21))
    clusters = popularity.character_clusters(ids, characters)
    assert clusters[1] == clusters[2] == clusters[3] == 1 and clusters[5] == clusters[6] == 5 and clusters[4] == 4
    path = popularity.split_path()
    split = popularity.load_or_make_split(path, ids, characters, val=0.2, test=0.2, seed=3)
    assert len(set(split[:3])) == 1 and split[4] == split[5]
    assert (popularity.load_or_make_split(path, ids, characters, seed=99) == split).all()  # read back, not remade
    more = pd.concat([characters, pd.DataFrame({"anime_id": [21], "character_id": [12]})])
    again = popularity.load_or_make_split(path, ids + [21], more)
    assert again[-1] == split[4]  # anime 21 shares character 12 with anime 5 and 6
    bridge = pd.concat([characters, pd.DataFrame({"anime_id": [1, ids[int(np.flatnonzero(split != split[0])[0])]],
                                                  "character_id": [77, 77]})])
    with pytest.raises(PipelineError, match="different parts"):
        popularity.load_or_make_split(path, ids, bridge)


def test_descriptions_are_chunked_between_words_and_nothing_is_cut_off():
    text = " ".join(f"Spiegel{i} unbelievably-lazy bounty hunter, number {i}." for i in range(120))
    chunks = popularity.chunk_text(text)
    tokenizer = popularity.minilm_tokenizer()
    assert len(chunks) > 2
    assert all(len(tokenizer.encode(c, add_special_tokens=False).ids) <= popularity.CHUNK_TOKENS
               for c, _ in chunks)
    assert " ".join(c for c, _ in chunks).split() == text.split()
    assert popularity.chunk_text("A short one.") == [("A short one.", 4)]


# --- the characters step against a misbehaving Jikan -----------------------------------------------------------

def jikan_routes(server):
    """Anime 1: two pages of characters (the first answer a 429 with Retry-After); character 102 has no `about`,
    103 only MAL's placeholder picture, 104's picture 404s; 105 is a supporting character. Anime 2 shares 101;
    its 106 comes back malformed."""
    state = {"throttled": False}

    def person(mal_id):
        image = "questionmark_23.gif" if mal_id == 103 else f"{mal_id}.jpg"
        return {"mal_id": mal_id, "name": f"Person {mal_id}",
                "images": {"jpg": {"image_url": f"{server.url}/img/{image}"}}}

    def anime_characters(request, query):
        anime_id = int(request.path.split("/")[2])
        if anime_id == 1 and not state["throttled"]:
            state["throttled"] = True
            return 429, {"Retry-After": "1", "Content-Type": "application/json"}, b'{"status": 429}'
        page = int(query.get("page", ["1"])[0])
        entries = {(1, 1): [(101, "Main"), (102, "Main"), (105, "Supporting")], (1, 2): [(103, "Main"), (104, "Main")],
                   (2, 1): [(101, "Main"), (106, "Main")]}[(anime_id, page)]
        body = {"data": [{"character": person(c), "role": role} for c, role in entries],
                "pagination": {"has_next_page": anime_id == 1 and page == 1}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def character_full(request, query):
        mal_id = int(request.path.split("/")[2])
        item = person(mal_id)
        if mal_id != 102:
            item["about"] = f"Character {mal_id} hunts bounties across the solar system."
        if mal_id == 106:
            item["about"] = 42  # malformed: neither text nor null
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": item}).encode()

    def image(request, query):
        if request.path.endswith("104.jpg"):
            return 404, {"Content-Type": "text/plain"}, b"gone"
        return 200, {"Content-Type": "image/jpeg"}, jpeg_bytes(seed=len(request.path))

    server.routes.update({"/anime/": anime_characters, "/characters/": character_full, "/img/": image})


def kaggle_subset(shared, n, data_dir):
    table = read_kaggle_csv(shared / "data" / "mal" / "anime-dataset-2023.csv")
    words = table["Synopsis"].fillna("").str.split().str.len()
    chosen = table[table["Score"].notna() & (words >= popularity.MIN_SYNOPSIS_WORDS)].head(n)
    path = data_dir / "raw" / "anime.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen.to_csv(path, index=False)
    return chosen, path


def test_characters_step_survives_a_misbehaving_jikan(data_dir, server, shared):
    pytest.importorskip("animeml.core.jikan").JikanClient  # the hardened client of issue 17's dependency
    jikan_routes(server)
    chosen, anime_csv = kaggle_subset(shared, 2, data_dir)
    ids = chosen["anime_id"].tolist()
    remap = {ids[0]: 1, ids[1]: 2}
    chosen.assign(anime_id=chosen["anime_id"].map(remap)).to_csv(anime_csv, index=False)
    args = ["--api-base", server.url, "--requests-per-second", "50", "--max-wait", "5"]
    step("09_fetch_characters").main(args)

    kept = pd.read_csv(data_dir / "raw" / "characters.csv")
    assert sorted(zip(kept["anime_id"], kept["character_id"])) == [(1, 101), (2, 101)]
    failed = pd.read_csv(data_dir / "raw" / "characters_failures.csv")
    assert failed["character_id"].tolist() == [106] and "about" in failed["reason"].iloc[0]
    assert (data_dir / "characters_mal" / "portraits" / "101.jpg").is_file()
    failures = pd.read_csv(data_dir / "characters_mal" / "portraits" / "failures.csv")
    assert "104.jpg" in " ".join(failures.astype(str).to_numpy().ravel())
    assert server.count("/anime/1/characters") >= 3  # the 429, then both pages
    assert server.count("/characters/101/full") == 1  # shared by two anime, asked once
    cleaning = pd.read_csv(data_dir / "reports" / "popularity" / "dataset_cleaning.csv")
    assert cleaning.iloc[-1]["anime"] == 2 and cleaning.iloc[-1]["characters"] == 2

    before = dict(server.hits)
    step("09_fetch_characters").main(args)  # a rerun reads the cached answers and asks only what failed again
    asked = {p: n - before.get(p, 0) for p, n in server.hits.items() if not p.startswith("/img/")}
    assert {p: n for p, n in asked.items() if n} == {"/characters/106/full": 1}


# --- 09 -> 10 -> 11 end to end ---------------------------------------------------------------------------------

def characters_for(anime_ids, server_url):
    """Two main characters per anime; anime 0-5 chained by shared characters; one long description (several
    chunks); a character without description, one without picture, and an anime left without a usable one."""
    rows = []
    for i, anime_id in enumerate(anime_ids):
        own = [1000 + 2 * i, 1001 + 2 * i]
        if 0 < i <= 5:
            own[1] = 1000 + 2 * (i - 1)  # shares a character with the previous anime
        for character_id in own:
            about = f"Character {character_id} of anime {anime_id}: " + " ".join(
                ["brave", "quiet", "funny", "clever"][character_id % 4] for _ in range(30))
            rows.append({"anime_id": anime_id, "character_id": character_id, "name": f"C{character_id}",
                         "role": "Main", "about": about, "image_url": f"{server_url}/img/{character_id}.jpg"})
    rows[20]["about"] = " ".join(f"word{k} of a very long life story." for k in range(400))  # anime 10
    rows[21]["about"] = ""  # missing description
    rows[23]["image_url"] = None  # missing portrait
    rows[-1]["about"] = rows[-2]["about"] = None  # the last anime has no usable main character
    rows.append({**rows[0], "character_id": 5, "role": "Supporting"})
    return pd.DataFrame(rows)


def test_steps_09_10_11_end_to_end_on_real_synopses_and_faces(data_dir, server, shared, monkeypatch):
    faces = sorted((shared / "data" / "characters20" / "faces").rglob("*.jpg"))[::97]
    server.routes["/img/"] = lambda request, query: (
        200, {"Content-Type": "image/jpeg"}, faces[int(request.path.split("/")[-1][:-4]) % len(faces)].read_bytes())
    chosen, anime_csv = kaggle_subset(shared, 30, data_dir)
    characters_csv = data_dir.parent / "characters_in.csv"
    characters_for(chosen["anime_id"].tolist(), server.url).to_csv(characters_csv, index=False)

    step("09_fetch_characters").main(["--characters-csv", str(characters_csv)])
    kept = pd.read_csv(data_dir / "raw" / "characters.csv")
    assert kept["anime_id"].nunique() == 29 and kept["role"].eq("Main").all()
    assert {1000, 1002, 1020} <= set(kept["character_id"])
    assert not {5, 1021, 1023, 1058, 1059} & set(kept["character_id"])
    summary = (data_dir / "reports" / "popularity" / "dataset_summary.md").read_text()
    assert "characters with a portrait" in summary and "word pieces" in summary

    step("10_train_popularity").main(["--table-11", *TINY])
    models = sorted(p.name for p in (data_dir / "models").glob("popularity_*.h5"))
    assert len(models) == 7 and "popularity_synopsis-descriptions-portraits_pooled-metadata.h5" in models
    split = pd.read_csv(popularity.split_path())
    clusters = popularity.character_clusters(split["anime_id"], kept)
    assert (split.assign(cluster=split["anime_id"].map(clusters)).groupby("cluster")["split"].nunique() == 1).all()
    long_one = chosen["anime_id"].iloc[10]
    ids, _, _, truncated = popularity.load_features(popularity.features_path("descriptions_truncated"))
    pooled = popularity.load_features(popularity.features_path("synopsis-descriptions-portraits_pooled"))[3]
    row, other = np.flatnonzero(ids == long_one)[0], np.flatnonzero(ids == chosen["anime_id"].iloc[12])[0]
    assert not np.allclose(truncated["descriptions"][row], pooled["descriptions"][row])  # read whole, not cut
    assert np.allclose(truncated["descriptions"][other], pooled["descriptions"][other], atol=0.3)

    step("11_evaluate_popularity").main(["--n-boot", "50"])
    table = pd.read_csv(data_dir / "reports" / "popularity" / "table_11.csv")
    assert len(table) == 8 and table["n"].eq((split["split"] == "test").sum()).all()
    assert table["MSE_minmax"].notna().all() and (table["MSE_minmax"] < 1).all()
    paper = table.set_index("experiment")["paper Spearman"]
    assert paper["synopsis-descriptions-portraits_truncated"] == 0.431 and paper["tfidf-pixels"] == 0.195
    assert paper.isna().sum() == 3  # ours and the train mean have no paper number
    markdown = (data_dir / "reports" / "popularity" / "table_11.md").read_text()
    assert "train mean" in markdown and "0.297" in markdown
    assert list((data_dir / "runs").glob("popularity_11_evaluate_*.json"))


def test_missing_characters_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(STEPS / "10_train_popularity.py")], capture_output=True,
                            text=True, env={"ANIMEML_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    assert "09_fetch_characters.py" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_characters_csv_is_a_one_line_error(data_dir, shared, tmp_path):
    _, anime_csv = kaggle_subset(shared, 3, data_dir)
    bad = tmp_path / "bad.csv"
    bad.write_text("anime_id,character_id,name\n1,x,Spike\n")
    with pytest.raises(PipelineError, match="required column"):
        step("09_fetch_characters").main(["--characters-csv", str(bad)])
    bad.write_text("anime_id,character_id,name,role,about,image_url\n1,x,Spike,Main,a,b\n")
    with pytest.raises(PipelineError, match="whole numbers"):
        step("09_fetch_characters").main(["--characters-csv", str(bad)])


def test_a_portrait_that_does_not_decode_leaves_its_character_out_with_the_reason(tmp_path, capsys):
    portraits = tmp_path / "portraits"
    portraits.mkdir()
    for character_id in (1, 2, 3):
        (portraits / f"{character_id}.jpg").write_bytes(jpeg_bytes(character_id))
    (portraits / "2.jpg").write_bytes((portraits / "2.jpg").read_bytes()[:300])  # cut short
    anime = pd.DataFrame({"anime_id": [10, 20], "score": [7.0, 8.0], "synopsis": ["word " * 30] * 2})
    characters = pd.DataFrame({"anime_id": [10, 20, 20, 20], "character_id": [1, 2, 3, 4], "role": "Main",
                               "about": "a description"})  # 4 has no portrait at all: not fetched, no warning
    anime, characters, steps = popularity.clean_dataset(anime, characters, portraits)
    assert characters["character_id"].tolist() == [1, 3] and anime["anime_id"].tolist() == [10, 20]
    err = capsys.readouterr().err
    assert "1 of 3 portraits cannot be read" in err and f"{portraits / '2.jpg'} cannot be read" in err
    assert steps.set_index("step").loc["characters with a portrait", "characters"] == 2


def test_portrait_features_come_back_from_their_cache_and_a_damaged_cache_is_computed_again(data_dir, tmp_path,
                                                                                           capsys):
    files = []
    for i in range(3):
        files.append(str(tmp_path / f"{i}.jpg"))
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    first = popularity.portrait_features(files, "efficientnet_lite0", 32)
    cache, = popularity.popularity_dir().glob("portrait_features_*.npz")
    cache.write_bytes(cache.read_bytes()[:200])
    again = popularity.portrait_features(files, "efficientnet_lite0", 32)
    assert all(np.allclose(first[f], again[f], atol=1e-5) for f in files)
    assert f"the cache file {cache} is damaged" in capsys.readouterr().err
    assert len(np.load(cache)["keys"]) == 3
