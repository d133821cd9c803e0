"""The shared trainer: frozen then fine-tuned phases, resume after an interruption, and two --deterministic runs of
a step giving the same metrics."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from animeml.core import paths, store, trainer
from animeml.core.backbones import build_backbone


def tiny_model():
    backbone = build_backbone("small_cnn", 16)
    image = keras.Input((16, 16, 3), name="image")
    features = keras.Input(backbone.output.shape[1:], name="features")
    head = keras.Model(features, keras.layers.Dense(1, name="score")(features), name="head")
    return keras.Model(image, head(backbone(image)))


def tiny_data(batch_size, n=16):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 16, 16, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x.mean(axis=(1, 2, 3)) / 255)).batch(batch_size)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if self.model.get_layer("backbone").trainable and epoch == 0:
            raise KeyboardInterrupt


def test_resume_continues_after_the_phases_an_interrupted_run_finished(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    settings = dict(loss="mse", epochs=2, finetune_epochs=3, finetune_layers=4, batch_size=8, patience=5,
                    backup_dir=tmp_path / "backup", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(tiny_model, tiny_data, tiny_data, callbacks=[Interrupt()], **settings)
    progress = json.loads((tmp_path / "backup" / "progress.json").read_text())
    assert progress["phases"] == ["frozen"] and len(progress["rows"]) == 3  # start + 2 frozen epochs
    assert (tmp_path / "backup" / "finetune").is_dir()  # BackupAndRestore's epoch of the interrupted phase

    model, history = trainer.fit(tiny_model, tiny_data, tiny_data, resume=True, **settings)
    assert "resuming after phase(s) frozen" in capsys.readouterr().out
    assert history["phase"].tolist()[:3] == ["start", "frozen", "frozen"]
    assert 1 <= (history["phase"] == "finetune").sum() <= 2  # the interrupted first epoch is not run again
    assert history["epoch"].tolist() == list(range(len(history)))
    assert not (tmp_path / "backup").exists()
    best = history["val_loss"].min()
    assert model.evaluate(tiny_data(8), verbose=0) == pytest.approx(best, rel=1e-4)  # the best weights are kept


def test_the_frozen_phase_on_cached_features_trains_a_model_of_several_inputs_without_its_images(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("small_cnn", 16)  # stands in for ImageNet weights: the same in every build

    def build():
        image, metadata = keras.Input((16, 16, 3), name="image"), keras.Input((2,), name="metadata")
        own = build_backbone("small_cnn", 16)
        own.set_weights(backbone.get_weights())
        inner = keras.Input((2,))  # a nested model above the backbone, as the hybrid's text model
        nested = keras.Model(inner, keras.layers.Dense(2)(inner), name="metadata_model")
        joined = keras.layers.Concatenate()([own(image), nested(metadata)])
        return keras.Model({"image": image, "metadata": metadata}, keras.layers.Dense(1)(joined))

    rng = np.random.default_rng(0)
    images, meta = rng.uniform(0, 255, (24, 16, 16, 3)).astype(np.float32), rng.normal(size=(24, 2)).astype(np.float32)
    target = (meta[:, 0] + 3).astype(np.float32)  # learnable from the metadata alone
    features = backbone.predict(images, verbose=0)  # the backbone stays frozen: its features are the model's
    head_data = (({"image": features[:16], "metadata": meta[:16]}, target[:16]),
                 ({"image": features[16:], "metadata": meta[16:]}, target[16:]))

    def no_images(batch_size):
        raise AssertionError("the frozen phase asked for images")

    def val_images(batch_size):
        return tf.data.Dataset.from_tensor_slices(({"image": images[16:], "metadata": meta[16:]}, target[16:])) \
            .batch(batch_size)

    model, history = trainer.fit(build, no_images, val_images, loss="mse", epochs=30, finetune_epochs=0,
                                 learning_rate=0.05, batch_size=8, patience=30, head_data=head_data, verbose=0)
    assert history["phase"].tolist() == ["start"] + ["frozen"] * 30
    assert history["val_loss"].min() < history["val_loss"].iloc[0] / 4
    # the weights trained on features are the model's own: on the images it scores the best epoch's loss
    on_images = model.predict({"image": images[16:], "metadata": meta[16:]}, verbose=0)[:, 0]
    assert np.mean((on_images - target[16:]) ** 2) == pytest.approx(history["val_loss"].min(), rel=1e-4)
    store.save_model(model, tmp_path / "model.h5", {})  # the model trained that way saves (a hybrid once did not)
    loaded = store.load_model(tmp_path / "model.h5")[0]
    assert np.allclose(loaded.predict({"image": images[16:], "metadata": meta[16:]}, verbose=0)[:, 0], on_images,
                       atol=1e-6)

    def no_backbone():
        metadata = keras.Input((2,), name="metadata")
        return keras.Model(metadata, keras.layers.Dense(1)(metadata))

    with pytest.raises(ValueError, match="backbone"):
        trainer.fit(no_backbone, no_images, val_images, loss="mse", epochs=1, head_data=head_data, verbose=0)


class TrainedModels(keras.callbacks.Callback):
    """The name of the model each phase trains (the characters' learning-rate schedule looks for "head")."""
    def __init__(self):
        super().__init__()
        self.names = []

    def on_train_begin(self, logs=None):
        self.names.append(self.model.name)


def test_a_model_with_a_nested_head_trains_that_head_on_features():
    keras.utils.set_random_seed(0)
    dim = build_backbone("small_cnn", 16).output.shape[-1]
    rng = np.random.default_rng(0)
    head_data = ((rng.normal(size=(16, dim)).astype(np.float32), rng.normal(size=16).astype(np.float32)),) * 2
    trained = TrainedModels()
    trainer.fit(tiny_model, tiny_data, tiny_data, loss="mse", epochs=1, finetune_epochs=1, finetune_layers=2,
                batch_size=8, head_data=head_data, callbacks=[trained], verbose=0)
    assert trained.names[0] == "head" and trained.names[1] != "head"


class StepsNoted(keras.callbacks.Callback):
    """Notes how many training steps each call into TensorFlow runs."""

    def on_train_begin(self, logs=None):
        self.steps_per_execution = self.model.steps_per_execution


class BatchCounter(StepsNoted):
    """Also acts before each training batch: counts them."""
    batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def test_several_steps_per_call_give_the_same_training_and_a_per_batch_callback_still_sees_every_batch():
    settings = dict(loss="mse", epochs=3, batch_size=4, patience=5, from_scratch=True, verbose=0)

    def run(callback):
        keras.utils.set_random_seed(0)
        return trainer.fit(tiny_model, lambda b: tiny_data(b, n=40), lambda b: tiny_data(b, n=40),
                           callbacks=[callback], **settings)[1]

    noted = StepsNoted()
    several = run(noted)
    assert noted.steps_per_execution == trainer.STEPS_PER_EXECUTION > 1
    counter = BatchCounter()
    one_by_one = run(counter)
    assert counter.steps_per_execution == 1 and counter.batches == 3 * 10  # 10 batches of 4 in each of 3 epochs
    np.testing.assert_allclose(several["loss"].dropna(), one_by_one["loss"].dropna(), rtol=1e-4)
    np.testing.assert_allclose(several["val_loss"], one_by_one["val_loss"], rtol=1e-4)


def test_two_deterministic_runs_give_the_same_metrics(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        colour = ["red hair", "blue hair"][i % 2]
        pixels = np.clip(rng.normal(0, 20, (20, 20, 3)) + ([200, 30, 30] if i % 2 == 0 else [30, 30, 200]), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(images / f"{i}.png")
        rows.append({"file": f"{i}.png", "tags": f"1girl, {colour}"})
    pd.DataFrame(rows).to_csv(images / "tags.csv", index=False)
    results = []
    for run in range(2):  # in subprocesses: op determinism, once on, stays on for the whole process
        done = subprocess.run(
            [sys.executable, str(paths.ROOT / "CharacterTagging" / "03_train_tagger.py"), "--tags-csv",
             str(images / "tags.csv"), "--backbone", "small_cnn", "--image-size", "16", "--head-epochs", "2",
             "--finetune-epochs", "1", "--batch-size", "8", "--deterministic"],
            env={**os.environ, "ANIMEML_DATA_DIR": str(tmp_path / f"data{run}")}, capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "training on 1 device(s)" in done.stdout and "mixed precision off" in done.stdout
        sidecar = json.loads((tmp_path / f"data{run}" / "models" / "tags_small_cnn.json").read_text())
        assert sidecar["run"]["settings"]["deterministic"] is True and sidecar["run"]["seed"] == 42
        assert list((tmp_path / f"data{run}" / "runs").glob("characters_03_train_tagger_*.json"))
        results.append(pd.read_csv(tmp_path / f"data{run}" / "tags" / "metrics.csv"))
    pd.testing.assert_frame_equal(results[0], results[1])
    assert results[0]["map"].between(0, 1).all()


def test_the_forward_pass_takes_whole_pixels_as_uint8_or_float32_and_gives_what_the_model_gives():
    model = tiny_model()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    forward = trainer.forward_pass(model)
    expected = model(pixels.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(forward(pixels.astype(np.float32)).numpy(), expected, rtol=1e-5, atol=1e-6)
    for other in (pixels, pixels.astype(np.float64), tf.constant(pixels, tf.float32)):
        np.testing.assert_array_equal(forward(other).numpy(), forward(pixels.astype(np.float32)).numpy())
    assert trainer.forward_pass(model) is forward  # one compiled function per model, not one per call


def test_mixed_precision_on_a_cpu_computes_in_bfloat16():
    # float16 is emulated on a CPU; bfloat16 runs natively there and needs no loss scaling
    try:
        assert trainer.use_mixed_precision(requested=True)
        assert keras.mixed_precision.global_policy().name == trainer.mixed_policy() == "mixed_bfloat16"
        model = tiny_model()
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model.fit(tiny_data(8), epochs=1, verbose=0)
        assert model.get_layer("backbone").compute_dtype == "bfloat16"
        assert "mixed_bfloat16" in trainer.describe(tf.distribute.OneDeviceStrategy("/cpu:0"), True)
        assert not trainer.use_mixed_precision(requested=None)  # off by default without a GPU
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_blocks_freed_after_tensorflow_makes_a_generator_dataset_are_reused_not_mapped_again():
    # TensorFlow 2.21's first generator dataset sets glibc's M_TRIM_THRESHOLD to 128 KB, after which a block of a few
    # MB is mapped fresh at every malloc (and faulted in page by page); reuse_freed_memory, called before it, keeps
    # such blocks on the heap (4 and 16 MB here: a 1 MB one can fit a hole that importing TensorFlow left), and
    # blocks past glibc's 32 MB ceiling too (100 MB). glibc's own count of mapped blocks (mallinfo2) tells, not the
    # kernel's fault counter, which some sandboxes leave at 0. The "patched" process also makes TensorFlow's call
    # itself, so the test means the same where TensorFlow would not make it. Fresh processes, since TensorFlow does it
    # once per process.
    count = """
import ctypes, sys
import tensorflow as tf
from animeml.core import trainer

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    trainer.reuse_freed_memory()
list(tf.data.Dataset.from_generator(lambda: iter([0]), output_signature=tf.TensorSpec((), tf.int32)))
if sys.argv[1] == "patched":
    libc.mallopt(trainer.M_TRIM_THRESHOLD, 128 << 10)
mapped = []
for size in (4 << 20, 16 << 20, 100 << 20):
    libc.free(libc.malloc(size))  # glibc raises its mmap threshold past a freed block, unless told not to
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped.append(libc.mallinfo2().hblks - before)
    libc.free(block)
print(*mapped)
"""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    mapped = {}
    for how in ("patched", "fixed"):
        result = subprocess.run([sys.executable, "-c", count, how], capture_output=True, text=True, timeout=120,
                                cwd=paths.ROOT, env=env)
        assert result.returncode == 0, result.stderr
        mapped[how] = [int(word) for word in result.stdout.split()[-3:]]
    assert mapped["patched"] == [1, 1, 1]  # every block mapped afresh
    assert mapped["fixed"] == [0, 0, 0]  # every one from the heap
