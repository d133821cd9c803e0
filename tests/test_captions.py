"""Captions end to end on tiny real data the tests make: a caption set of real faces from ../shared/data/tags in
both layouts, a tiny BLIP (small BlipConfig, a tokenizer on the set's own words) fine-tuned, checkpointed and
resumed, the Keras captioner trained, saved to .h5 and reloaded, captioning a folder, and the evaluation table."""
import importlib.util
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from animeml.characters import captions
from animeml.characters.caption_metrics import tokenize
from animeml.core.io import PipelineError
from animeml.core.paths import ROOT, SHARED

SCRIPTS = ROOT / "CharacterTagging"
FACES = 24


def script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_blip(folder, words):
    """A BLIP of one tiny layer per tower on 32 px images, with a BERT tokenizer over `words`, saved with
    save_pretrained as a downloaded model would be."""
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + sorted(words)
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(vision_config=dict(**tiny, image_size=32, patch_size=8),
                        text_config=dict(**tiny, vocab_size=len(vocab), max_position_embeddings=64,
                                         bos_token_id=vocab.index("[DEC]"), pad_token_id=0,
                                         sep_token_id=vocab.index("[SEP]"), eos_token_id=vocab.index("[SEP]")),
                        projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(0)
    captions.save_blip(processor, BlipForConditionalGeneration(config), folder)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """data dir, the caption set in both layouts (step 05 on 24 real faces), and a tiny base BLIP."""
    if not (SHARED / "data" / "tags" / "tags.csv").is_file():
        pytest.skip(f"{SHARED}/data/tags (the real tagged faces) is absent")
    root = tmp_path_factory.mktemp("captions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANIMEML_DATA_DIR", str(root / "data"))
        csv_set = root / "faces"
        script("05_make_caption_set.py").main(["--out", str(csv_set), "--limit", str(FACES), "--arrow",
                                               "--shards", "2"])
        words = {w for c in pd.read_csv(csv_set / "captions.csv")["caption"] for w in tokenize(c)}
        build_tiny_blip(root / "blip_base", words)
        yield {"root": root, "csv": csv_set, "arrow": root / "faces_arrow", "blip": root / "blip_base"}


def test_both_layouts_read_the_same_rows_and_split_is_saved(work):
    from_csv, bad_csv = captions.read_caption_set(work["csv"])
    from_arrow, bad_arrow = captions.read_caption_set(work["arrow"])
    assert len(from_csv) == len(from_arrow) == FACES and bad_csv.empty and bad_arrow.empty
    assert sorted(from_csv.captions) == sorted(from_arrow.captions)
    assert sorted(p.name for p in (work["arrow"] / "train" / "shards").iterdir()) == [
        "anime-captions-train-00000-of-00002.arrow", "anime-captions-train-00001-of-00002.arrow"]
    assert from_arrow.image(0).size == (96, 96) and from_arrow.image_bytes(0) in {
        (work["csv"] / f).read_bytes() for f in pd.read_csv(work["csv"] / "captions.csv")["file"]}
    first = captions.split_caption_set(from_csv, bad_csv, seed=3)
    again = captions.split_caption_set(*captions.read_caption_set(work["csv"]), seed=99)  # the saved split wins
    assert captions.split_path(work["csv"]).is_file()
    assert {k: v.keys for k, v in first.items()} == {k: v.keys for k, v in again.items()}
    assert sum(len(part) for part in first.values()) == FACES and len(first["test"]) > 0


def test_bad_rows_are_reported_and_skipped(work, tmp_path):
    table = pd.read_csv(work["csv"] / "captions.csv")
    (tmp_path / "images").mkdir()
    for file in table["file"][:4]:
        (tmp_path / file).write_bytes((work["csv"] / file).read_bytes())
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    rows = [*table.head(4).itertuples(index=False), ("images/broken.jpg", "a face"), (table["file"][0], " "),
            ("missing.jpg", "a face"), ("../../etc/passwd", "a face")]
    pd.DataFrame(rows, columns=["file", "caption"]).to_csv(tmp_path / "captions.csv", index=False)
    data, bad = captions.read_caption_set(tmp_path)
    assert len(data) == 4
    reasons = dict(zip(bad["key"], bad["reason"]))
    assert reasons["images/broken.jpg"].startswith("image does not decode")
    assert reasons[table["file"][0]] == "empty caption" and reasons["missing.jpg"] == "image file missing"
    assert reasons["../../etc/passwd"] == "image path leaves the caption folder"
    captions.split_caption_set(data, bad)
    assert len(pd.read_csv(captions.bad_rows_path(tmp_path))) == 4


def test_no_caption_set_is_one_line(work, tmp_path):
    with pytest.raises(PipelineError, match="no caption set"):
        captions.read_caption_set(tmp_path)
    with pytest.raises(PipelineError, match="exists; pass --overwrite"):
        script("05_make_caption_set.py").main(["--out", str(work["csv"]), "--limit", "3"])


def test_blip_finetunes_checkpoints_and_resumes_exactly(work, capsys):
    step06 = script("06_finetune_blip.py")
    common = ["--data", str(work["arrow"]), "--model", str(work["blip"]), "--batch-size", "4", "--accumulation",
              "2", "--checkpoint-every", "2", "--learning-rate", "1e-3", "--max-length", "16", "--num-beams", "1"]
    models = work["root"] / "data" / "models"
    step06.main(common + ["--out", str(models / "unbroken"), "--steps", "4"])
    step06.main(common + ["--out", str(models / "resumed"), "--steps", "2"])
    checkpoints = work["root"] / "data" / "captions" / "blip_checkpoints" / "resumed"
    assert [p.name for p in checkpoints.iterdir()] == ["step_0000002"]
    with pytest.raises(PipelineError, match="exists"):
        step06.main(common + ["--out", str(models / "resumed"), "--steps", "4"])
    step06.main(common + ["--out", str(models / "resumed"), "--steps", "4", "--overwrite"])
    assert "resuming from" in capsys.readouterr().out
    reports = work["root"] / "data" / "captions"
    unbroken, resumed = (pd.read_csv(reports / f"{name}_loss.csv") for name in ("unbroken", "resumed"))
    assert list(resumed["step"][resumed["split"] == "train"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed["loss"], unbroken["loss"], rtol=1e-4)  # same batches, same weights
    assert resumed["loss"].iloc[-2] < resumed["loss"].iloc[0]  # it learns
    assert (reports / "resumed_loss.png").stat().st_size > 0
    assert (models / "resumed" / "config.json").is_file()
    assert json.loads((models / "resumed" / "animeml_run.json").read_text())["run"]["metrics"]["steps"] == 4


def test_blip_finetunes_on_the_csv_layout_and_captions_a_folder(work, tmp_path):
    out = work["root"] / "data" / "models" / "blip_captions"
    script("06_finetune_blip.py").main(["--data", str(work["csv"]), "--model", str(work["blip"]), "--out", str(out),
                                        "--steps", "2", "--batch-size", "4", "--checkpoint-every", "1",
                                        "--num-beams", "1"])
    images = tmp_path / "images"
    images.mkdir()
    for file in sorted((work["csv"] / "images").iterdir())[:3]:
        (images / file.name).write_bytes(file.read_bytes())
    (images / "0_broken.png").write_bytes(b"\x89PNG broken")
    (images / sorted(images.glob("*.jpg"))[0].with_suffix(".txt").name).write_text("mine\n")
    caption_images = script("caption_images.py")
    caption_images.main(["--images", str(images), "--out", str(tmp_path / "out.csv"), "--txt", "--batch-size", "2",
                         "--max-length", "12", "--num-beams", "2"])  # the step-06 model is the default
    table = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(table["status"]) == ["skipped", "ok", "ok", "ok"]  # 0_broken.png sorts first
    assert "not a readable image" in table["reason"][0] or "corrupt" in table["reason"][0]
    assert all(table["caption"][1:].str.len() > 0)
    first, *others = sorted(images.glob("*.txt"))
    assert first.read_text() == "mine\n" and table["caption_file"][1].endswith("(kept)")
    assert [p.read_text().strip() for p in others] == list(table["caption"][2:])
    with pytest.raises(PipelineError, match="--download Salesforce/blip-image-captioning-base"):
        caption_images.main(["--images", str(images), "--out", str(tmp_path / "x.csv"), "--model",
                             str(tmp_path / "nothing")])


def test_keras_captioner_reloads_from_h5_and_decodes_the_same(work, tmp_path):
    import keras

    from animeml.characters import captioner
    from animeml.core.store import load_model, save_model

    data, _ = captions.read_caption_set(work["csv"])
    vocabulary = captioner.build_vocabulary(data.captions)
    tokens = captioner.encode_captions(data.captions, vocabulary, 12)
    keras.utils.set_random_seed(0)
    model = captioner.build_captioner("small_cnn", 32, len(vocabulary), 12, embed_dim=32, ff_dim=64,
                                      pretrained=False)
    captioner.compile_captioner(model, 3e-3)
    model.fit(captioner.caption_dataset(data, tokens, 32, 8, training=True), epochs=3, shuffle=False, verbose=0)
    save_model(model, tmp_path / "captioner.h5", {"vocabulary": vocabulary})
    reloaded, sidecar = load_model(tmp_path / "captioner.h5", captioner.CUSTOM_OBJECTS)
    for beam in (1, 3):
        before = captioner.caption_images(model, vocabulary, data.image_bytes, 6, 32, beam_size=beam, desc=None)
        after = captioner.caption_images(reloaded, sidecar["vocabulary"], data.image_bytes, 6, 32, beam_size=beam,
                                         desc=None)
        assert before == after and all(set(c.split()) <= set(vocabulary) for c in after)
    assert any(after)  # three epochs are enough to start with "an anime face"


def test_keras_step_captions_and_evaluation_table(work, tmp_path):
    models = work["root"] / "data" / "models"
    script("07_train_captioner.py").main(["--data", str(work["arrow"]), "--backbone", "small_cnn", "--image-size",
                                          "32", "--epochs", "1", "--embed-dim", "32", "--ff-dim", "64",
                                          "--batch-size", "8", "--overwrite"])
    sidecar = json.loads((models / "captioner_small_cnn.json").read_text())
    assert sidecar["vocabulary"][:4] == ["<pad>", "<unk>", "<start>", "<end>"] and "val_CIDEr-D" in sidecar["metrics"]
    images = tmp_path / "images"
    images.mkdir()
    for file in sorted((work["csv"] / "images").iterdir())[:2]:
        (images / file.name).write_bytes(file.read_bytes())
    script("caption_images.py").main(["--images", str(images), "--out", str(tmp_path / "k.csv"), "--kind", "keras",
                                      "--model", str(models / "captioner_small_cnn.h5"), "--num-beams", "2"])
    assert list(pd.read_csv(tmp_path / "k.csv")["status"]) == ["ok", "ok"]
    blip = models / "unbroken" if (models / "unbroken").is_dir() else work["blip"]
    out = tmp_path / "evaluation"
    script("08_evaluate_captions.py").main(["--data", str(work["arrow"]), "--captioners",
                                            str(models / "captioner_small_cnn.h5"), "--blip", str(blip),
                                            "--baseline-backbone", "small_cnn", "--baseline-image-size", "32",
                                            "--examples", "2", "--out-dir", str(out), "--num-beams", "1"])
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and results["model"].iloc[0] == "most frequent training caption"
    assert results[["BLEU-1", "ROUGE-L", "CIDEr-D"]].ge(0).all().all() and results["BLEU-1"].iloc[0] > 0
    assert (out / "results.md").read_text().count("\n| ") == 1 + 4 and (out / "examples.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["05_make_caption_set.py", "06_finetune_blip.py", "07_train_captioner.py",
                                  "08_evaluate_captions.py", "caption_images.py"])
def test_help_is_fast(name):
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPTS / name), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "usage:" in done.stdout and not done.stderr
    assert time.monotonic() - start < 5.0  # 1.5 s on an idle machine; the bound leaves room for a busy one


def test_missing_blip_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    done = subprocess.run([sys.executable, str(SCRIPTS / "caption_images.py"), "--images", str(tmp_path), "--out",
                           str(tmp_path / "o.csv"), "--model", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: no BLIP model in")
