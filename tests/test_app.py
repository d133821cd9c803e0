"""The anime app through FastAPI's test client: every route, bad uploads, unknown titles, missing models.

`tiny_data(root)` builds what the app needs in a temporary data folder (test_browser.py reuses it): an anime table
with Cowboy Bebop and its film (rows from ../shared when present), a poster, a TF-IDF synopsis index saved with
the recommender's own save_index, and tiny untrained character and tag models saved with the model store.
"""
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core.paths import SHARED

MAL_CSV = SHARED / "data" / "mal" / "anime-dataset-2023.csv"
FACE_IMAGE = SHARED / "data" / "characters" / "illustrations" / "ahagon_umiko_0.jpg"  # the cascade finds a face
BEBOP, FILM = 1, 5
CHARACTERS = ["ahagon_umiko", "suzukaze_aoba"]
TAGS = ["blonde hair", "blue eyes", "red eyes"]


def anime_rows():
    """Kaggle-layout rows: Cowboy Bebop, its film and 40 others (from ../shared if present, else written here)."""
    from animeml.core.table import KAGGLE_COLUMNS

    if MAL_CSV.is_file():
        table = pd.read_csv(MAL_CSV, dtype=str, keep_default_na=False)
        ids = table["anime_id"].astype(int)
        return pd.concat([table[ids.isin([BEBOP, FILM])], table[~ids.isin([BEBOP, FILM])].head(40)])
    rows = [[BEBOP, "Cowboy Bebop", "Cowboy Bebop", "", "8.75", "Action, Award Winning, Sci-Fi",
             "Spike Spiegel and Jet Black pursue criminals across the galaxy aboard the Bebop.", "TV", "26"],
            [FILM, "Cowboy Bebop: Tengoku no Tobira", "Cowboy Bebop: The Movie", "", "8.38", "Action, Sci-Fi",
             "The Bebop crew chases a bounty on Mars as a terrorist threatens the city.", "Movie", "1"]]
    genres = ["Comedy", "Drama", "Romance", "Sports", "Fantasy"]
    rows += [[100 + i, f"Other Anime {i}", "", "", f"{6 + i % 3}.1", genres[i % 5],
              f"A story about {genres[i % 5].lower()} and friends, part {i}.", "TV", "12"] for i in range(40)]
    table = pd.DataFrame(rows, columns=KAGGLE_COLUMNS[:9])
    for column in KAGGLE_COLUMNS[9:]:
        table[column] = "UNKNOWN"
    return table.astype(str)


def tiny_model(n_outputs, activation, size=32):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation=activation)(x))


def tiny_data(root):
    """The data folder the app and report read, in `root`; returns it."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from animeml.core.io import write_csv
    from animeml.core.store import save_model
    from animeml.recommendation import save_index

    root = Path(root)
    rows = anime_rows()
    write_csv(rows, root / "raw" / "anime.csv")
    (root / "posters").mkdir(parents=True)
    Image.new("RGB", (60, 84), (200, 80, 40)).save(root / "posters" / "1_mal_0.jpg")
    pd.DataFrame({"file": ["1_mal_0.jpg"], "anime_id": [BEBOP], "source": ["mal"]}).to_csv(
        root / "posters" / "posters.csv", index=False)
    synopses = rows[~rows["Synopsis"].isin(["", "UNKNOWN"])]
    vectors = TfidfVectorizer().fit_transform(synopses["Synopsis"]).toarray().astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    save_index(root / "recommendation", synopses["anime_id"].astype(int).to_numpy(), vectors)
    save_model(tiny_model(len(CHARACTERS), "softmax"), root / "models" / "characters_small_cnn.h5",
               {"task": "characters", "labels": CHARACTERS, "backbone": "small_cnn", "image_size": 32})
    save_model(tiny_model(len(TAGS), "sigmoid"), root / "models" / "tags_small_cnn.h5",
               {"task": "tags", "labels": TAGS, "backbone": "small_cnn", "image_size": 32,
                "thresholds": [0.5] * len(TAGS), "global_threshold": 0.5})
    return root


def image_bytes(fmt="PNG", size=(48, 40)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    root = tiny_data(tmp_path_factory.mktemp("data"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANIMEML_DATA_DIR", str(root))
        from animeml.app.main import create_app
        yield TestClient(create_app(), follow_redirects=False)


def test_search_finds_bebop_and_pages(client):
    page = client.get("/anime", params={"q": "bebop"})
    assert page.status_code == 200
    assert "Cowboy Bebop" in page.text and "Tengoku no Tobira" in page.text
    assert 'src="/poster/1"' in page.text  # Cowboy Bebop has a poster, the film does not
    assert "search;dur=" in page.headers["server-timing"]
    everything = client.get("/anime")
    assert "page 1 of 2" in everything.text and 'id="next"' in everything.text
    assert client.get("/anime", params={"page": 2}).status_code == 200
    assert client.get("/anime", params={"page": 99}).status_code == 200  # clamped to the last page


def test_genre_filter_and_fuzzy_title(client):
    page = client.get("/anime", params={"genre": "Sci-Fi"})
    assert "Cowboy Bebop" in page.text
    typo = client.get("/anime", params={"q": "Cowboy Bebopp"})  # no substring hit: the CLI's fuzzy match
    assert "closest title: Cowboy Bebop" in typo.text
    unknown = client.get("/anime", params={"q": "zzqqxx nothing"})
    assert unknown.status_code == 200 and "did you mean" in unknown.text and "Traceback" not in unknown.text


def test_details_unknown_id_and_poster(client):
    page = client.get(f"/anime/{BEBOP}")
    assert page.status_code == 200 and "Cowboy Bebop" in page.text and "add to favourites" in page.text
    assert client.get("/anime/987654321").status_code == 404
    assert client.get("/anime/not-a-number").status_code == 422
    assert client.get(f"/poster/{BEBOP}").headers["content-type"] == "image/jpeg"
    assert client.get(f"/poster/{FILM}").status_code == 404


def test_favourites_and_recommend(client):
    redirect = client.post("/favorites/add", data={"anime_id": BEBOP, "back": "https://elsewhere.example/"})
    assert redirect.status_code == 303 and redirect.headers["location"] == f"/anime/{BEBOP}"  # never off-site
    assert client.post("/favorites/add", data={"anime_id": 987654321}).status_code == 404
    assert "in favourites" in client.get(f"/anime/{BEBOP}").text
    page = client.get("/favorites", params={"recommend": "true"})
    assert "Tengoku no Tobira" in page.text and "synopsis cosine" in page.text and "because of" in page.text
    assert "recommend;dur=" in page.headers["server-timing"]
    excluded = client.get("/favorites", params={"recommend": "true", "exclude_franchise": "true", "k": 5})
    assert "Tengoku no Tobira" not in excluded.text.split('id="recommendations"')[1]
    assert client.post("/favorites/remove", data={"anime_id": BEBOP}).status_code == 303
    assert "no favourites yet" in client.get("/favorites").text


def test_favourites_are_the_cli_sqlite_file(client, tmp_path):
    from animeml.core import paths
    from animeml.recommendation import Favorites

    client.post("/favorites/add", data={"anime_id": FILM})
    cli_view = Favorites(paths.recommendation_dir() / "favorites.sqlite")
    try:
        assert FILM in set(cli_view.list()["anime_id"])
    finally:
        cli_view.close()
    client.post("/favorites/remove", data={"anime_id": FILM})


def test_characters_upload_names_faces(client):
    assert "Upload" in client.get("/characters").text
    if FACE_IMAGE.is_file():
        page = client.post("/characters", files={"image": (FACE_IMAGE.name, FACE_IMAGE.read_bytes(), "image/jpeg")})
        assert page.status_code == 200 and "1 face in" in page.text
        assert any(f'class="name">{name}<' in page.text for name in CHARACTERS)
    page = client.post("/characters", files={"image": ("plain.png", image_bytes(), "image/png")})
    assert page.status_code == 200 and "0 faces in plain.png" in page.text


@pytest.mark.parametrize("name, data, mime, reason", [
    ("notes.txt", b"hello", "text/plain", "is not an image"),
    ("fake.jpg", b"not really a jpeg", "image/jpeg", "not a readable image"),
    ("empty.png", b"", "image/png", "is empty"),
    ("cut.png", image_bytes()[:60], "image/png", "truncated or corrupt"),
])
def test_bad_uploads_get_a_message(client, name, data, mime, reason):
    for route in ("/characters", "/tags"):
        page = client.post(route, files={"image": (name, data, mime)})
        assert page.status_code == 400, route
        assert reason in page.text and "Traceback" not in page.text and "/tmp/" not in page.text


def test_upload_pixel_cap_checked_before_decoding(client):
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")  # 48 MP in a few KB
    start = time.perf_counter()
    page = client.post("/tags", files={"image": ("huge.png", buffer.getvalue(), "image/png")})
    assert page.status_code == 400 and "too many pixels" in page.text
    assert time.perf_counter() - start < 2.0


def test_no_file_and_bad_threshold(client):
    assert "choose an image" in client.post("/tags", data={"threshold": ""}).text
    page = client.post("/tags", files={"image": ("a.png", image_bytes(), "image/png")}, data={"threshold": "2"})
    assert page.status_code == 400 and "not in [0, 1]" in page.text


def test_tags_with_threshold(client):
    low = client.post("/tags", files={"image": ("a.png", image_bytes(), "image/png")}, data={"threshold": "0"})
    assert low.status_code == 200 and all(tag in low.text for tag in TAGS)
    high = client.post("/tags", files={"image": ("a.png", image_bytes(), "image/png")}, data={"threshold": "1"})
    assert "no tag reaches its threshold" in high.text
    assert "07_train_captioner.py" in high.text  # no caption model: the tab says which step makes one


def test_caption_shown_when_a_captioner_exists(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from animeml.app.main import create_app
    from animeml.characters.captioner import build_captioner
    from animeml.core.store import save_model

    root = tiny_data(tmp_path)
    vocabulary = ["<pad>", "<unk>", "<start>", "<end>", "blonde", "hair"]
    model = build_captioner("small_cnn", 32, len(vocabulary), 4, embed_dim=8, ff_dim=8, heads=1, pretrained=False)
    save_model(model, root / "models" / "captioner_small_cnn.h5",
               {"kind": "keras_captioner", "vocabulary": vocabulary, "image_size": 32, "sequence_length": 4})
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(root))
    page = TestClient(create_app()).post("/tags", files={"image": ("a.png", image_bytes(), "image/png")})
    assert page.status_code == 200 and 'id="caption"' in page.text and "07_train_captioner.py" not in page.text


def test_report_tab_and_unknown_page(client):
    from animeml.core import paths

    assert "python report.py" in client.get("/report").text  # no report yet
    (paths.reports_dir()).mkdir(parents=True, exist_ok=True)
    (paths.reports_dir() / "index.html").write_text("<h1>report</h1>")
    assert client.get("/report").headers["location"] == "/reports/index.html"
    assert client.get("/reports/index.html").text == "<h1>report</h1>"
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "page not found" in missing.text
    assert client.get("/").headers["location"] == "/anime"


def test_missing_models_and_index_say_which_step(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from animeml.app.main import create_app
    from animeml.core.io import write_csv

    write_csv(anime_rows(), tmp_path / "raw" / "anime.csv")
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path))
    client = TestClient(create_app())
    assert "Cowboy Bebop" in client.get("/anime", params={"q": "bebop"}).text  # search needs no index
    client.post("/favorites/add", data={"anime_id": BEBOP})
    assert "Recommendation/01_build_index.py" in client.get("/favorites").text
    assert "02_train_characters.py" in client.get("/characters").text
    assert "03_train_tagger.py" in client.get("/tags").text
    page = client.post("/tags", files={"image": ("a.png", image_bytes(), "image/png")})
    assert page.status_code == 503 and "03_train_tagger.py" in page.text
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(empty))
    assert "01_fetch_metadata.py" in TestClient(create_app()).get("/anime").text


def test_corrupt_favourites_file_is_one_line_and_left_alone(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from animeml.app.main import create_app
    from animeml.core.io import write_csv

    write_csv(anime_rows(), tmp_path / "raw" / "anime.csv")
    broken = tmp_path / "recommendation" / "favorites.sqlite"
    broken.parent.mkdir()
    broken.write_bytes(b"not a database" * 100)
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path))
    client = TestClient(create_app())
    page = client.get("/favorites")
    assert page.status_code == 500 and "favorites.sqlite is not a readable favourites database" in page.text
    assert client.post("/favorites/add", data={"anime_id": BEBOP}).status_code == 500
    assert broken.read_bytes() == b"not a database" * 100


def test_app_help_is_fast_and_bad_data_dir_is_one_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "app.py", "--help"], cwd=root, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--data-dir" in done.stdout and time.perf_counter() - start < 1.5
    bad = subprocess.run([sys.executable, "app.py", "--data-dir", str(tmp_path / "nowhere")], cwd=root,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.startswith("error: data folder not found") and "Traceback" not in bad.stderr
