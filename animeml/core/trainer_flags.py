"""The flags every training step takes (seed, determinism, tf.distribute strategy, mixed precision, resume), kept
apart from animeml.core.trainer so a step script adds them before it imports TensorFlow (fast `--help`)."""
import argparse

from animeml.core.cli import non_negative_int, positive_float, positive_int

STRATEGIES = ("auto", "one", "mirrored", "multiworker")
# the names of animeml.core.backbones, here so that flags can offer them before Keras is imported
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "efficientnetb0",
             "mobilenetv3small", "xception", "small_cnn")


TRAIN_FROM_HELP = ("backbone layer the trained top starts after, on cached activations (of each image and its "
                   "mirror) of the layers below; stage<N>: the end of an EfficientNet-Lite's stage N (2-6); auto: "
                   "stage5; none: the head alone on frozen features, then --finetune-epochs of the top "
                   "--finetune-layers with augmentation (also what other backbones than the Lites do)")


def add_training_flags(parser, seed=42, resume=True):
    """--seed, --deterministic, --strategy, --mixed-precision and, for a step that keeps a backup while it trains,
    --resume."""
    parser.add_argument("--seed", type=int, default=seed, help="seeds Python, NumPy and TensorFlow")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TensorFlow ops: two runs give the same metrics (slower, no mixed precision)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="tf.distribute strategy: auto = mirrored over the GPUs when there are several, else one "
                             "device; the global batch is --batch-size times the devices")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                        help="float16 compute (default: on with a GPU, off on a CPU and under --deterministic)")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue an interrupted training from its last epoch (backup beside the model)")


class ImageSize(argparse.Action):
    """`--image-size N` (square) or `--image-size H W`, always stored as [H, W]: one form in every script."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 2):
            parser.error(f"{option_string} takes N or H W, not {len(values)} numbers")
        setattr(namespace, self.dest, list(values) * (2 // len(values)))


# The frozen-then-fine-tune recipe of animeml.core.trainer: flag, argparse keywords and help, for each setting a
# step declares. `epochs` is the phase with the backbone frozen (or the only phase of a model trained from scratch).
RECIPE_FLAGS = {
    "backbone": (dict(choices=BACKBONES), "image backbone"),
    "weights": (dict(choices=["imagenet", "none"]),
                "pretrained backbone weights; 'none' trains from scratch (small_cnn always does)"),
    "image_size": (dict(type=positive_int, nargs="+", action=ImageSize, metavar="N"),
                   "image side in pixels, or height and width"),
    "epochs": (dict(type=positive_int), "epochs with the backbone frozen"),
    "finetune_epochs": (dict(type=non_negative_int), "epochs with the top of the backbone "
                                                                           "unfrozen (0: none)"),
    "finetune_layers": (dict(type=non_negative_int), "top backbone layers to fine-tune"),
    "learning_rate": (dict(type=positive_float), "Adam learning rate with the backbone frozen"),
    "finetune_learning_rate": (dict(type=positive_float), "Adam learning rate of fine-tuning"),
    "batch_size": (dict(type=positive_int), "images per batch and device"),
    "patience": (dict(type=positive_int), "epochs without improvement before a phase stops"),
}


def add_recipe_flags(parser, settings):
    """The recipe's flags for the settings a step declares (defaults from `settings`), then the training flags."""
    for key, (kwargs, help_text) in RECIPE_FLAGS.items():
        if key in settings:
            parser.add_argument("--" + key.replace("_", "-"), default=settings[key], help=help_text, **kwargs)
    add_training_flags(parser, seed=settings.get("seed", 42))


def recipe_arguments(args):
    """The trainer's keyword arguments from parsed recipe flags."""
    return dict(epochs=args.epochs, finetune_epochs=args.finetune_epochs, finetune_layers=args.finetune_layers,
                learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
                batch_size=args.batch_size, patience=args.patience, seed=args.seed, resume=args.resume)

