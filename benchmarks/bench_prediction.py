"""Benchmark: images per second of the batch prediction scripts against the model's own limit on this machine.

For CharacterTagging/tag_images.py and GenreClassification/predict_genres.py: the script's images/s on --images
images (its main() called in this process after one untimed warm-up run, so TensorFlow's start-up is not counted;
the file checks, decoding, resizing, progress bar and CSV are), next to `model.predict` on the same images already
decoded and resized in memory (and on their mirror images, for a model whose script averages both), with the same
model and batch size, and next to the compiled forward pass the scripts use (trainer.forward_pass) on those tensors,
as float32 and as the uint8 the scripts hand over. They take turns --repeats times; the script's fastest run
counts, against the fastest run of the model alone by any of these ways (on this 2-core machine the same
`model.predict` call measured 47 or 77 img/s from one repeat to the next, the forward pass 73-89). The ratio is
the share of the model's throughput that a user gets; the goal is >= 80%. Each is given by wall time and by this
process's CPU time: on a machine that other programs share, the wall time also counts them, the CPU time only
the work done.

The models are the saved ones in data/models when they are there (tags_efficientnet_lite0.h5,
genres_efficientnet_lite0_bce.h5); otherwise models of the same architecture with random weights (which cost the
same to run) are built and saved to a temporary folder. --mixed-precision builds them with float16 compute (a GPU
speed-up; slow on a CPU).

    python benchmarks/bench_prediction.py                       # 2,000 faces and 2,000 posters
    python benchmarks/bench_prediction.py --images 300 --backbone small_cnn --quick
"""
import tempfile
import time
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(
    images=2000,
    repeats=3,
    batch_size=32,
    backbone="efficientnet_lite0",
    tag_image_size=160,  # CharacterTagging/03_train_tagger.py
    genre_image_size=224,  # GenreClassification/02_train.py
)
FACES = paths.SHARED / "data" / "tags" / "images"
POSTERS = paths.SHARED / "data" / "posters" / "images"
SCRIPTS = {"tags": paths.ROOT / "CharacterTagging" / "tag_images.py",
           "genres": paths.ROOT / "GenreClassification" / "predict_genres.py"}
SAVED = {"tags": "tags_efficientnet_lite0.h5", "genres": "genres_efficientnet_lite0_bce.h5"}
N_OUTPUTS = {"tags": 23, "genres": 10}


def image_folder(source, count, folder):
    """`count` images of `source` (cycled when it has fewer) as links in `folder`."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise PipelineError(f"no images in {source}")
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:05d}{files[i % len(files)].suffix}").symlink_to(files[i % len(files)])
    return folder


def built_model(task, backbone, image_size, folder):
    """A model of the task's architecture with random weights, saved with the sidecar its script reads."""
    from animeml.characters.classifier import build_classifier
    from animeml.core.store import save_model
    from animeml.genres import build_model

    n = N_OUTPUTS[task]
    labels = [f"{task}_{i}" for i in range(n)]
    if task == "tags":
        model = build_classifier(backbone, n, image_size, multi_label=True, pretrained=False)
        sidecar = {"labels": labels, "image_size": image_size, "thresholds": [0.5] * n}
    else:
        model = build_model(backbone, n, image_size, pretrained=False)
        sidecar = {"genres": labels, "image_size": image_size, "thresholds": dict.fromkeys(labels, 0.5),
                   "global_threshold": 0.5}
    path = folder / f"{task}_{backbone}.h5"
    save_model(model, path, sidecar)
    return path


def timed(run):
    """(wall seconds, CPU seconds of this process) of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def script_run(task, model_file, images, out, batch_size):
    """The script's main() on the folder as a function to time, after an untimed run on a few images."""
    import runpy

    main = runpy.run_path(str(SCRIPTS[task]))["main"]
    warm = images.with_name(images.name + "_warm")
    warm.mkdir(exist_ok=True)
    for link in sorted(images.iterdir())[:batch_size]:
        (warm / link.name).symlink_to(link.resolve())
    flags = ["--model", str(model_file), "--batch-size", str(batch_size)]
    main(["--images", str(warm), "--out", str(out.with_name("warm.csv")), *flags])
    return lambda: main(["--images", str(images), "--out", str(out), *flags])


def model_runs(model_file, images, batch_size):
    """{name: function to time} of the model alone on the images already decoded and resized in memory, and on their
    mirror images too where the sidecar says the script averages both ("flip"): `model.predict`, and the compiled
    forward pass the scripts call batch by batch (trainer.forward_pass) on float32 and on uint8 batches, each after
    an untimed pass (which traces every batch shape)."""
    import numpy as np

    from animeml.characters.classifier import load_model  # registers the tagger's GroupSoftmax layer
    from animeml.core.images import image_batch
    from animeml.core.trainer import forward_pass

    model, sidecar = load_model(model_file)
    files = sorted(images.iterdir())
    tensors = np.concatenate([image_batch(files[i:i + 256], sidecar["image_size"])
                              for i in range(0, len(files), 256)])
    if sidecar.get("flip"):
        tensors = np.concatenate([tensors, tensors[:, :, ::-1]])
    whole = tensors.astype(np.uint8)  # the same pixel values, as the scripts hand them over
    forward = forward_pass(model)
    runs = {"model.predict": lambda: model.predict(tensors, batch_size=batch_size, verbose=0),
            "forward pass": lambda: [forward(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)],
            "forward pass uint8": lambda: [forward(whole[i:i + batch_size]) for i in range(0, len(whole), batch_size)]}
    for run in runs.values():
        run()
    return runs


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=cli.positive_int, default=SETTINGS["images"], help="images per script")
    parser.add_argument("--repeats", type=cli.positive_int, default=SETTINGS["repeats"],
                        help="timed runs of the script and of model.predict, in turn; the fastest of each counts")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per model call (scripts and model.predict alike)")
    parser.add_argument("--backbone", default=SETTINGS["backbone"],
                        help="backbone of the built models (when data/models has no saved one)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(SCRIPTS), default=sorted(SCRIPTS),
                        help="which prediction scripts to measure")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="build the models with half-precision compute: mixed_float16 on a GPU, "
                        "mixed_bfloat16 on a CPU")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run for the tests: small images (64 px), whatever --images says")
    args = cli.parse(parser, argv)

    import keras
    import tensorflow as tf

    from animeml.core.store import read_sidecar
    from animeml.core.trainer import mixed_policy

    policy = mixed_policy() if args.mixed_precision else "float32"
    print(f"devices: {', '.join(d.name for d in tf.config.list_logical_devices())}; "
          f"mixed precision {policy if args.mixed_precision else 'off'}")
    keras.mixed_precision.set_global_policy(policy)
    sizes = {"tags": SETTINGS["tag_image_size"], "genres": SETTINGS["genre_image_size"]}
    if args.quick:
        sizes = dict.fromkeys(sizes, 64)
    sources = {"tags": FACES, "genres": POSTERS}
    with tempfile.TemporaryDirectory(prefix="bench_prediction_") as tmp:
        tmp = Path(tmp)
        for task in args.tasks:
            saved = paths.models_dir() / SAVED[task]
            if saved.exists() and not args.quick:
                model_file, which = saved, f"saved model {saved} at {read_sidecar(saved)['image_size']} px"
            else:
                model_file = built_model(task, args.backbone, sizes[task], tmp)
                which = f"{args.backbone} with random weights at {sizes[task]} px (no saved model)"
            images = image_folder(sources[task], args.images, tmp / f"{task}_images")
            runs = {**model_runs(model_file, images, args.batch_size),
                    "script": script_run(task, model_file, images, tmp / f"{task}.csv", args.batch_size)}
            times = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    times[name].append(timed(run))
            rates = {name: [args.images / wall for wall, _ in runs_of] for name, runs_of in times.items()}
            script = min(times["script"])
            reference = min(sum((times[name] for name in runs if name != "script"), []))  # the model's limit
            which += ", flip-averaged" if read_sidecar(model_file).get("flip") else ""
            print(f"{SCRIPTS[task].relative_to(paths.ROOT)}: {which}, {args.images} images, batch "
                  f"{args.batch_size}, fastest of {args.repeats}: script {max(rates['script']):.1f} img/s, "
                  f"model.predict in memory {max(rates['model.predict']):.1f} img/s, forward pass in memory "
                  f"{max(rates['forward pass'] + rates['forward pass uint8']):.1f} img/s, ratio to the fastest "
                  f"{reference[0] / script[0]:.0%} "
                  f"(by CPU time of those runs {reference[1] / script[1]:.0%}); "
                  + "; ".join(f"{name} runs {', '.join(f'{r:.1f}' for r in rate)} img/s"
                              for name, rate in rates.items()))


if __name__ == "__main__":
    cli.run(main)
