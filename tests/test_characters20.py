"""The harder character benchmark (issue 18): crops of one illustration on one side of every split, a given split
file with validation carved from train, the unknown threshold, and a tiny end-to-end run of step 02."""
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.characters.classifier import classification_scores, face_set, nearest_neighbour_scores
from animeml.characters.openset import (UNKNOWN, character_folds, choose_threshold, keep_for_unknown_rate,
                                        name_or_unknown, open_set_curve, open_set_report)
from animeml.core.io import PipelineError
from animeml.core.splits import carve_validation, illustration_groups

SCRIPTS = Path(__file__).resolve().parents[1] / "CharacterTagging"
COLOURS = {"aqua": (30, 200, 200), "blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}


def make_faces(root, per_character=8, size=32):
    """`root/faces/<character>/<hash>-<n>.png`: two crops per illustration hash; one hash (`shared`) has a crop of
    two characters, as a Danbooru illustration showing both."""
    for c, (character, colour) in enumerate(COLOURS.items()):
        folder = root / "faces" / character
        folder.mkdir(parents=True)
        for i in range(per_character):
            noise = np.random.default_rng(100 * c + i).normal(0, 20, (size, size, 3))
            name = "shared-1.png" if (c, i) == (0, 0) else "shared-2.png" if (c, i) == (1, 0) else \
                f"{character}{i // 2:02d}-{i % 2 + 1}.png"
            Image.fromarray(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)).save(folder / name)
    return root / "faces"


def test_crops_of_one_illustration_share_a_group_in_any_folder():
    files = ["ame/ab12.webp-1.jpg", "gura/ab12.webp-2.jpg", "ame/cd34-10.jpg", "ame/3.jpg", "gura/3.jpg",
             "ame/foo-bar.jpg"]
    assert list(illustration_groups(files)) == ["ab12.webp", "ab12.webp", "cd34", "ame/3.jpg", "gura/3.jpg",
                                                "ame/foo-bar.jpg"]


def test_validation_is_carved_from_whole_groups_stratified():
    groups = np.repeat(np.arange(60), 3)
    labels = np.eye(3, dtype=int)[groups % 3]
    split = carve_validation(groups, labels, share=0.2, seed=1)
    assert all(len(set(split[groups == g])) == 1 for g in range(60))
    assert (split == "val").mean() == pytest.approx(0.2, abs=0.02)
    assert [(split[groups % 3 == k] == "val").sum() for k in range(3)] == [12, 12, 12]  # stratified
    assert list(carve_validation(groups, labels, share=0.2, seed=1)) == list(split)  # seeded
    with pytest.raises(PipelineError, match="2 groups"):
        carve_validation([1, 1], [[1], [1]])


def test_split_file_gives_test_and_validation_comes_from_train_whole_illustrations(tmp_path):
    faces = make_faces(tmp_path)
    files = sorted(f"faces/{p.parent.name}/{p.name}" for p in faces.glob("*/*.png"))
    test_groups = {"aqua01", "blue02", "green03", "red00", "shared"}
    split = pd.DataFrame({"file": files, "character": [f.split("/")[1] for f in files],
                          "split": ["test" if illustration_groups([f])[0] in test_groups else "train" for f in files]})
    split.to_csv(tmp_path / "split.csv", index=False)
    table, size = face_set(faces, tmp_path / "split.csv", tmp_path / "unused.csv", val_share=0.25, seed=0)
    assert size == 32 and not (tmp_path / "unused.csv").exists()
    assert set(table["group"][table["split"] == "test"]) == test_groups
    assert table.groupby("group")["split"].nunique().max() == 1  # every illustration on one side
    assert set(table["split"]) == {"train", "val", "test"} and (table["split"] == "val").sum() >= 4

    split.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(PipelineError, match="no split for 1 face"):
        face_set(faces, tmp_path / "short.csv", tmp_path / "unused.csv")
    split.assign(split="holdout").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PipelineError, match="train or test"):
        face_set(faces, tmp_path / "bad.csv", tmp_path / "unused.csv")


def test_split_made_here_keeps_illustrations_whole_and_is_kept(tmp_path):
    faces = make_faces(tmp_path, per_character=10)
    table, _ = face_set(faces, None, tmp_path / "split.csv", val_share=0.2, test_share=0.3, seed=0)
    assert table.groupby("group")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val", "test"}
    saved = pd.read_csv(tmp_path / "split.csv")
    assert set(saved["group"]) == set(table["group"]) and set(saved["split"]) == {"train", "test"}
    again, _ = face_set(faces, None, tmp_path / "split.csv", val_share=0.2, test_share=0.3, seed=7)
    assert list(again["split"] == "test") == list(table["split"] == "test")  # the kept test part, not seed 7's


def test_unknown_threshold_keeps_the_asked_share_of_right_validation_answers():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], 200)
    y = probabilities.argmax(axis=1)
    y[:20] = (y[:20] + 1) % 3  # 20 wrong answers do not count
    threshold = choose_threshold(probabilities, y, keep=0.9)
    right = probabilities.argmax(axis=1) == y
    assert np.mean(probabilities.max(axis=1)[right] >= threshold) == pytest.approx(0.9, abs=0.01)
    assert choose_threshold(probabilities, (probabilities.argmax(axis=1) + 1) % 3) == 0.0
    names = name_or_unknown([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]], ["a", "b"], threshold=0.6)
    assert list(names) == ["a", "b", UNKNOWN]


def test_open_set_report_counts_named_strangers_and_unknown_as_wrong():
    known = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7]])
    report = open_set_report(known, [0, 1, 0, 0], np.array([[0.95, 0.05], [0.5, 0.5], [0.45, 0.55], [0.3, 0.7]]),
                             threshold=0.6, n_boot=200)
    assert report["known_accuracy"] == 0.5  # face 3 unknown, face 4 named wrong
    assert report["known_named"] == 0.75 and report["unknown_named"] == 0.5
    assert report["unknown_named_low"] <= 0.5 <= report["unknown_named_high"]
    assert (report["known_faces"], report["unknown_faces"]) == (4, 4)


def test_a_stricter_validation_rule_names_fewer_strangers_and_fewer_known_faces():
    rng = np.random.default_rng(0)
    val, known, unknown = rng.dirichlet([1, 1, 1], 300), rng.dirichlet([1, 1, 1], 300), rng.dirichlet([1, 1, 1], 100)
    curve = open_set_curve(val, val.argmax(axis=1), known, known.argmax(axis=1), unknown, n_boot=50)
    assert len(curve) == 7 and curve["threshold"].is_monotonic_decreasing
    assert curve["unknown_named"].is_monotonic_increasing and curve["known_named"].is_monotonic_increasing
    loosest = curve.iloc[-1]
    assert loosest["keep_known"] == 0.99 and loosest["threshold"] == choose_threshold(val, val.argmax(axis=1), 0.99)
    # the same numbers as the single report at that threshold
    single = open_set_report(known, known.argmax(axis=1), unknown, loosest["threshold"], n_boot=50)
    assert loosest["unknown_named"] == single["unknown_named"] and loosest["known_accuracy"] == single["known_accuracy"]


def test_rule_calibrated_on_left_out_characters_names_the_asked_share_of_unseen_faces():
    rng = np.random.default_rng(0)

    def fold(n=1500):  # right answers are confident, unseen faces less so, with overlap
        known = rng.dirichlet([8, 1, 1], n)
        unseen = rng.dirichlet([2, 1, 1], n)
        return known, known.argmax(axis=1), unseen

    folds = [fold(), fold()]
    keeps = [keep_for_unknown_rate(folds, rate) for rate in (0.05, 0.1, 0.3)]
    assert keeps == sorted(keeps) and 0 < keeps[0] < keeps[-1] < 1  # a lower target refuses more known faces
    known, y, unseen = fold(20000)  # a model like the calibration ones: its unseen faces get named at about the rate
    for rate, keep in zip((0.05, 0.1, 0.3), keeps):
        assert np.mean(unseen.max(axis=1) >= choose_threshold(known, y, keep)) == pytest.approx(rate, abs=0.02)
    with pytest.raises(ValueError, match="no calibration fold"):
        keep_for_unknown_rate([(known, (y + 1) % 3, unseen)], 0.1)

    parts = character_folds(10, 4, seed=1)
    assert sorted(np.concatenate(parts)) == list(range(10)) and sorted(map(len, parts)) == [2, 2, 3, 3]
    assert [list(p) for p in character_folds(10, 4, seed=1)] == [list(p) for p in parts]
    with pytest.raises(ValueError, match="fewer than two"):
        character_folds(3, 2)  # one fold of 2 leaves 1 character


def test_scores_and_nearest_neighbour_baseline():
    scores = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    result = classification_scores([2, 0, 2], scores, k=2)
    assert result["top1"] == pytest.approx(2 / 3) and result["top2"] == 1.0
    assert result["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    nearest = nearest_neighbour_scores(train, [0, 1, 2], np.array([[2.0, 0.1], [0.6, 0.65]]), 4)
    assert list(nearest.argmax(axis=1)) == [0, 2] and np.isneginf(nearest[:, 3]).all()


def test_resampled_scores_equal_sklearn_on_each_resample():
    # the bootstrap scores every resample at once from per-class counts; each must equal sklearn on that resample
    from sklearn.metrics import f1_score

    from animeml.characters.classifier import resampled_scores

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 60)
    y[y == 4] = 3  # class 4 is never true but can be predicted; resamples miss some classes
    scores = rng.random((60, 6))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    indices = rng.integers(0, 60, (25, 60))
    got = resampled_scores(y, top, 6, indices, k=2)
    for r, i in enumerate(indices):
        assert got["macro_f1"][r] == pytest.approx(f1_score(y[i], top[i, 0], average="macro", zero_division=0))
        assert got["top1"][r] == pytest.approx(np.mean(top[i, 0] == y[i]))
        assert got["top2"][r] == pytest.approx(np.mean((top[i] == y[i][:, None]).any(axis=1)))


def test_step_02_trains_on_a_split_file_and_reports_held_out_characters(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "set20"
    faces = make_faces(root, per_character=12)
    files = sorted(f"faces/{p.parent.name}/{p.name}" for p in faces.glob("*/*.png"))
    split = ["test" if group[-2:] in ("00", "03") else "train" for group in illustration_groups(files)]
    pd.DataFrame({"file": files, "split": split}).to_csv(root / "split.csv", index=False)
    red_test = sum(part == "test" and "/red/" in file for file, part in zip(files, split))
    cut = root / next(file for file, part in zip(files, split) if part == "train" and "/aqua/" in file)
    cut.write_bytes(cut.read_bytes()[:100])  # a training face that no longer decodes is left out, not fatal
    monkeypatch.setattr(sys, "argv", ["02_train_characters.py", "--faces-dir", str(faces), "--split",
                                      str(root / "split.csv"), "--backbones", "efficientnet_lite0",
                                      "--baseline-backbones", "--head-epochs", "1",
                                      "--held-out", "red"])
    runpy.run_path(str(SCRIPTS / "02_train_characters.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert f"1 of {len(files)} faces cannot be read" in err and f"{cut} " in err

    out = tmp_path / "data" / "set20_held_out"
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["model"]) == ["majority class", "efficientnet_lite0"]
    assert (metrics["top1_low"] <= metrics["top1"]).all() and (metrics["top1"] <= metrics["top1_high"]).all()
    assert (metrics["top5"] == 1.0).all()  # three known characters
    openset = pd.read_csv(out / "openset_efficientnet_lite0.csv").iloc[0]
    assert openset["unknown_faces"] == red_test == 4 and 0 <= openset["unknown_named"] <= 1
    curve = pd.read_csv(out / "openset_curve_efficientnet_lite0.csv")
    assert len(curve) == 7 and curve["unknown_named"].is_monotonic_increasing
    assert openset["unknown_named"] == curve.set_index("keep_known").loc[0.95, "unknown_named"]  # the default rule
    confusion = pd.read_csv(out / "confusion_efficientnet_lite0.csv")
    assert list(confusion.columns) == ["true", "aqua", "blue", "green"]
    assert confusion.iloc[:, 1:].to_numpy().sum() == split.count("test") - red_test == metrics["test_faces"][0]
    model = tmp_path / "data" / "models" / "set20_held_out_efficientnet_lite0.h5"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["labels"] == ["aqua", "blue", "green"] and sidecar["image_size"] == 32
    assert sidecar["held_out"] == ["red"] and 0 <= sidecar["unknown_threshold"] <= 1
    from animeml.report.results import character_rows
    row = next(row for row in character_rows(tmp_path / "data") if "`set20_held_out`" in row[0])
    assert "efficientnet_lite0 top-1" in row[1] and "4 faces of unseen characters named" in row[1]

    # The saved model (backbone up to block5c, the rest in the head) names crops from outside.
    crops = tmp_path / "crops"
    crops.mkdir()
    for path in [path for path in sorted(faces.glob("*/*-1.png")) if path != cut][:5]:
        (crops / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    (crops / "broken.png").write_bytes(b"not an image")
    monkeypatch.setattr(sys, "argv", ["identify_characters.py", "--images", str(crops), "--out",
                                      str(tmp_path / "named.csv"), "--model", str(model), "--crops"])
    runpy.run_path(str(SCRIPTS / "identify_characters.py"), run_name="__main__")
    named = pd.read_csv(tmp_path / "named.csv")
    assert len(named) == 6 and list(named["status"]).count("ok") == 5
    ok = named[named["status"] == "ok"]
    assert set(ok["best_character"]) | set(ok["runner_up"]) <= {"aqua", "blue", "green"}
    assert (ok["best_character"] != ok["runner_up"]).all() and (ok["confidence"] >= ok["runner_up_confidence"]).all()
    assert "5 done, 1 skipped" in capsys.readouterr().out


def test_held_out_name_must_be_a_character(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    faces = make_faces(tmp_path)
    from importlib import util

    spec = util.spec_from_file_location("train_characters", SCRIPTS / "02_train_characters.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(PipelineError, match="nobody"):
        module.main(["--faces-dir", str(faces), "--backbones", "small_cnn", "--baseline-backbones",
                     "--held-out", "nobody"])
    # a held-out character whose faces are all in train leaves nothing to measure `unknown` on
    files = sorted(f"{p.parent.name}/{p.name}" for p in faces.glob("*/*.png"))
    split = ["train" if file.startswith("red/") else ("test" if i % 4 == 0 else "train")
             for i, file in enumerate(files)]
    pd.DataFrame({"file": files, "split": split}).to_csv(faces / "split.csv", index=False)
    with pytest.raises(PipelineError, match="none of their faces is in the test split"):
        module.main(["--faces-dir", str(faces), "--split", str(faces / "split.csv"), "--backbones", "small_cnn",
                     "--baseline-backbones", "--held-out", "red"])


def test_head_learning_rate_warms_up_then_falls_along_a_cosine():
    import keras

    from animeml.characters.classifier import HeadCosineSchedule

    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: rates.append(float(model.optimizer.learning_rate.numpy())))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="head")
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    model.fit(np.zeros((40, 2)), np.zeros(40), batch_size=2, epochs=2, verbose=0,
              callbacks=[HeadCosineSchedule(0.1, epochs=2, warmup=0.1), record])
    assert len(rates) == 40 and rates[0] < 0.01  # warming up, not the Adam rate of compile
    assert max(rates) == pytest.approx(0.1, rel=0.05) and np.argmax(rates) == 4  # full rate after 10% of the steps
    assert all(a >= b for a, b in zip(rates[4:], rates[5:])) and rates[-1] < 0.001


def test_outlier_exposure_loss_pulls_outliers_to_uniform_and_keeps_cross_entropy_for_characters():
    import keras

    from animeml.characters.classifier import OUTLIER, outlier_exposure_loss

    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]], np.float32)
    loss = np.asarray(outlier_exposure_loss(0.5)(np.array([0, OUTLIER]), p))
    assert loss == pytest.approx([-np.log(0.7), -0.5 * np.log(p[1]).mean()], rel=1e-5)

    # Two characters as two clusters, outliers in a third: trained with outliers, a face there gets ~1/2 each.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.3, (100, 2)) for c in ([2, 0], [-2, 0], [0, 3])]).astype(np.float32)
    y = np.repeat([0, 1, OUTLIER], 100)
    confidence = {}
    for with_outliers in (False, True):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        keep = slice(None) if with_outliers else slice(0, 200)
        model.compile(keras.optimizers.Adam(0.05), outlier_exposure_loss(0.5))
        model.fit(x[keep], y[keep], epochs=30, batch_size=50, verbose=0)
        confidence[with_outliers] = np.asarray(model(x[200:])).max(axis=1).mean()
        assert (np.asarray(model(x[:200])).argmax(axis=1) == y[:200]).mean() > 0.95
    assert confidence[True] < 0.6 < confidence[False]


def test_step_02_trains_with_outlier_faces_and_reports_how_many_validation_outliers_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    faces = make_faces(tmp_path / "set", per_character=10)
    others = tmp_path / "others"
    others.mkdir()
    for i in range(20):
        noise = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(noise).save(others / f"{i}.png")
    from importlib import util

    spec = util.spec_from_file_location("train_characters", SCRIPTS / "02_train_characters.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--faces-dir", str(faces), "--backbones", "efficientnet_lite0", "--baseline-backbones",
                 "--head-epochs", "1", "--held-out", "red", "--outliers", str(others), "--val-share", "0.25"])
    openset = pd.read_csv(tmp_path / "data" / "set_held_out" / "openset_efficientnet_lite0.csv").iloc[0]
    assert 0 <= openset["val_outliers_named"] <= 1 and openset["unknown_faces"] > 0
    sidecar = json.loads((tmp_path / "data" / "models" / "set_held_out_efficientnet_lite0.json").read_text())
    assert sidecar["labels"] == ["aqua", "blue", "green"]
    assert sidecar["val_outliers_named"] == openset["val_outliers_named"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no images in --outliers"):
        module.main(["--faces-dir", str(faces), "--backbones", "small_cnn", "--baseline-backbones",
                     "--outliers", str(tmp_path / "empty")])


def test_step_02_calibrates_the_unknown_threshold_on_characters_left_out_of_extra_models(tmp_path, monkeypatch,
                                                                                         capsys):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    faces = make_faces(tmp_path / "set", per_character=12)
    for character in ("violet", "yellow"):  # five known characters: three folds of 1-2 each leave at least three
        (faces / character).mkdir()
        for i, source in enumerate(sorted((faces / "aqua").glob("*.png"))):
            pixels = np.asarray(Image.open(source))[:, :, ::-1] if character == "violet" else \
                255 - np.asarray(Image.open(source))
            Image.fromarray(np.ascontiguousarray(pixels)).save(faces / character / source.name)
    from importlib import util

    spec = util.spec_from_file_location("train_characters", SCRIPTS / "02_train_characters.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    common = ["--faces-dir", str(faces), "--backbones", "small_cnn", "--baseline-backbones", "--head-epochs", "2",
              "--held-out", "red", "--val-share", "0.3"]
    with pytest.raises(PipelineError, match="--calibration-folds: 6 calibration folds of 5 characters"):
        module.main(common + ["--unknown-named", "0.1", "--calibration-folds", "6"])
    assert not (tmp_path / "data" / "models").exists()  # refused before any training

    module.main(common + ["--unknown-named", "0.1", "--calibration-folds", "3"])
    out = capsys.readouterr().out
    assert "calibration model 3/3, without" in out
    openset = pd.read_csv(tmp_path / "data" / "set_held_out" / "openset_small_cnn.csv").iloc[0]
    assert openset["unknown_named_target"] == 0.1 and 0 <= openset["keep_known"] <= 1
    sidecar = json.loads((tmp_path / "data" / "models" / "set_held_out_small_cnn.json").read_text())
    assert sidecar["keep_known"] == openset["keep_known"] and sidecar["unknown_threshold"] == openset["threshold"]
    assert sorted(p.name for p in (tmp_path / "data" / "models").iterdir()) == ["set_held_out_small_cnn.h5",
                                                                                 "set_held_out_small_cnn.json"]
    from animeml.report.results import character_rows
    row = next(row for row in character_rows(tmp_path / "data") if "`set_held_out`" in row[0])
    assert f"`--unknown-named 0.1`: the threshold keeps {openset['keep_known']:.2f}" in row[1]


def test_step_02_members_are_averaged_in_the_saved_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    faces = make_faces(tmp_path / "set", per_character=10)
    from importlib import util

    from animeml.characters.classifier import load_model, predict_images

    spec = util.spec_from_file_location("train_characters", SCRIPTS / "02_train_characters.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--faces-dir", str(faces), "--backbones", "small_cnn", "--baseline-backbones", "--head-epochs", "1",
                 "--members", "2"])
    model, sidecar = load_model(tmp_path / "data" / "models" / "set_small_cnn.h5")
    members = [model.get_layer(f"member_{i}") for i in range(2)]
    images = sorted(str(path) for path in faces.glob("*/*.png"))[:6]
    each = [predict_images(member, images, 32) for member in members]
    assert not np.allclose(each[0], each[1])  # two seeds
    assert np.allclose(predict_images(model, images, 32), (each[0] + each[1]) / 2, atol=1e-5)
    assert sidecar["labels"] == sorted(COLOURS)
