"""Benchmark: training images per second of the vision score model, per backbone, in each phase that the shared
trainer (animeml.core.trainer) runs: the backbone frozen, then its top layers fine-tuned; with the GFLOP/s that
achieves next to the machine's peak, so the distance to the limit shows.

FLOPs per training image are counted by TensorFlow's profiler on the graph of one training step (forward pass and
the gradients of the weights that phase trains; a multiply-add counts 2). The peak is a large float32 matmul (and
one in the half precision of --mixed-precision: float16 on a GPU, bfloat16 on a CPU) on the same device. Posters
come through animeml.core.images.image_dataset (augmented, decoded images cached, so the first untimed step also
fills the cache); backbones start from random weights, which cost the same as ImageNet ones and need no download.

    python benchmarks/bench_training.py --backbones efficientnet_lite0 resnet50 small_cnn --steps 5
    python benchmarks/bench_training.py --mixed-precision          # float16 on a GPU, bfloat16 on a CPU
"""
import time
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError
from animeml.core.trainer_flags import BACKBONES, ImageSize

SETTINGS = dict(
    image_size=[224, 224],
    batch_size=32,
    steps=5,
    finetune_layers=20,  # the default of the training scripts
    matmul_size=4096,
)


def phase_images_per_second(model, ds, steps, batch_size):
    """Images per second of model.fit, after one untimed step (graph tracing, cache filling)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def training_flops(model, image_size):
    """FLOPs of one training step on one image: the forward pass and the gradients of the trainable weights, as
    TensorFlow's profiler counts them on the frozen graph (dropout and batch statistics in inference form, which
    the count barely changes)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    def step(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=False))
        return tape.gradient(loss, model.trainable_variables)

    concrete = tf.function(step).get_concrete_function(tf.TensorSpec([1, *image_size, 3]))
    graph = convert_variables_to_constants_v2(concrete).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="scope",
                                         options=options).total_float_ops


def peak_gflops(size, dtype, repeats=5):
    """GFLOP/s of a size x size matmul, the best of `repeats` after a warm-up: what the device can reach."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=dtype)
    b = tf.random.normal((size, size), dtype=dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, default=paths.posters_dir(), help="folder of .jpg posters")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES),
                        help="backbones to measure")
    parser.add_argument("--image-size", type=cli.positive_int, nargs="+", action=ImageSize, metavar="N",
                        default=SETTINGS["image_size"], help="poster side in pixels: N (square) or H W")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"], help="posters per step")
    parser.add_argument("--steps", type=cli.positive_int, default=SETTINGS["steps"],
                        help="timed training steps per phase")
    parser.add_argument("--finetune-layers", type=cli.positive_int, default=SETTINGS["finetune_layers"],
                        help="top backbone layers trained in the fine-tuning phase")
    parser.add_argument("--matmul-size", type=cli.positive_int, default=SETTINGS["matmul_size"],
                        help="side of the square matmul that measures the peak")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="half-precision compute: mixed_float16 on a GPU, mixed_bfloat16 on a CPU")
    args = cli.parse(parser, argv)

    import keras
    import numpy as np
    import tensorflow as tf

    if not args.verbose:
        tf.get_logger().setLevel("ERROR")  # the profiler's deprecation notices
    from animeml.core.backbones import build_backbone, set_trainable
    from animeml.core.images import image_dataset
    from animeml.core.trainer import mixed_policy
    from animeml.score.models import build_vision_model

    image_paths = sorted(args.images.glob("*.jpg"))[:args.batch_size * args.steps]
    if not image_paths:
        raise PipelineError(f"no .jpg posters in {args.images}: run step 02 or pass --images")
    image_size = tuple(args.image_size)
    ds = image_dataset(image_paths, np.zeros(len(image_paths), np.float32), image_size=image_size,
                       batch_size=args.batch_size, training=True, cache=True).repeat()
    policy = keras.mixed_precision.Policy(mixed_policy() if args.mixed_precision else "float32")
    peaks = {"float32": peak_gflops(args.matmul_size, tf.float32)}
    if args.mixed_precision:
        peaks[policy.compute_dtype] = peak_gflops(args.matmul_size, tf.as_dtype(policy.compute_dtype))
    keras.mixed_precision.set_global_policy(policy)
    devices = ", ".join(d.name for d in tf.config.list_logical_devices())
    print(f"devices: {devices}; mixed precision {policy.name if args.mixed_precision else 'off'}; peak "
          + ", ".join(f"{dtype} matmul {gflops:.0f} GFLOP/s" for dtype, gflops in peaks.items())
          + f" ({args.matmul_size}x{args.matmul_size})")
    print(f"training, vision score model, {image_size[0]}x{image_size[1]} px, batch {args.batch_size}, "
          f"{args.steps} steps per phase; GFLOP per image = one training step as TensorFlow's profiler counts it")
    peak = max(peaks.values())
    print(f"{'backbone':<20}{'phase':<12}{'img/s':>8}{'GFLOP/img':>11}{'GFLOP/s':>9}{'of peak':>9}")
    for name in args.backbones:
        backbone = build_backbone(name, image_size, weights=None)
        model = build_vision_model(backbone, score_mean=7.0)
        for phase, top_layers in (("frozen", 0), (f"top {args.finetune_layers}", args.finetune_layers)):
            set_trainable(backbone, top_layers)
            speed = phase_images_per_second(model, ds, args.steps, args.batch_size)
            gflop = training_flops(model, image_size) / 1e9
            print(f"{name:<20}{phase:<12}{speed:>8.1f}{gflop:>11.2f}{gflop * speed:>9.1f}"
                  f"{gflop * speed / peak:>9.1%}")


if __name__ == "__main__":
    cli.run(main)
