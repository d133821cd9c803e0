"""Frozen-backbone features, computed once per (backbone, weights, image size, list of image files with their sizes
and modification times) and kept in `data/cache/features/`, so head training, threshold tuning, seeds and ablations
reuse them instead of running the backbone again. A changed, added or removed image gives a new key."""
import hashlib
import os

import numpy as np

from animeml.core import paths
from animeml.core.io import atomic_path, read_cache


def cache_dir():
    return paths.data_dir() / "cache" / "features"


def cache_key(backbone_name, image_size, image_paths, weights="imagenet"):
    """A hex digest of everything the features depend on; the order of the images matters (one row each)."""
    digest = hashlib.sha256(f"{backbone_name}\t{list(image_size)}\t{weights}\n".encode())
    for path in image_paths:
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


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
    file = cache_dir() / f"{name}_{size[0]}x{size[1]}_{cache_key(name, size, image_paths, weights)}.npy"
    cached = read_cache(file, np.load)
    if cached is not None and cached.shape[:1] == (len(image_paths),):
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
    return features
