"""tf.distribute on a CPU: MirroredStrategy over two logical CPU devices trains a tiny model of each task (score,
genres, characters, tags through the shared trainer; popularity and the captioner through their own fits), and each
saved model predicts what the in-memory one does.
Logical devices must be set before TensorFlow initialises, so the training runs in a fresh subprocess."""
import subprocess
import sys

from animeml.core import paths

SCRIPT = r'''
import sys
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from animeml import genres
from animeml.characters import captioner, classifier
from animeml.characters.captions import CaptionSet
from animeml.core import store, trainer
from animeml.core.backbones import build_backbone
from animeml.core.images import image_batch
from animeml.score import models as score
from animeml.score import popularity

root = sys.argv[1]
rng = np.random.default_rng(0)
files, bright = [], []
for i in range(16):
    pixels = np.clip(rng.normal(200 if i % 2 else 40, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
    files.append(f"{root}/{i}.png")
    bright.append(i % 2)
    Image.fromarray(pixels).save(files[-1])
files, bright = np.array(files), np.array(bright)
train, val = (np.arange(16) < 12), (np.arange(16) >= 12)
strategy = trainer.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.extended.worker_devices
print(trainer.describe(strategy, False))
steps = dict(epochs=1, finetune_epochs=1, finetune_layers=3, batch_size=4, patience=2, strategy=strategy)

def check(task, model, path, inputs=None):
    store.save_model(model, path, {})
    loaded, _ = store.load_model(path)
    inputs = image_batch(files[val], 16) if inputs is None else inputs
    gap = float(np.abs(loaded.predict(inputs, verbose=0) - model.predict(inputs, verbose=0)).max())
    print(f"{task} max gap {gap:.2e}")
    assert gap < 1e-5, (task, gap)

table = pd.DataFrame({"image_path": files, "score": 6.0 + 2 * bright, "split": np.where(train, "train", "val")})
split = table["split"].to_numpy()
model, history = score.train_poster_model(
    lambda: score.build_vision_model(build_backbone("small_cnn", 16), 7.0), table, split, {}, 16,
    from_scratch=True, **steps)
check("score", model, f"{root}/score.h5")

labels = pd.DataFrame({"image_path": files, "split": table["split"], "Bright": bright, "Dark": 1 - bright})
model, _ = genres.train(labels, ["Bright", "Dark"], "small_cnn", "bce", 16, pretrained=False, **steps)
check("genres", model, f"{root}/genres.h5")

model, _ = classifier.train_classifier("small_cnn", 2, (files[train], bright[train]), (files[val], bright[val]), 16,
                                       multi_label=False, **steps)
check("characters", model, f"{root}/characters.h5")

tags = np.stack([bright, 1 - bright, np.ones(16)], axis=1).astype(np.float32)
model, _ = classifier.train_classifier("small_cnn", 3, (files[train], tags[train]), (files[val], tags[val]), 16,
                                       multi_label=True, **steps)
check("tags", model, f"{root}/tags.h5")

features = {"synopsis": rng.normal(size=(16, 8)).astype(np.float32), "portraits": image_batch(files, 4).reshape(16, -1).astype(np.float32) / 255}
model, _ = popularity.train_model(features, bright.astype(float), train, val, strategy, hidden=8, epochs=2,
                                  batch_size=4, patience=2)
check("popularity", model, f"{root}/popularity.h5", {k: v[val] for k, v in features.items()})

captions = ["a bright face" if b else "a dark face" for b in bright]
faces = CaptionSet(root, "csv", files, captions, lambda i: open(files[i], "rb").read())
parts = {"train": faces.subset(np.flatnonzero(train)), "val": faces.subset(np.flatnonzero(val))}
vocabulary = captioner.build_vocabulary(captions)
model, _ = captioner.train_captioner(parts, vocabulary, strategy, backbone="small_cnn", image_size=16,
                                     sequence_length=5, embed_dim=8, ff_dim=8, heads=1, batch_size=4, epochs=1)
tokens = captioner.encode_captions(captions, vocabulary, 5)[:, :-1]
check("captioner", model, f"{root}/captioner.h5", {"image": image_batch(files, 16), "tokens": tokens})
print("all six tasks trained on 2 replicas")
'''


def test_mirrored_strategy_over_two_cpu_devices_trains_every_task(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=paths.ROOT, capture_output=True,
                          text=True, timeout=600, env={"ANIMEML_DATA_DIR": str(tmp_path / "data"),
                                                       "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 device(s)" in done.stdout and "MirroredStrategy" in done.stdout
    for task in ("score", "genres", "characters", "tags", "popularity", "captioner"):
        assert f"{task} max gap" in done.stdout
    assert "all six tasks trained on 2 replicas" in done.stdout
