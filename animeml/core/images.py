"""Image input pipeline shared by every image model: tf.data decoding, resizing, caching and augmentation.

Images stay in the 0..255 range: each backbone (animeml.core.backbones) rescales them inside the model, so a
saved model needs no preprocessing code beside it.
"""
import os
import sys

import numpy as np
import tensorflow as tf

from animeml.core.imagefile import TF_FORMATS, ImageUnreadable, check_header, corrupt

AUTOTUNE = tf.data.AUTOTUNE
CROP_MARGIN = 1.15  # training images are resized this much larger, then randomly cropped back
BRIGHTNESS_DELTA = 25.0  # in pixel units (0..255)
CONTRAST_RANGE = (0.8, 1.2)


def image_hw(image_size):
    """(height, width) from an int (square) or a (height, width) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def load_image(path, image_size):
    """Decode a jpg/png/gif/bmp file into a float32 RGB tensor [H, W, 3] resized to `image_size`, whole pixel values
    0..255: the one way from file to tensor, for training and prediction alike."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return resize_image(image, image_size)


def read_image(path, image_size):
    """load_image of a file checked first: its header by animeml.core.imagefile (a file, not empty, a format
    TensorFlow reads, at most MAX_PIXELS), then TensorFlow's own decode, whose failure on truncated or corrupt data
    is an ImageUnreadable naming the file. A uint8 array (H, W, 3): read_images of one file."""
    image = read_images([path], image_size)[0]
    if isinstance(image, ImageUnreadable):
        raise image
    return image


def read_images(paths, image_size):
    """read_image of several files: one uint8 array (H, W, 3), or the ImageUnreadable that says why not, per file.
    The files whose header passes are decoded together in one compiled graph call (per 96 px face 0.4 ms of CPU
    against 0.9 for one call per file; per poster 1.5 against 2.6), and only where that call fails, on a file
    truncated or corrupt past its header, one at a time, so that the bad file alone gets the reason."""
    height, width = image_hw(image_size)
    images = []
    for path in paths:
        try:
            check_header(path, formats=TF_FORMATS)
            images.append(None)
        except ImageUnreadable as err:
            images.append(err)
    todo = [i for i, image in enumerate(images) if image is None]
    try:
        decoded = _load_uint8([paths[i] for i in todo], height, width)
    except tf.errors.OpError as err:  # "{{function_node ...}} what went wrong\n\t [[{{node ...}}]] [Op:...]"
        if len(todo) > 1:
            return [image if image is not None else read_images([path], image_size)[0]
                    for path, image in zip(paths, images)]
        message = err.message.split("}}", 1)[-1] if err.message.startswith("{{") else err.message
        decoded = [corrupt(paths[todo[0]], message.strip().splitlines()[0].split(" [Op:")[0].strip())]
    for i, image in zip(todo, decoded):
        images[i] = image
    return images


def _load_uint8(paths, height, width):
    """load_image of each file, outside tf.data, through one compiled graph per size (called once for all of them,
    which costs less than a call per file), as a uint8 array (n, H, W, 3): whole pixel values 0..255 in a quarter of
    the memory, which image_batch turns into floats without rounding them again. Up to 4 files are decoded at a
    time, which bounds the memory that large images take at once."""
    if not paths:
        return np.zeros((0, height, width, 3), np.uint8)
    if (height, width) not in _file_loaders:
        one = tf.TensorSpec((height, width, 3), tf.uint8)
        _file_loaders[height, width] = tf.function(
            lambda files: tf.map_fn(lambda file: tf.cast(load_image(file, (height, width)), tf.uint8), files,
                                    parallel_iterations=4, fn_output_signature=one),
            input_signature=[tf.TensorSpec((None,), tf.string)])
    return _file_loaders[height, width](tf.constant([str(path) for path in paths])).numpy()


_file_loaders = {}  # (height, width) -> compiled _load_uint8


def unreadable_images(paths):
    """{position in `paths`: reason} of the files that image_dataset could not read: animeml.core.imagefile's
    checks of the header, then a full decode by TensorFlow's own decoder, in parallel through tf.data, which drops
    the files it fails on (read_image then names the reason of each)."""
    paths = [str(path) for path in paths]
    reasons = {}
    for i, path in enumerate(paths):
        try:
            check_header(path, formats=TF_FORMATS)
        except ImageUnreadable as err:
            reasons[i] = str(err)
    todo = np.array([i for i in range(len(paths)) if i not in reasons], np.int64)

    def decoded_shape(i, path):
        return i, tf.shape(tf.io.decode_image(tf.io.read_file(path), expand_animations=False))

    if len(todo):
        decoded = (tf.data.Dataset.from_tensor_slices((todo, [paths[i] for i in todo]))
                   .map(decoded_shape, num_parallel_calls=AUTOTUNE).ignore_errors().batch(4096))
        done = set(np.concatenate([i.numpy() for i, _ in decoded] or [np.zeros(0, np.int64)]).tolist())
        for i in todo.tolist():
            if i not in done:
                try:
                    read_image(paths[i], 8)
                    reasons[i] = f"{paths[i]} could not be decoded"
                except ImageUnreadable as err:
                    reasons[i] = str(err)
    return dict(sorted(reasons.items()))


def drop_unreadable(table, column, what, shown=5):
    """`table` (index reset) without the rows whose image file in `column` image_dataset could not read, so that
    one bad file is left out with its reason instead of stopping a step deep inside TensorFlow. Prints how many
    `what` (e.g. "posters") were left out and why, on stderr."""
    reasons = unreadable_images(table[column])
    if not reasons:
        return table.reset_index(drop=True)
    print(f"warning: {len(reasons):,} of {len(table):,} {what} cannot be read and are left out:", file=sys.stderr)
    for reason in list(reasons.values())[:shown]:
        print(f"  {reason}", file=sys.stderr)
    if len(reasons) > shown:
        print(f"  ... and {len(reasons) - shown} more", file=sys.stderr)
    keep = np.ones(len(table), bool)
    keep[list(reasons)] = False
    return table[keep].reset_index(drop=True)


def resize_image(image, image_size):
    """A decoded RGB image (uint8 or float, 0..255) -> float32 [H, W, 3], resized bilinearly and rounded to whole
    pixel values (as the uint8 cache of image_dataset keeps them)."""
    height, width = image_hw(image_size)
    image = tf.image.resize(image, (height, width))  # bilinear; antialias=True was 2-3x slower here
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    image.set_shape((height, width, 3))
    return image


def image_batch(images, image_size, dtype=np.float32):
    """Paths or decoded RGB arrays -> one batch (n, H, W, 3), each image exactly as image_dataset gives it: whole
    pixel values 0..255, as float32, or as uint8 (a quarter of the memory and no conversion in numpy, for
    trainer.forward_pass, which casts inside its graph)."""
    height, width = image_hw(image_size)
    files = [i for i, image in enumerate(images) if isinstance(image, (str, os.PathLike))]
    decoded = dict(zip(files, _load_uint8([images[i] for i in files], height, width)))
    batch = [_array_input(decoded[i] if i in decoded else np.asarray(image), height, width)
             for i, image in enumerate(images)]
    return np.stack(batch).astype(dtype, copy=False) if batch else np.zeros((0, height, width, 3), dtype)


def _array_input(image, height, width):
    """resize_image of a decoded array, as whole values 0..255. One that already has the size (read_image's) is
    only rounded into 0..255, which is all that resizing it to its own size does, without a second pass through
    TensorFlow; a uint8 one is whole and in range already."""
    if image.shape == (height, width, 3):
        if image.dtype == np.uint8:
            return image
        return np.clip(np.rint(image.astype(np.float32)), 0.0, 255.0)
    return resize_image(tf.convert_to_tensor(image), (height, width)).numpy()


def augment(image, image_size, seed=None):
    """Random crop, horizontal flip, brightness and contrast of one image; output stays within 0..255."""
    height, width = image_hw(image_size)
    image = tf.image.random_crop(image, (height, width, 3), seed=seed)
    image = tf.image.random_flip_left_right(image, seed=seed)
    image = tf.image.random_brightness(image, BRIGHTNESS_DELTA, seed=seed)
    image = tf.image.random_contrast(image, *CONTRAST_RANGE, seed=seed)
    return tf.clip_by_value(image, 0.0, 255.0)


def image_dataset(paths, targets=None, features=None, image_size=(224, 224), batch_size=32, training=False,
                  cache=None, seed=0):
    """A batched, prefetched tf.data.Dataset of images read from `paths`.

    Elements are `image` or `(image, target)`; with `features` (dict name -> array, one row per path) they are
    `{"image": image, **features}` or `({"image": image, **features}, target)`. `targets` may be 1-D
    (regression, class ids) or 2-D (multi-hot). `cache` is True (memory) or a file path; the decoded images
    are cached (rounded to whole pixel values), augmentation runs after the cache so every epoch sees new
    crops. Training loads images larger than evaluation does, so give them separate cache files. Only
    `training=True` shuffles and augments.
    """
    height, width = image_hw(image_size)
    if training:
        load_size = (round(height * CROP_MARGIN), round(width * CROP_MARGIN))
    else:
        load_size = (height, width)

    columns = {"image": np.asarray([str(path) for path in paths])}  # file paths, decoded by the first map
    if features is not None:
        columns["features"] = {name: _column(values) for name, values in features.items()}
    if targets is not None:
        columns["target"] = _column(targets)
    for name, values in [("targets", columns.get("target")), *columns.get("features", {}).items()]:
        if values is not None and len(values) != len(paths):
            raise ValueError(f"{name} has {len(values)} rows for {len(paths)} image paths")

    ds = tf.data.Dataset.from_tensor_slices(columns)
    # Without a cache, shuffle file names (cheap); with one, shuffle the cached images so each epoch differs.
    if training and not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # Decoded images are kept as uint8 until batching: a quarter of the memory in the cache and shuffle buffer.
    ds = ds.map(lambda row: {**row, "image": tf.cast(load_image(row["image"], load_size), tf.uint8)},
                num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
        if training:
            ds = ds.shuffle(min(len(paths), 2048), seed=seed, reshuffle_each_iteration=True)

    def to_element(row):
        """float32 image, augmented when training, in the element layout that model.fit expects."""
        image = tf.cast(row["image"], tf.float32)
        if training:
            image = augment(image, (height, width))
        inputs = {"image": image, **row["features"]} if "features" in row else image
        return (inputs, row["target"]) if "target" in row else inputs

    return ds.map(to_element, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)


def _column(values):
    """Numpy column for tf.data: floats become float32 (Keras' default dtype), other dtypes stay."""
    values = np.asarray(values)
    return values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values

