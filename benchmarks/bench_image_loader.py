"""Benchmark: images per second of animeml.core.images.image_dataset (tf.data, parallel decode) against the
per-file OpenCV loop of the original coursework scripts (cv2.imread, cvtColor, resize, np.stack per batch).

Both read the same posters at the same image size and batch size (bilinear resize), after one untimed pass
that warms the operating system's file cache; the two loaders take turns --repeats times and the median counts.
Training images per second per backbone: benchmarks/bench_training.py.

    python benchmarks/bench_image_loader.py [--images DIR] [--limit 256]
"""
import time
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(
    image_size=224,
    batch_size=32,
    limit=None,
    repeats=3,
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def opencv_batches(image_paths, image_size, batch_size):
    """The coursework loader: one file at a time, in Python."""
    import cv2
    import numpy as np

    height, width = image_size
    batch = []
    for path in image_paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        batch.append(cv2.resize(image, (width, height)))
        if len(batch) == batch_size:
            yield np.stack(batch).astype(np.float32)
            batch = []
    if batch:
        yield np.stack(batch).astype(np.float32)


def images_per_second(batches):
    start = time.perf_counter()
    count = sum(len(batch) for batch in batches)
    return count / (time.perf_counter() - start)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, default=paths.posters_dir(), help="folder of jpg/png images")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="image side in pixels")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"], help="images per batch")
    parser.add_argument("--limit", type=cli.positive_int, default=SETTINGS["limit"],
                        help="use only the first N images (default: all)")
    parser.add_argument("--repeats", type=cli.positive_int, default=SETTINGS["repeats"],
                        help="passes of each loader; the median counts")
    args = cli.parse(parser, argv)

    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from animeml.core.images import image_dataset

    image_paths = sorted(p for p in args.images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
    if not image_paths:
        raise PipelineError(f"no jpg/png images in {args.images}: run step 02 or pass --images DIR")
    image_size = (args.image_size, args.image_size)
    print(f"devices: {', '.join(d.name for d in tf.config.list_logical_devices())}")

    for path in image_paths:
        path.read_bytes()
    tfdata = image_dataset(image_paths, image_size=image_size, batch_size=args.batch_size)
    opencv_rates, tfdata_rates = [], []
    for _ in tqdm(range(args.repeats), desc="loader passes"):
        opencv_rates.append(images_per_second(opencv_batches(image_paths, image_size, args.batch_size)))
        tfdata_rates.append(images_per_second(tfdata.as_numpy_iterator()))
    opencv_rate, tfdata_rate = np.median(opencv_rates), np.median(tfdata_rates)
    print(f"{len(image_paths)} images at {args.image_size}px, batch {args.batch_size}: "
          f"opencv loop {opencv_rate:.0f} img/s, image_dataset {tfdata_rate:.0f} img/s, "
          f"ratio {tfdata_rate / opencv_rate:.2f}x")


if __name__ == "__main__":
    cli.run(main)
