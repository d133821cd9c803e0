"""Frozen-backbone features, computed once per (backbone, weights, image size, list of image files with their sizes
and modification times) and kept in `data/cache/features/`, so head training, threshold tuning, seeds and ablations
reuse them instead of running the backbone again. A changed, added or removed image gives a new key. Beside each
features file, `<file>.rows.json` lists its images, so a list that an earlier one holds (a subset, another order:
the calibration models of step 02 train on the faces of fewer characters) takes its rows from that file."""
import hashlib
import json
import os

import numpy as np

from animeml.core import paths
from animeml.core.io import atomic_path, read_cache


def cache_dir():
    return paths.data_dir() / "cache" / "features"


def image_rows(image_paths):
    """What one image's features depend on besides the model: its path, size and modification time."""
    rows = []
    for path in image_paths:
        stat = os.stat(path)
        rows.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return rows


def cache_key(model, rows):
    """A hex digest of everything the features depend on: the model and the images (image_rows) in their order."""
    digest = hashlib.sha256(f"{model}\n".encode())
    for row in rows:
        digest.update(f"{row}\n".encode())
    return digest.hexdigest()[:24]


def _from_earlier_list(pattern, model, rows, tried):
    """The features of `rows` taken from a cached file of `model` whose list holds them all, or None. `tried`: the
    file of this very list, already read (damaged or of another length), so not read again."""
    for listing in sorted(cache_dir().glob(pattern + ".rows.json")):
        if listing.name == tried.name + ".rows.json":
            continue
        stored = read_cache(listing, lambda path: json.loads(path.read_text(encoding="utf-8")))
        listed = stored.get("rows") if isinstance(stored, dict) and stored.get("model") == model else None
        if not isinstance(listed, list) or not all(isinstance(row, str) for row in listed):
            continue
        position = {row: i for i, row in enumerate(listed)}
        if not all(row in position for row in rows):
            continue
        features = read_cache(listing.with_name(listing.name.removesuffix(".rows.json")),
                              lambda path: np.load(path, mmap_mode="r"))
        if features is not None and len(features) == len(position):
            return np.asarray(features[[position[row] for row in rows]], np.float32)
    return None


def backbone_features(backbone_name, image_size, image_paths, weights="imagenet", batch_size=64, backbone=None,
                      flip=False):
    """(n_images, feature dim) float32 pooled features of un-augmented images, from the cache when it has them.
    `backbone`: an already built backbone of that name and weights (else one is built). `flip`: the features of the
    images' mirror images (left-right), cached apart, as a second view of each training image."""
    import tensorflow as tf

    from animeml.core.backbones import build_backbone
    from animeml.core.images import image_dataset, image_hw

    image_paths = [str(path) for path in image_paths]
    size = image_hw(image_size)
    name = backbone_name + ("-flipped" if flip else "")
    model, rows = f"{name}\t{list(size)}\t{weights}", image_rows(image_paths)
    file = cache_dir() / f"{name}_{size[0]}x{size[1]}_{cache_key(model, rows)}.npy"
    cached = read_cache(file, np.load)
    if cached is not None and cached.shape[:1] == (len(image_paths),):
        return cached
    cached = _from_earlier_list(f"{name}_{size[0]}x{size[1]}_*.npy", model, rows, tried=file)
    if cached is not None:
        return cached
    backbone = backbone or build_backbone(backbone_name, size, weights=weights)
    images = image_dataset(image_paths, image_size=size, batch_size=batch_size)
    if flip:
        images = images.map(lambda batch: tf.reverse(batch, axis=[2]))  # (n, height, width, 3): width reversed
    features = backbone.predict(images, verbose=0)
    features = np.asarray(features, np.float32)
    with atomic_path(file) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, features)
    with atomic_path(file.with_name(file.name + ".rows.json")) as tmp:
        tmp.write_text(json.dumps({"model": model, "rows": rows}), encoding="utf-8")
    return features
