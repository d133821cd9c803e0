"""The flags every training step takes (seed, determinism, tf.distribute strategy, mixed precision, resume), kept
apart from animeml.core.trainer so a step script adds them before it imports TensorFlow (fast `--help`)."""
import argparse

STRATEGIES = ("auto", "one", "mirrored", "multiworker")
# the names of animeml.core.backbones, here so that flags can offer them before Keras is imported
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "efficientnetb0",
             "mobilenetv3small", "xception", "small_cnn")


def add_training_flags(parser, seed=42):
    parser.add_argument("--seed", type=int, default=seed, help="seeds Python, NumPy and TensorFlow")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TensorFlow ops: two runs give the same metrics (slower, no mixed precision)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="tf.distribute strategy: auto = mirrored over the GPUs when there are several, else one "
                             "device; the global batch is --batch-size times the devices")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                        help="float16 compute (default: on with a GPU, off on a CPU and under --deterministic)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted training from its last epoch (backup beside the model)")
