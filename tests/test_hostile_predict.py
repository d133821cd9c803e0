"""The four prediction scripts against hostile input: folders of broken images next to good ones, captions that
must not be overwritten, clashing output names, corrupt model stores, odd CSVs and flags. Every case ends with a
row per input and a reason, or exit status 2 and one `error:` line; never a traceback."""
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core.batch import OK, SKIPPED, Outcome, output_paths, run_batch, write_output
from animeml.core.imagefile import ImageUnreadable, check_image, read_rgb
from animeml.core.io import PipelineError
from animeml.core.paths import ROOT, SHARED

from script_runs import assert_one_error_line, run_script

TAGS, GENRES, CHARACTERS = ["red hair", "blue eyes", "smile"], ["Action", "Drama"], ["aoba", "umiko"]
GOOD = ["a.jpg", "a.png", "good.jpg"]
BROKEN = {"trunc.jpg": "truncated", "text.jpg": "not a readable image", "zero.jpg": "empty", "x.jpg": "folder",
          "bomb.png": "too many pixels"}
SCRIPTS = ["AnimeScorePredictionAllParameters/predict_score.py", "GenreClassification/predict_genres.py",
           "CharacterTagging/tag_images.py", "CharacterTagging/identify_characters.py"]


def save_random_image(path, seed, size=(48, 40), format=None):
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=format)


def make_broken_folder(folder):
    """Three good images (a.jpg and a.png share a stem) and five broken ones: truncated, text named .jpg, zero
    bytes, a folder named x.jpg and a 17 KB PNG that claims 12000x12000 pixels."""
    folder.mkdir(parents=True)
    for seed, name in enumerate(GOOD):
        save_random_image(folder / name, seed)
    whole = (folder / "good.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(whole[:len(whole) // 2])
    (folder / "text.jpg").write_text("this is not an image")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "x.jpg").mkdir()
    Image.new("1", (12000, 12000)).save(folder / "bomb.png")
    return folder


def small_net(n_outputs, activation, input_name=None):
    import keras

    image = keras.Input((32, 32, 3), name=input_name)
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, keras.layers.Dense(n_outputs, activation=activation)(x))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Tiny 32 px models with the sidecars the task modules expect, saved by the model store."""
    import keras

    from animeml.core.store import save_model
    from animeml.score.models import make_sidecar

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("models")
    save_model(small_net(len(TAGS), "sigmoid"), root / "tags.h5",
               {"labels": TAGS, "image_size": 32, "thresholds": [0.0] * len(TAGS)})
    save_model(small_net(len(GENRES), "sigmoid"), root / "genres.h5",
               {"genres": GENRES, "image_size": [32, 32], "thresholds": {g: 0.5 for g in GENRES},
                "global_threshold": 0.5})
    save_model(small_net(len(CHARACTERS), "softmax"), root / "characters.h5", {"labels": CHARACTERS, "image_size": 32})
    save_model(small_net(1, None, "image"), root / "vision.h5",
               make_sidecar("vision", 7.0, backbone="small_cnn", image_size=(32, 32)))
    return root


@pytest.fixture
def images(tmp_path):
    return make_broken_folder(tmp_path / "images")



def assert_rows_per_input(table, key="file", more_broken=None):
    """One row per input of the broken folder: the good ones ok, each broken one skipped with its reason."""
    broken = {**BROKEN, **(more_broken or {})}
    rows = table.set_index(key)
    assert sorted(rows.index) == sorted(GOOD + list(broken))
    assert (rows.loc[GOOD, "status"] == OK).all() and (rows.loc[GOOD, "reason"].fillna("") == "").all()
    for name, reason in broken.items():
        assert rows.loc[name, "status"] == SKIPPED and reason in rows.loc[name, "reason"], rows.loc[name, "reason"]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the shared pieces ---------------------------------------------------------------------------------------

def test_imagefile_names_each_problem(images):
    assert check_image(images / "good.jpg") == (48, 40)
    assert read_rgb(images / "a.png").shape == (40, 48, 3)
    for name, reason in BROKEN.items():
        with pytest.raises(ImageUnreadable, match=reason) as err:
            read_rgb(images / name)
        assert name in str(err.value)
    with pytest.raises(ImageUnreadable, match="PNG image; this step reads JPEG"):
        check_image(images / "a.png", formats=("JPEG",))


def test_read_image_decodes_once_and_names_each_problem(images):
    from animeml.core.images import load_image, read_image

    decoded = read_image(images / "good.jpg", 32)
    assert decoded.dtype == np.uint8  # whole values, so nothing is lost
    np.testing.assert_array_equal(decoded, load_image(str(images / "good.jpg"), 32))
    write_truncated_png(images)
    for name, reason in {**BROKEN, "trunc.png": "truncated or corrupt"}.items():
        with pytest.raises(ImageUnreadable, match=reason) as err:
            read_image(images / name, 32)
        assert name in str(err.value) and "Op:" not in str(err.value)
    save_random_image(images / "a.webp", 0, format="WEBP")
    with pytest.raises(ImageUnreadable, match="WEBP image; this step reads JPEG"):
        read_image(images / "a.webp", 32)


def write_truncated_png(images):
    whole = (images / "a.png").read_bytes()
    (images / "trunc.png").write_bytes(whole[:-12])  # no IEND chunk: PIL's decode accepts it, TensorFlow's not


def test_read_images_decodes_a_chunk_at_once_and_a_bad_file_costs_only_its_own(images):
    """The files whose header passes are decoded in one graph call; a file that passes its header check and then
    fails TensorFlow's decode fails that call, and each file is decoded alone to find it."""
    from animeml.core.images import read_image, read_images

    write_truncated_png(images)
    names = ["good.jpg", "trunc.png", "a.png", "text.jpg", "a.jpg"]
    for chunk in (names, [name for name in names if name != "trunc.png"]):
        read = read_images([images / name for name in chunk], 32)
        assert len(read) == len(chunk)
        for name, image in zip(chunk, read):
            if name in ("trunc.png", "text.jpg"):
                assert isinstance(image, ImageUnreadable) and name in str(image)
            else:
                assert image.dtype == np.uint8
                np.testing.assert_array_equal(image, read_image(images / name, 32))
    assert "truncated or corrupt" in str(read_images([images / "trunc.png"], 32)[0])
    assert read_images([], 32) == []


def test_large_jpeg_is_downsized_before_decoding_and_bomb_never_decoded(images):
    Image.new("RGB", (3000, 2000), (200, 30, 90)).save(images / "large.jpg")
    with pytest.raises(ImageUnreadable, match="too many pixels"):
        read_rgb(images / "large.jpg", max_pixels=1_000_000)
    reduced = read_rgb(images / "large.jpg", max_pixels=1_000_000, downsize=True)
    assert reduced.shape[0] * reduced.shape[1] <= 1_000_000 and abs(reduced.shape[1] / reduced.shape[0] - 1.5) < 0.01
    # In a fresh process (no TensorFlow), refusing the 12000x12000 PNG, even when asked to downsize, costs no
    # memory: decoding it as RGB would take 432 MB. VmHWM is the peak resident memory of this process image.
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read the peak memory of a process")
    code = ("import sys; from animeml.core.imagefile import read_rgb, ImageUnreadable\n"
            "try: read_rgb(sys.argv[1], 4_000_000, downsize=True)\n"
            "except ImageUnreadable as err: print(err)\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    done = subprocess.run([sys.executable, "-c", code, str(images / "bomb.png")], capture_output=True, text=True,
                          timeout=60)
    message, peak_kb = done.stdout.splitlines()
    assert "too many pixels" in message and int(peak_kb) < 200_000, done.stdout


def test_batch_isolates_the_item_that_fails():
    def load(item):
        if item == "unreadable":
            raise PipelineError("unreadable item")
        return item

    def predict(chunk):
        if "poison" in chunk:
            raise RuntimeError("the library choked\nsecond line")
        return [{"length": len(item)} for item in chunk]

    items = ["a", "unreadable", "poison", "bb", "ccc"]
    outcomes = run_batch(items, load, predict, chunk_size=3)
    assert [o.ok for o in outcomes] == [True, False, False, True, True]
    assert outcomes[1].reason == "unreadable item"
    assert outcomes[2].reason == "failed: RuntimeError: the library choked"
    assert [o.result["length"] for o in outcomes if o.ok] == [1, 2, 3]
    assert Outcome(reason="x").ok is False


def test_batch_loads_a_chunk_together_and_isolates_the_item_that_fails():
    calls = []

    def load(chunk):  # one prepared item or one exception per item; a chunk with "crash" fails as a whole
        calls.append(list(chunk))
        if "crash" in chunk:
            raise RuntimeError("the decoder choked")
        return [PipelineError("unreadable item") if item == "unreadable" else item.upper() for item in chunk]

    items = ["a", "unreadable", "bb", "crash", "ccc"]
    outcomes = run_batch(items, load, lambda chunk: chunk, chunk_size=3, load_together=True)
    assert [o.result for o in outcomes] == ["A", None, "BB", None, "CCC"]
    assert outcomes[1].reason == "unreadable item"
    assert outcomes[3].reason == "failed: RuntimeError: the decoder choked"
    assert calls == [["a", "unreadable", "bb"], ["crash", "ccc"], ["crash"], ["ccc"]]


def test_batch_loads_the_next_chunk_while_this_one_is_predicted():
    import threading
    import time

    loader_threads = set()

    def load(item):
        loader_threads.add(threading.current_thread().name)
        time.sleep(0.05)  # 4 items: 0.2 s a chunk
        return item

    def predict(chunk):
        time.sleep(0.2)
        return [item * 2 for item in chunk]

    start = time.perf_counter()
    outcomes = run_batch(list(range(20)), load, predict, chunk_size=4)
    took = time.perf_counter() - start
    assert [o.result for o in outcomes] == [2 * i for i in range(20)]
    assert took < 1.6, f"{took:.2f} s: loads and predictions took turns (2.0 s) instead of overlapping (1.2 s)"
    assert len(loader_threads) == 1 and threading.current_thread().name not in loader_threads


def test_output_paths_never_collide_and_write_output_keeps_user_files(tmp_path):
    inputs = [tmp_path / name for name in ["a.jpg", "a.png", "b.jpg", "a.jpg.png", "B.gif"]]
    outputs = output_paths(inputs, ".txt")
    assert [p.name for p in outputs] == ["a.jpg.txt", "a.png.txt", "b.jpg.txt", "a.jpg.png.txt", "B.gif.txt"]
    assert [p.name for p in output_paths(inputs[2:3], ".png", tmp_path / "out")] == ["b.png"]
    caption = tmp_path / "c.txt"
    caption.write_text("red hair, smile\n")
    before = digest(caption)
    assert write_output(caption, "blue eyes\n") == "kept" and digest(caption) == before
    assert write_output(caption, "smile, blue eyes", "append") == "appended"
    assert caption.read_text() == "red hair, smile, blue eyes\n"
    assert write_output(caption, "x\n", "overwrite") == "overwritten" and caption.read_text() == "x\n"
    assert write_output(tmp_path / "new.txt", b"\x89PNG") == "written"


# --- the scripts ---------------------------------------------------------------------------------------------

def test_tag_images_tags_the_good_images_and_keeps_user_captions(stores, images, tmp_path):
    (images / "good.txt").write_text("my own caption, do not touch\n")
    user_caption = digest(images / "good.txt")
    start = time.monotonic()
    status, out, err = run_script("CharacterTagging/tag_images.py", "--images", images, "--out", tmp_path / "t.csv",
                                  "--model", stores / "tags.h5", "--txt")
    assert status == 0 and "Traceback" not in err, err
    table = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert_rows_per_input(table)
    assert "3 done, 5 skipped" in out
    assert digest(images / "good.txt") == user_caption
    for name in ("a.jpg", "a.png"):
        assert (images / f"{name}.txt").read_text().strip() == table.set_index("file").loc[name, "tags"] != ""
    assert table.set_index("file").loc["good.jpg", "caption_file"] == "good.txt (kept)"

    status, _, err = run_script("CharacterTagging/tag_images.py", "--images", images, "--out", tmp_path / "t.csv",
                                "--model", stores / "tags.h5", "--txt", "--append")
    assert status == 0, err
    appended = (images / "good.txt").read_text()
    assert appended.startswith("my own caption, do not touch, ") and all(tag in appended for tag in TAGS)
    assert time.monotonic() - start < 60


def test_tag_images_flags_and_nothing_to_do(stores, images, tmp_path):
    status, _, err = run_script("CharacterTagging/tag_images.py", "--images", images, "--out", tmp_path / "t.csv",
                                "--model", stores / "tags.h5", "--append")
    assert status == 2 and "add --txt" in err and "Traceback" not in err
    status, _, err = run_script("CharacterTagging/tag_images.py", "--images", images, "--out", tmp_path / "t.csv",
                                "--model", stores / "tags.h5", "--threshold", "-1")
    assert status == 2 and "--threshold" in err
    for script in SCRIPTS[1:]:
        status, _, err = run_script(script, "--images", images, "--out", tmp_path, "--model", stores / "tags.h5")
        assert_one_error_line(status, err, "is a folder")
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    for name in BROKEN:
        (images / name).rename(only_broken / name)
    status, _, err = run_script("CharacterTagging/tag_images.py", "--images", only_broken, "--out",
                                tmp_path / "none.csv", "--model", stores / "tags.h5")
    assert_one_error_line(status, err, "nothing could be done", "5 images")
    assert len(pd.read_csv(tmp_path / "none.csv")) == 5  # the reasons are still written


def test_predict_genres_one_row_per_image(stores, images, tmp_path):
    write_truncated_png(images)  # fails the decoding of its chunk as a whole: each image is then decoded alone
    status, out, err = run_script("GenreClassification/predict_genres.py", "--images", images, "--out",
                                  tmp_path / "g.csv", "--model", stores / "genres.h5")
    assert status == 0 and "Traceback" not in err, err
    table = pd.read_csv(tmp_path / "g.csv")
    assert_rows_per_input(table, more_broken={"trunc.png": "truncated or corrupt"})
    good = table[table["status"] == OK]
    assert good[GENRES].apply(lambda column: column.between(0, 1)).all().all()
    assert table.loc[table["status"] == SKIPPED, GENRES].isna().all().all()
    assert "3 done, 6 skipped" in out


def test_identify_characters_reads_safely_and_draws_without_collisions(stores, images, tmp_path):
    if not (SHARED / "models" / "lbpcascade_animeface.xml").exists():
        pytest.skip("the anime-face cascade is absent from ../shared/models")
    Image.new("RGB", (4000, 3000), (250, 240, 230)).save(images / "large.jpg")  # reduced before detection
    out = tmp_path / "faces.csv"
    status, stdout, err = run_script("CharacterTagging/identify_characters.py", "--images", images, "--out", out,
                                     "--model", stores / "characters.h5")
    assert status == 0 and "Traceback" not in err, err
    per_image = pd.read_csv(tmp_path / "faces_images.csv").set_index("file")
    assert per_image.loc["large.jpg", "status"] == OK
    assert_rows_per_input(per_image.drop(index="large.jpg").reset_index())
    drawn = {p.name for p in (tmp_path / "faces_boxes").iterdir()}
    assert {"a.jpg.png", "a.png.png", "good.png", "large.png"} == drawn
    width, height = Image.open(tmp_path / "faces_boxes" / "large.png").size
    assert width * height <= 4_000_000  # 16 megapixels at most reach the cascade after --upscale 2
    assert list(pd.read_csv(out).columns[:2]) == ["file", "face"]
    assert "4 done, 5 skipped" in stdout

    status, _, err = run_script("CharacterTagging/identify_characters.py", "--images", images, "--out", out,
                                "--model", stores / "characters.h5", "--drawn-dir", images)
    assert status == 2 and "must not be the --images folder" in err
    status, _, err = run_script("CharacterTagging/identify_characters.py", "--images", images, "--out", out,
                                "--model", stores / "characters.h5", "--scale-factor", "1.0", "--upscale", "0")
    assert status == 2 and "--scale-factor must be > 1" in err and "--upscale must be > 0" in err


def test_predict_score_rows_and_reasons(stores, tmp_path):
    posters = tmp_path / "posters"
    make_broken_folder(posters)
    files = ["good.jpg", "trunc.jpg", "text.jpg", "zero.jpg", "x.jpg", "bomb.png", "missing.jpg", ""]
    pd.DataFrame({"anime_id": range(1, 9), "Name": [f"anime {i}" for i in range(1, 9)],
                  "image_path": [f"posters/{f}" if f else "" for f in files]}).to_csv(tmp_path / "new.csv",
                                                                                       index=False)
    status, out, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--kind", "vision",
                                  "--model", stores / "vision.h5", "--csv", tmp_path / "new.csv", "--out",
                                  tmp_path / "s.csv")
    assert status == 0 and "Traceback" not in err, err
    scores = pd.read_csv(tmp_path / "s.csv", keep_default_na=False).set_index("anime_id")
    assert len(scores) == 8 and scores.loc[1, "status"] == OK and scores.loc[1, "predicted_score"] != ""
    expected = ["truncated", "not a readable image", "empty", "folder", "too many pixels", "not found",
                "no poster given"]
    for anime_id, reason in zip(range(2, 9), expected):
        assert scores.loc[anime_id, "status"] == SKIPPED and reason in scores.loc[anime_id, "reason"]
    assert "1 done, 7 skipped" in out


def test_predict_score_bad_tables_and_flags(stores, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))  # no trained model of the developer's
    vision = ["--kind", "vision", "--model", stores / "vision.h5", "--images", tmp_path, "--out", tmp_path / "s.csv"]
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("anime_id,Name\n")
    (tmp_path / "no_name.csv").write_text("anime_id\n1\n")
    for csv, fragment in [(tmp_path, "is a folder"), (tmp_path / "empty.csv", "is empty"),
                          (tmp_path / "header.csv", "no rows"), (tmp_path / "no_name.csv", "Name"),
                          (tmp_path / "absent.csv", "absent.csv")]:
        status, _, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--csv", csv, *vision)
        assert_one_error_line(status, err, fragment)

    # A model that reads synopses needs the Synopsis column: one line, not a traceback deep in the encoder.
    synopsis_model = tmp_path / "synopsis.h5"
    synopsis_model.write_bytes((stores / "vision.h5").read_bytes())
    sidecar = json.loads((stores / "vision.json").read_text())
    synopsis_model.with_suffix(".json").write_text(json.dumps({**sidecar, "inputs": ["image", "synopsis"]}))
    (tmp_path / "ok.csv").write_text("anime_id,Name\n1,A\n")
    status, _, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--csv", tmp_path / "ok.csv",
                                "--model", synopsis_model, "--images", tmp_path, "--out", tmp_path / "s.csv")
    assert_one_error_line(status, err, "Synopsis")

    # The old spelling --model KIND still works, with one deprecation line; here its default file is absent.
    status, _, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--model", "text", "--csv",
                                tmp_path / "ok.csv", "--out", tmp_path / "s.csv")
    assert err.count("--model text is deprecated") == 1
    assert_one_error_line(status, err, "anime_text_model.h5", "04_train_text_model.py")
    status, _, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--csv", tmp_path / "ok.csv",
                                *vision, "--batch-size", "0")
    assert status == 2 and "--batch-size" in err
    status, _, err = run_script("AnimeScorePredictionAllParameters/predict_score.py", "--csv", tmp_path / "ok.csv",
                                *vision, "--out", tmp_path)
    assert_one_error_line(status, err, "is a folder")


@pytest.mark.parametrize("broken", ["h5", "sidecar"])
def test_corrupt_model_store_is_one_line_naming_the_file_and_step(stores, images, tmp_path, broken):
    cases = [("CharacterTagging/tag_images.py", "tags", "03_train_tagger.py", ["--images", images]),
             ("GenreClassification/predict_genres.py", "genres", "GenreClassification/02_train.py",
              ["--images", images]),
             ("CharacterTagging/identify_characters.py", "characters", "02_train_characters.py", ["--images", images]),
             ("AnimeScorePredictionAllParameters/predict_score.py", "vision", "01_train_vision_model.py",
              ["--kind", "vision", "--csv", tmp_path / "ok.csv", "--images", images])]
    (tmp_path / "ok.csv").write_text("anime_id,Name\n1,A\n")
    for script, stem, step, args in cases:
        model = tmp_path / f"{stem}.h5"
        model.write_bytes((stores / f"{stem}.h5").read_bytes())
        model.with_suffix(".json").write_text((stores / f"{stem}.json").read_text())
        corrupt = model if broken == "h5" else model.with_suffix(".json")
        corrupt.write_bytes(corrupt.read_bytes()[:len(corrupt.read_bytes()) // 3])  # truncated
        before = digest(corrupt)
        status, _, err = run_script(script, *args, "--model", model, "--out", tmp_path / "out.csv")
        assert_one_error_line(status, err, stem, step)
        assert digest(corrupt) == before


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_at_once_without_tensorflow(script):
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert done.returncode == 0 and "usage:" in done.stdout and done.stderr == ""
    assert elapsed < 1.5, f"{script} --help took {elapsed:.2f} s"


def test_a_real_run_of_only_broken_images_exits_2_with_one_line(stores, images, tmp_path):
    for name in GOOD:
        (images / name).unlink()
    done = subprocess.run([sys.executable, str(ROOT / "GenreClassification/predict_genres.py"), "--images", images,
                           "--out", tmp_path / "g.csv", "--model", stores / "genres.h5"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: nothing could be done: 5 images")
