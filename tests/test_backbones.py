import urllib.error

import keras
import numpy as np
import pytest

import animeml.backbones as backbones
from animeml.backbones import BACKBONES, build_backbone, last_conv_layer_name, set_trainable
from animeml.cli import PipelineError

FEATURE_SIZES = {"efficientnet_lite0": 1280, "resnet50": 2048, "efficientnetb0": 1280, "mobilenetv3small": 576,
                 "xception": 2048, "small_cnn": 256}


def random_images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_maps_images_to_pooled_features(name):
    size = 71 if name == "xception" else 32  # Xception needs at least 71x71 pixels
    backbone = build_backbone(name, image_size=size, weights=None)
    assert backbone.name == "backbone"
    features = backbone.predict(random_images(2, size), verbose=0)
    assert features.shape == (2, FEATURE_SIZES[name])
    assert np.isfinite(features).all()
    assert len(backbone.get_layer(last_conv_layer_name(backbone)).output.shape) == 4


def test_unknown_backbone_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="unknown backbone"):
        build_backbone("vgg16")


def test_offline_imagenet_download_is_a_pipeline_error(monkeypatch, tmp_path):
    """No cached weights and no network: keras' get_file fails, and the user gets one clear line."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(PipelineError, match="ImageNet weights for mobilenetv3small cannot be downloaded"):
        build_backbone("mobilenetv3small", image_size=32)


@pytest.mark.parametrize("name", ["small_cnn", "efficientnet_lite0"])
def test_model_with_backbone_survives_h5_round_trip(name, tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(1)(build_backbone(name, image_size=32, weights=None)(inputs))
    model = keras.Model(inputs, outputs)
    images = random_images(3, 32)
    expected = model.predict(images, verbose=0)

    model.save(tmp_path / "model.h5")
    loaded = keras.models.load_model(tmp_path / "model.h5")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)
    assert loaded.get_layer("backbone").get_layer("top_activation")


def test_set_trainable_unfreezes_only_top_layers_and_never_batchnorm():
    backbone = build_backbone("small_cnn", image_size=32, weights=None)
    set_trainable(backbone, 0)
    assert backbone.trainable_weights == []

    set_trainable(backbone, 4)
    trainable = [layer.name for layer in backbone.layers if layer.trainable]
    assert trainable == ["block4_conv", "top_activation", "avg_pool"]  # block4_bn is among the top 4 but stays frozen
    assert [w.path for w in backbone.trainable_weights] == ["block4_conv/kernel"]
