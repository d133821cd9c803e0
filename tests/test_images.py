import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from animeml.core.images import drop_unreadable, image_dataset, load_image, unreadable_images

SIZE = (24, 16)


@pytest.fixture
def image_paths(tmp_path):
    """Six small images: RGB jpg, RGB png and grayscale png, in two sizes."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        shape = (40 + 10 * (i % 2), 30, 1 if i % 3 == 2 else 3)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        if i % 3 == 0:
            data, suffix = tf.io.encode_jpeg(pixels), "jpg"
        else:
            data, suffix = tf.io.encode_png(pixels), "png"
        path = tmp_path / f"{i}.{suffix}"
        tf.io.write_file(str(path), data)
        paths.append(str(path))
    return paths


def first_batch(ds):
    return next(iter(ds))


def test_load_image_gives_float_rgb_in_pixel_range(image_paths):
    for path in image_paths:
        image = load_image(path, SIZE)
        assert image.shape == (*SIZE, 3) and image.dtype == tf.float32
        assert 0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 255
    gray = load_image(image_paths[2], 8)
    assert gray.shape == (8, 8, 3)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])


def test_dataset_shapes_with_regression_and_multi_hot_targets(image_paths):
    images = first_batch(image_dataset(image_paths, image_size=SIZE, batch_size=4))
    assert images.shape == (4, *SIZE, 3) and images.dtype == tf.float32

    scores = np.linspace(5, 9, len(image_paths))
    images, targets = first_batch(image_dataset(image_paths, scores, image_size=SIZE, batch_size=4))
    assert targets.shape == (4,) and targets.dtype == tf.float32
    np.testing.assert_allclose(targets, scores[:4], rtol=1e-6)

    genres = np.eye(3)[np.arange(len(image_paths)) % 3]
    batches = list(image_dataset(image_paths, genres, image_size=8, batch_size=4, training=True))
    assert [b[1].shape for b in batches] == [(4, 3), (2, 3)]
    for images, _ in batches:
        assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255


def test_features_dict_rows_follow_their_images(image_paths):
    features = {"year": np.arange(len(image_paths), dtype=np.float64),
                "genres": np.ones((len(image_paths), 5), dtype=np.float32)}
    inputs, targets = first_batch(image_dataset(image_paths, np.arange(6), features, SIZE, batch_size=6))
    assert set(inputs) == {"image", "year", "genres"}
    assert inputs["image"].shape == (6, *SIZE, 3)
    assert inputs["year"].dtype == tf.float32 and inputs["genres"].shape == (6, 5)
    np.testing.assert_array_equal(inputs["year"], targets)

    # training shuffles, but every feature row still travels with its own target
    inputs, targets = first_batch(image_dataset(image_paths, np.arange(6), features, SIZE, 6, training=True))
    np.testing.assert_array_equal(inputs["year"], targets)
    assert set(first_batch(image_dataset(image_paths, features=features, image_size=SIZE))) == set(inputs)


def test_augmentation_only_when_training(image_paths):
    plain = [first_batch(image_dataset(image_paths, image_size=SIZE, batch_size=6)) for _ in range(2)]
    np.testing.assert_array_equal(plain[0], plain[1])
    np.testing.assert_allclose(plain[0][0], load_image(image_paths[0], SIZE), atol=0.5)  # whole pixel values

    targets = np.arange(6)
    ds = image_dataset(image_paths, targets, image_size=SIZE, batch_size=6, training=True, seed=1)
    (epoch1, order1), (epoch2, order2) = first_batch(ds), first_batch(ds)
    assert sorted(order1.numpy()) == list(targets)
    same_image = epoch2.numpy()[np.argsort(order2)] - epoch1.numpy()[np.argsort(order1)]
    assert np.abs(same_image).mean() > 1.0  # two epochs see different crops/flips/colours of each image


def test_cache_in_memory_and_on_disk(image_paths, tmp_path):
    expected = first_batch(image_dataset(image_paths, image_size=SIZE, batch_size=6))
    in_memory = image_dataset(image_paths, image_size=SIZE, batch_size=6, cache=True)
    np.testing.assert_array_equal(first_batch(in_memory), expected)

    cache_file = tmp_path / "cache" / "posters"
    cache_file.parent.mkdir()
    on_disk = image_dataset(image_paths, image_size=SIZE, batch_size=6, cache=cache_file)
    np.testing.assert_array_equal(list(on_disk)[0], expected)  # a full pass writes the cache file
    assert list(cache_file.parent.glob("posters*.index"))

    # the second pass reads the cache, not the (now missing) files
    for path in image_paths:
        tf.io.gfile.remove(path)
    np.testing.assert_array_equal(first_batch(image_dataset(image_paths, image_size=SIZE, batch_size=6,
                                                            cache=cache_file)), expected)


def test_mismatched_lengths_are_rejected(image_paths):
    with pytest.raises(ValueError, match="targets has 2 rows"):
        image_dataset(image_paths, targets=[1.0, 2.0])


def test_a_poster_is_preprocessed_identically_for_training_and_prediction(image_paths):
    """The tensors a model trains on (image_dataset, cached as uint8) are those every prediction path feeds it:
    genre and score prediction (image_dataset), the character/tag classifiers (image_batch of paths) and face crops
    (image_batch of decoded arrays)."""
    from animeml.core.images import image_batch

    labels = np.arange(len(image_paths), dtype=np.float32)
    training = np.concatenate([x for x, _ in image_dataset(image_paths, labels, image_size=SIZE, batch_size=4,
                                                           cache=True)])
    prediction = np.concatenate(list(image_dataset(image_paths, image_size=SIZE, batch_size=4)))
    from_paths = image_batch(image_paths, SIZE)
    decoded = [tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False).numpy()
               for p in image_paths]
    from_arrays = image_batch(decoded, SIZE)
    from animeml.core.images import read_image
    read_once = image_batch([read_image(p, SIZE) for p in image_paths], SIZE, np.uint8)  # tag_images, predict_genres
    assert read_once.dtype == np.uint8
    for other in (prediction, from_paths, from_arrays, read_once):
        np.testing.assert_array_equal(training, other)
    assert np.array_equal(training, np.round(training))  # whole pixel values, as the uint8 cache keeps them


def test_an_array_that_has_the_size_already_is_batched_as_resizing_it_would():
    """image_batch skips TensorFlow for arrays of the model's size; the values are those resize_image gives."""
    from animeml.core.images import image_batch, resize_image

    rng = np.random.default_rng(0)
    shape, other = (*SIZE, 3), (SIZE[0] + 7, SIZE[1] - 3, 3)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8), rng.uniform(-20, 280, shape),
              rng.uniform(-20, 280, shape).astype(np.float32), np.full(shape, 2.5, np.float32),
              rng.integers(0, 256, other, dtype=np.uint8)]
    expected = np.stack([resize_image(tf.convert_to_tensor(a), SIZE) for a in arrays])
    batch, whole = image_batch(arrays, SIZE), image_batch(arrays, SIZE, np.uint8)
    assert (batch.dtype, whole.dtype) == (np.float32, np.uint8)
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(whole, expected)


def broken_images(folder, good):
    """Files that image_dataset cannot read, one per way, beside the readable `good` one: {name: path}."""
    data = open(good, "rb").read()
    files = {"truncated": data[:len(data) // 3], "empty": b"", "text": b"not an image",
             "bmp header only": b"BM" + bytes(60)}
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.jpg"
        paths[name].write_bytes(content)
    paths["missing"] = folder / "missing.jpg"
    paths["folder"] = folder / "a_folder.jpg"
    paths["folder"].mkdir()
    return {name: str(path) for name, path in paths.items()}


def test_unreadable_images_are_found_with_a_reason_each(image_paths, tmp_path):
    (tmp_path / "bad").mkdir()
    bad = broken_images(tmp_path / "bad", image_paths[0])
    files = [image_paths[0], *bad.values(), *image_paths[1:]]
    reasons = unreadable_images(files)
    assert sorted(reasons) == list(range(1, 1 + len(bad)))  # every broken file, none of the good ones
    for position, (name, path) in enumerate(bad.items(), start=1):
        assert reasons[position].startswith(path)
    assert "truncated or corrupt" in reasons[1] and "empty" in reasons[2] and "not found" in reasons[5]
    # what is left is what tf.data reads to the end
    kept = [f for i, f in enumerate(files) if i not in reasons]
    assert sum(len(b) for b in image_dataset(kept, image_size=SIZE, batch_size=4)) == len(image_paths)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(image_dataset([image_paths[0], bad["truncated"]], image_size=SIZE))


def test_drop_unreadable_leaves_out_the_rows_and_says_why(image_paths, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    bad = broken_images(tmp_path / "bad", image_paths[0])
    table = pd.DataFrame({"path": [*image_paths, bad["truncated"], bad["text"]], "label": range(8)},
                         index=range(10, 18))
    kept = drop_unreadable(table, "path", "faces", shown=1)
    assert kept["label"].tolist() == list(range(6)) and kept.index.tolist() == list(range(6))
    err = capsys.readouterr().err
    assert "2 of 8 faces cannot be read" in err and bad["truncated"] in err and "and 1 more" in err
    assert drop_unreadable(table.iloc[:6], "path", "faces").equals(table.iloc[:6].reset_index(drop=True))
    assert capsys.readouterr().err == ""
