import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animeml.core.io import PipelineError
from animeml.characters.tags import read_danbooru_json, read_tags_csv

SCRIPTS = Path(__file__).resolve().parents[1] / "CharacterTagging"
HAIR = {"red_hair": (220, 30, 30), "blue_hair": (30, 30, 220), "green_hair": (30, 200, 30)}


def run_script(name, *args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


def save_image(path, colour, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 15, (24, 24, 3))
    Image.fromarray(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)).save(path)


def test_tags_csv_is_read_relative_to_its_folder_and_unreadable_images_are_dropped(tmp_path, capsys):
    save_image(tmp_path / "images" / "a.png", (0, 0, 0))
    save_image(tmp_path / "images" / "cut.png", (0, 0, 0))
    cut = tmp_path / "images" / "cut.png"
    cut.write_bytes(cut.read_bytes()[:100])
    csv = tmp_path / "tags.csv"
    csv.write_text('file,tags\nimages/a.png,"blonde hair, blue eyes"\nimages/missing.png,red hair\n'
                   'images/cut.png,red hair\n')
    table = read_tags_csv(csv)
    assert table["path"].tolist() == [str(tmp_path / "images" / "a.png")]
    assert table["tags"].tolist() == [["blonde hair", "blue eyes"]]
    err = capsys.readouterr().err
    assert f"2 of 3 images listed in {csv} cannot be read" in err and "missing.png not found" in err
    assert f"{cut} is truncated or corrupt" in err
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(PipelineError, match="none of the images listed in .* can be read"):
        read_tags_csv(csv)
    (tmp_path / "bad.csv").write_text("image,labels\nx,y\n")
    with pytest.raises(PipelineError, match=r"required column\(s\) missing: file, tags \(it has: image, labels\)"):
        read_tags_csv(tmp_path / "bad.csv")


def test_danbooru_json_reads_tag_string_and_tag_lists_and_finds_images_by_id_or_md5(tmp_path, capsys):
    root = tmp_path / "original"
    save_image(root / "0234" / "1234.png", (0, 0, 0))
    save_image(root / "abc.jpg", (0, 0, 0))
    (root / "0055").mkdir()
    (root / "0055" / "55.jpg").write_bytes(b"\xff\xd8\xff not a whole jpeg")
    posts = [{"id": 1234, "file_ext": "png", "tag_string": "1girl blonde_hair blue_eyes"},
             {"id": "77", "md5": "abc", "file_ext": "jpg", "tags": [{"id": "5", "name": "red_hair", "category": "0"}]},
             {"id": 99, "file_ext": "jpg", "tag_string": "no_image_here"},
             {"id": 55, "file_ext": "jpg", "tag_string": "broken_image"}]
    metadata = tmp_path / "posts.json"
    metadata.write_text("\n".join(json.dumps(post) for post in posts) + "\n\n")
    table = read_danbooru_json(metadata, root)
    assert table["path"].tolist() == [str(root / "0234" / "1234.png"), str(root / "abc.jpg")]
    assert table["tags"].tolist() == [["1girl", "blonde hair", "blue eyes"], ["red hair"]]
    err = capsys.readouterr().err  # a post without an image is not news in a dump's subset; a broken image is
    assert "1 of 3 images listed in" in err and "55.jpg" in err and "no_image_here" not in err
    metadata.write_text("{not json\n")
    with pytest.raises(PipelineError, match="posts.json:1"):
        read_danbooru_json(metadata, root)


def test_exclusive_groups_are_found_in_the_data_and_decoded_one_tag_each():
    from animeml.characters.tags import chosen_tags, exclusive_groups, one_per_group

    tags = ["red hair", "blue hair", "blue eyes", "green eyes", "smile", "long hair"]
    y = np.array([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0], [1, 0, 0, 1, 0, 0]])
    assert exclusive_groups(tags, y) == [[0, 1, 5], [2, 3]]  # "long hair", never set, belongs to the hair group
    y_two_hair = np.array([[1, 0, 1, 0, 0, 1], [0, 1, 0, 1, 0, 0]])  # a Danbooru-style row: two hair tags
    assert exclusive_groups(tags, y_two_hair) == [[2, 3]]
    assert exclusive_groups(tags, np.array([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]])) == [[0, 1, 5]]  # no eyes in row 0

    probabilities = np.array([[0.7, 0.6, 0.2, 0.3, 0.9, 0.1]])
    scores = one_per_group(probabilities, [[0, 1, 5], [2, 3]])
    np.testing.assert_allclose(scores, [[0.7, -1, -1, 0.3, 0.9, -1]])
    sidecar = {"labels": tags, "thresholds": [0.5, 0.5, 0.5, 0.5, 0.5, 0.05],
               "exclusive_groups": [["red hair", "blue hair", "long hair"], ["blue eyes", "green eyes"]]}
    assert chosen_tags(probabilities, sidecar) == [[("smile", 0.9), ("red hair", 0.7)]]
    assert [tag for tag, _ in chosen_tags(probabilities, sidecar, threshold=0.0)[0]] == ["smile", "red hair",
                                                                                          "green eyes"]
    independent = {**sidecar, "exclusive_groups": []}  # a tagger whose validation chose independent thresholds
    assert [tag for tag, _ in chosen_tags(probabilities, independent)[0]] == ["smile", "red hair", "blue hair",
                                                                              "long hair"]


@pytest.fixture
def danbooru(tmp_path):
    """48 coloured squares whose hair tag is their colour, as Danbooru2018 posts under original/<bucket>/."""
    root = tmp_path / "original"
    lines = []
    for post_id in range(1000, 1048):
        hair = list(HAIR)[post_id % 3]
        save_image(root / f"{post_id % 1000:04d}" / f"{post_id}.png", HAIR[hair], seed=post_id)
        lines.append(json.dumps({"id": post_id, "md5": f"m{post_id}", "file_ext": "png",
                                 "tag_string": f"1girl {hair} solo" if post_id % 5 == 0 else f"1girl {hair}"}))
    metadata = tmp_path / "posts.json"
    metadata.write_text("\n".join(lines) + "\n")
    return metadata, root


def test_tiny_tagger_trains_from_danbooru_json_and_writes_captions(danbooru, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    metadata, root = danbooru
    run_script("03_train_tagger.py", "--danbooru-json", metadata, "--images-dir", root, "--backbone", "small_cnn",
               "--image-size", 32, "--head-epochs", 1, "--finetune-epochs", 1, "--top-n", 4, monkeypatch=monkeypatch)
    data = tmp_path / "data"
    sidecar = json.loads((data / "models" / "tags_small_cnn.json").read_text())
    assert sorted(sidecar["labels"]) == ["1girl", "blue hair", "green hair", "red hair"]  # solo (10 posts) is 5th
    assert len(sidecar["thresholds"]) == 4 and sidecar["flip"]
    metrics = pd.read_csv(data / "tags" / "metrics.csv")
    # every post has one hair colour: a "one per group" decoding is tried beside the independent thresholds
    assert metrics["model"][0] == "tag prior (global threshold)" and len(metrics) == 4
    assert metrics["model"][3] == "small_cnn (one per group, per-tag thresholds)"
    chosen = metrics["model"][metrics["chosen_on_val"]]
    assert len(chosen) == 1 and sidecar["decoding"] == chosen.item() != metrics["model"][0]
    one_per_group = sidecar["decoding"] == metrics["model"][3]
    assert sidecar["exclusive_groups"] == ([["blue hair", "green hair", "red hair"]] if one_per_group else [])
    # one hair colour per post: the tagger gives the hair colours one softmax, "1girl" its own sigmoid
    assert sidecar["group_softmax"] == [["blue hair", "green hair", "red hair"]]
    assert metrics[["micro_f1", "macro_f1"]].stack().between(0, 1).all()
    assert set(pd.read_csv(data / "tags" / "per_tag.csv")["tag"]) == set(sidecar["labels"])
    # the report reads the file as the step writes it
    from animeml.report.results import tag_rows
    (task, result, _, _, command), = tag_rows(data)
    assert command is None and f"{chosen.item()} trained on" in result and "(kept on validation) micro-F1" in result

    images = tmp_path / "to_tag"
    for i, colour in enumerate(HAIR.values()):
        save_image(images / f"{i}.png", colour, seed=i)
    out = tmp_path / "tags.csv"
    run_script("tag_images.py", "--images", images, "--out", out, "--model", data / "models" / "tags_small_cnn.h5",
               "--txt", "--threshold", 0, monkeypatch=monkeypatch)
    rows = pd.read_csv(out, keep_default_na=False)
    assert rows["file"].tolist() == ["0.png", "1.png", "2.png"]
    for _, row in rows.iterrows():
        tags = row["tags"].split(", ")
        # threshold 0: every tag, best first, but one hair colour only where the decoding is one per group
        assert "1girl" in tags and len(tags) == (2 if one_per_group else 4)
        confidences = [float(c) for c in row["confidences"].split(", ")]
        assert confidences == sorted(confidences, reverse=True)
        assert (images / row["file"]).with_suffix(".txt").read_text().strip() == row["tags"]

    run_script("tag_images.py", "--images", images, "--out", out, "--model", data / "models" / "tags_small_cnn.h5",
               "--threshold", 1.01, monkeypatch=monkeypatch)
    assert (pd.read_csv(out, keep_default_na=False)["tags"] == "").all()
    assert "3 images tagged (0 with at least one tag)" in capsys.readouterr().out


def tagged_csv(folder, colours, offset=0):
    """`folder/tags.csv` of coloured squares in `folder/images/`, each tagged with its hair colour."""
    rows = []
    for i in range(24):
        hair = colours[i % len(colours)]
        save_image(folder / "images" / f"{i}.png", HAIR[hair], seed=offset + i)
        rows.append({"file": f"images/{i}.png", "tags": hair.replace("_", " ")})
    pd.DataFrame(rows).to_csv(folder / "tags.csv", index=False)
    return folder / "tags.csv"


def test_sources_are_numbered_in_order_and_each_danbooru_file_has_its_image_folder(danbooru, tmp_path):
    from animeml.characters.tags import read_tag_sources

    metadata, root = danbooru
    first = tagged_csv(tmp_path / "first", ["red_hair", "blue_hair"])
    table = read_tag_sources([first], [metadata, metadata], [root, root])
    assert table.groupby("source").size().to_dict() == {0: 24, 1: 48, 2: 48}
    assert table["file"][table["source"] == 0].tolist()[:2] == ["0.png", "1.png"]  # under the images folder
    assert len(read_tag_sources([], [metadata, metadata], [root])) == 96  # one folder for all of them
    with pytest.raises(PipelineError, match="one image folder each"):
        read_tag_sources([], [metadata], [])
    with pytest.raises(PipelineError, match="one image folder each"):
        read_tag_sources([], [metadata] * 3, [root, root])


def test_more_sources_add_training_images_and_keep_the_first_sources_test_split(tmp_path, monkeypatch):
    first = tagged_csv(tmp_path / "tags", ["red_hair", "blue_hair"])
    extra = tagged_csv(tmp_path / "tags_extra", ["red_hair", "blue_hair", "green_hair"], offset=100)
    flags = ["--backbone", "small_cnn", "--image-size", 16, "--head-epochs", 1, "--finetune-epochs", 0]
    results = {}
    for sources in (["--tags-csv", first], ["--tags-csv", first, "--tags-csv", extra]):
        data = tmp_path / f"data{len(sources)}"
        monkeypatch.setenv("ANIMEML_DATA_DIR", str(data))
        if len(sources) == 4:  # the run on both sources finds the first run's table in its data folder
            (data / "tags").mkdir(parents=True)
            (data / "tags" / "metrics.csv").write_bytes((tmp_path / "data2" / "tags" / "metrics.csv").read_bytes())
        run_script("03_train_tagger.py", *sources, *flags, monkeypatch=monkeypatch)
        results[len(sources)] = (pd.read_csv(data / "tags" / "split.csv"), pd.read_csv(data / "tags" / "metrics.csv"),
                                 json.loads((data / "models" / "tags_small_cnn.json").read_text()))
    (split_alone, metrics_alone, sidecar_alone), (split_both, metrics_both, sidecar_both) = results[2], results[4]
    pd.testing.assert_frame_equal(split_alone, split_both)  # the same test faces, all from the first source
    assert sorted(split_both["group"]) == sorted(f"{i}.png" for i in range(24))
    # the second run keeps the first run's rows (other sources, same test split) beside its own
    assert list(metrics_both["sources"]) == ["tags"] * 4 + ["tags + tags_extra"] * 4
    test_images = int((split_alone["split"] == "test").sum())
    assert set(metrics_alone["test_images"]) == set(metrics_both["test_images"]) == {test_images}
    assert (metrics_both["micro_f1_low"] <= metrics_both["micro_f1"]).all()
    assert (metrics_both["micro_f1"] <= metrics_both["micro_f1_high"]).all()
    assert sidecar_alone["labels"] == ["blue hair", "red hair"]
    assert sorted(sidecar_both["labels"]) == ["blue hair", "green hair", "red hair"]  # tags of the extra source


def test_members_train_with_their_own_seeds_and_the_saved_tagger_averages_them(tmp_path, monkeypatch):
    from animeml.core.store import load_model

    first = tagged_csv(tmp_path / "tags", ["red_hair", "blue_hair"])
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    run_script("03_train_tagger.py", "--tags-csv", first, "--backbone", "small_cnn", "--image-size", 16,
               "--head-epochs", 1, "--finetune-epochs", 0, "--members", 2, monkeypatch=monkeypatch)
    model, sidecar = load_model(tmp_path / "data" / "models" / "tags_small_cnn.h5")
    members = [model.get_layer(f"member_{i}") for i in range(2)]
    images = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype(np.float32)
    outputs = [np.asarray(member(images)) for member in members]
    assert not np.allclose(outputs[0], outputs[1])  # seeds 42 and 43: two different taggers
    np.testing.assert_allclose(np.asarray(model(images)), np.mean(outputs, axis=0), atol=1e-6)
    assert len(sidecar["thresholds"]) == 2


def test_group_softmax_sums_each_exclusive_group_to_one_and_survives_saving(tmp_path):
    import keras
    from keras import ops

    from animeml.characters.classifier import build_classifier, grouped_crossentropy, load_model
    from animeml.core.store import save_model

    groups = [[0, 3], [1, 4, 5]]  # column 2 belongs to no group
    model = build_classifier("small_cnn", 6, 16, multi_label=True, pretrained=False, exclusive_groups=groups)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    probabilities = np.asarray(model(images))
    for group in groups:
        np.testing.assert_allclose(probabilities[:, group].sum(axis=1), 1, rtol=1e-5)
    head = model.get_layer("head")
    logits = np.asarray(keras.Model(head.input, head.get_layer("logits").output)(model.get_layer("backbone")(images)))
    np.testing.assert_allclose(probabilities[:, 2], 1 / (1 + np.exp(-logits[:, 2])), rtol=1e-5)
    np.testing.assert_allclose(probabilities[:, [0, 3]], np.exp(logits[:, [0, 3]]) /
                               np.exp(logits[:, [0, 3]]).sum(axis=1, keepdims=True), rtol=1e-5)

    save_model(model, tmp_path / "tags_small_cnn.h5", {"labels": list("abcdef")})
    loaded, _ = load_model(tmp_path / "tags_small_cnn.h5")
    np.testing.assert_allclose(np.asarray(loaded(images)), probabilities, rtol=1e-5)

    # the loss: each group's cross-entropy and the other tag's binary one, averaged over the three
    y_true = np.array([[1, 0, 1, 0, 0, 1]], np.float32)
    y_pred = np.array([[0.7, 0.2, 0.9, 0.3, 0.5, 0.3]], np.float32)
    expected = -(np.log(0.7) + np.log(0.3) + np.log(0.9)) / 3
    loss = grouped_crossentropy(groups, 6)(ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred))
    np.testing.assert_allclose(np.asarray(loss), [expected], rtol=1e-5)


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00\x81" * 64), "cannot parse"),
    (lambda p: None, "not found"),
])
def test_an_unusable_tags_split_or_labels_csv_is_one_error_naming_it(tmp_path, make, words):
    from animeml.characters.classifier import read_image_labels, read_split_file

    path = tmp_path / "given.csv"
    make(path)
    faces = pd.DataFrame({"path": [str(tmp_path / "a.png")]})
    for read, what in ((read_tags_csv, "tags CSV"), (lambda p: read_split_file(p, faces), "split CSV"),
                       (read_image_labels, "labels CSV")):
        with pytest.raises(PipelineError, match=f"{what}.*{words}|{words} {what}") as err:
            read(path)
        assert str(path) in str(err.value)
