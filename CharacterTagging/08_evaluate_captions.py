"""Evaluate every captioner on the test split of a caption set: BLEU-1..4, ROUGE-L and CIDEr-D (pure Python, our
own tokenisation; METEOR and SPICE need Java and are left out) and the share of exact matches, for each Keras
captioner (data/models/captioner_*.h5) and each fine-tuned BLIP folder, next to two trivial baselines: the most
frequent training caption for every image, and the training caption of the nearest training image by ImageNet
backbone features (cosine).

Writes data/captions/evaluation/: results.csv and results.md (one row per model), test_captions.csv (every
model's caption of every test image) and examples.png (test images with their reference and generated captions).
"""
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(baseline_backbone="efficientnet_lite0", baseline_image_size=96, batch_size=32, num_beams=3,
                max_length=30, examples=8)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--data", type=Path, help="caption set folder (default data/captions/tag_captions)")
    parser.add_argument("--captioners", type=Path, nargs="*",
                        help="Keras captioner .h5 files (default: every data/models/captioner_*.h5)")
    parser.add_argument("--blip", type=Path, nargs="*",
                        help="fine-tuned BLIP folders (default: data/models/blip_captions if it exists)")
    parser.add_argument("--baseline-backbone", default=SETTINGS["baseline_backbone"],
                        help="ImageNet backbone whose features find the nearest training image")
    parser.add_argument("--baseline-image-size", type=cli.positive_int, default=SETTINGS["baseline_image_size"],
                        help="input side of the baseline backbone")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per model call")
    parser.add_argument("--num-beams", type=cli.positive_int, default=SETTINGS["num_beams"],
                        help="beam width of every model (1: greedy)")
    parser.add_argument("--max-length", type=cli.positive_int, default=SETTINGS["max_length"],
                        help="longest BLIP caption in tokens")
    parser.add_argument("--examples", type=cli.non_negative_int, default=SETTINGS["examples"],
                        help="test images shown in examples.png")
    parser.add_argument("--out-dir", type=Path, help="output folder (default data/captions/evaluation)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split, if this set has none yet")
    args = cli.parse(parser, argv)

    from animeml.core.paths import models_dir

    blip_dirs = args.blip if args.blip is not None else [
        d for d in [models_dir() / "blip_captions"] if (d / "config.json").is_file()]
    if blip_dirs:
        import torch  # before TensorFlow, which can crash torch loaded after it
    import numpy as np
    import pandas as pd

    from animeml.characters import captioner, captions
    from animeml.characters.caption_metrics import caption_scores
    from animeml.core.backbones import build_backbone
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.runs import RunRecord
    from animeml.core.store import load_model

    source = args.data or captions.captions_dir() / "tag_captions"
    out_dir = args.out_dir or captions.captions_dir() / "evaluation"
    keras_files = args.captioners if args.captioners is not None else sorted(models_dir().glob("captioner_*.h5"))
    if not source.exists():
        raise PipelineError(f"caption set {source} not found: run CharacterTagging/05_make_caption_set.py or pass "
                            f"--data")
    parts = captions.load_caption_splits(source, seed=args.seed)
    train, test = parts["train"], parts["test"]
    references = [[c] for c in test.captions]
    record = RunRecord("characters/08_evaluate_captions", cli.settings_of(args), inputs={"captions": source})

    predictions = {"most frequent training caption": [pd.Series(train.captions).mode().iloc[0]] * len(test)}
    backbone = build_backbone(args.baseline_backbone, args.baseline_image_size)

    def features(data, desc):
        rows = [backbone.predict_on_batch(batch) for batch in
                captioner.image_dataset(data.image_bytes, len(data), args.baseline_image_size, args.batch_size)]
        rows = np.concatenate(rows)
        print(f"{desc}: {len(rows)} images")
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    nearest = (features(test, "baseline features, test") @ features(train, "baseline features, train").T).argmax(1)
    predictions[f"nearest training image ({args.baseline_backbone})"] = [train.captions[i] for i in nearest]

    for path in keras_files:
        model, sidecar = load_model(path, captioner.CUSTOM_OBJECTS)
        predictions[f"keras captioner {Path(path).stem}"] = captioner.caption_images(
            model, sidecar["vocabulary"], test.image_bytes, len(test), sidecar["image_size"], args.batch_size,
            args.num_beams, desc=f"captioning test ({Path(path).stem})")
    for folder in blip_dirs:
        processor, model = captions.load_blip(folder, "cuda" if torch.cuda.is_available() else "cpu")
        predicted = []
        for start in range(0, len(test), args.batch_size):
            rows = range(start, min(start + args.batch_size, len(test)))
            predicted += captions.generate_captions(processor, model, [test.image(i) for i in rows],
                                                    args.max_length, args.num_beams)
        predictions[f"BLIP {Path(folder).name}"] = predicted

    results = pd.DataFrame([{"model": name, "test_images": len(test), **caption_scores(texts, references)}
                            for name, texts in predictions.items()])
    write_csv(results, out_dir / "results.csv")
    write_markdown(results, out_dir / "results.md", source)
    write_csv(pd.DataFrame({"key": test.keys, "reference": test.captions, **predictions}),
              out_dir / "test_captions.csv")
    if args.examples:
        plot_examples(test, predictions, min(args.examples, len(test)), out_dir / "examples.png")
    record.finish(results.set_index("model").drop(columns="test_images").round(4).to_dict(orient="index"))
    print(results.round(3).to_string(index=False))
    print(f"-> {out_dir}/results.csv, results.md, test_captions.csv" + (", examples.png" if args.examples else ""))


def write_markdown(results, path, source):
    from animeml.core.io import atomic_path

    columns = list(results.columns)
    lines = [f"Caption scores on the test split of `{source}`.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in results.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot_examples(test, predictions, count, path):
    """A grid of test images, each with its reference caption and every model's caption below it."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from animeml.core.io import atomic_path

    columns = min(4, count)
    rows = -(-count // columns)
    height = 2.2 + 0.45 * len(predictions)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, height * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in zip(range(count), axes.flat):
        ax.imshow(test.image(i))
        lines = [f"reference: {test.captions[i]}"] + [f"{name}: {texts[i]}" for name, texts in predictions.items()]
        ax.set_title("\n".join(textwrap.shorten(line, 95) for line in lines), fontsize=6, loc="left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main)
