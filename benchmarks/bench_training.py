"""Benchmark: training images per second of the vision score model, per backbone, in each phase that
the shared trainer (animeml.core.trainer) runs: the backbone frozen, then its top layers fine-tuned.

Posters come through animeml.core.images.image_dataset (augmented, decoded images cached, so the first untimed step
also fills the cache); backbones start from random weights, which cost the same as ImageNet ones and need no
download. bench_image_loader.py --train measures the whole backbone trainable instead.

    python benchmarks/bench_training.py --backbones efficientnet_lite0 small_cnn --image-size 192 192 --steps 5
"""
import argparse
import time
from pathlib import Path

import keras
import numpy as np

from animeml.core import paths
from animeml.core.backbones import BACKBONES, build_backbone, set_trainable
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.images import image_dataset
from animeml.score.models import build_vision_model

FINETUNE_LAYERS = 20  # the default of the training scripts


def phase_images_per_second(model, ds, steps, batch_size):
    """Images per second of model.fit, after one untimed step (graph tracing, cache filling)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=paths.posters_dir(), help="folder of .jpg posters")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--image-size", type=int, nargs=2, default=[192, 192], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per phase")
    args = parser.parse_args()

    image_paths = sorted(args.images.glob("*.jpg"))[:args.batch_size * args.steps]
    if not image_paths:
        raise PipelineError(f"no .jpg posters in {args.images}: run step 02 or pass --images")
    ds = image_dataset(image_paths, np.zeros(len(image_paths), np.float32), image_size=args.image_size,
                       batch_size=args.batch_size, training=True, cache=True).repeat()

    print(f"training images/s, vision score model, {args.image_size[0]}x{args.image_size[1]}, "
          f"batch {args.batch_size}, {args.steps} steps per phase")
    print(f"{'backbone':<20}{'frozen':>10}{f'top {FINETUNE_LAYERS} tuned':>14}")
    for name in args.backbones:
        backbone = build_backbone(name, args.image_size, weights=None)
        model = build_vision_model(backbone, score_mean=7.0)
        speeds = []
        for top_layers in (0, FINETUNE_LAYERS):
            set_trainable(backbone, top_layers)
            speeds.append(phase_images_per_second(model, ds, args.steps, args.batch_size))
        print(f"{name:<20}{speeds[0]:>10.1f}{speeds[1]:>14.1f}")


if __name__ == "__main__":
    run(main)
