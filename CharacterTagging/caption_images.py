"""Caption every image of a folder with BLIP (a local folder saved with save_pretrained: the model fine-tuned by
06_finetune_blip.py, else the downloaded one) or with the Keras captioner of 07_train_captioner.py: one CSV row per
image with its caption, status and reason.

    python CharacterTagging/caption_images.py --images DIR --out captions.csv [--kind blip|keras] [--model PATH]
        [--txt [--overwrite|--append]] [--with-tags] [--batch-size 8] [--max-length 30] [--num-beams 3]
    python CharacterTagging/caption_images.py --download Salesforce/blip-image-captioning-base   # needs internet

Every image is checked before a model sees it: one that is not an image, truncated, empty or too large gets a row
with status `skipped` and the reason, and the others are captioned; the exit status is 2 only when none could be.

--txt writes the caption beside each image as `<stem>.txt` (`<name>.txt` where two images share a stem); a file
already there is kept unless --overwrite (replace it) or --append (add what it lacks). --with-tags puts the
tagger's tags (03_train_tagger.py) before the caption, as users of Danbooru taggers expect.
"""
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(kind="blip", batch_size=8, max_length=30, num_beams=3, tagger="tags_efficientnet_lite0.h5",
                keras_model="captioner_efficientnet_lite0.h5")
STEPS = {"blip": "CharacterTagging/06_finetune_blip.py", "keras": "CharacterTagging/07_train_captioner.py",
         "tags": "CharacterTagging/03_train_tagger.py"}


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--images", type=Path, help="folder of images to caption")
    parser.add_argument("--out", type=Path, help="CSV to write: file, caption, [tags], status, reason")
    parser.add_argument("--kind", choices=("blip", "keras"), default=SETTINGS["kind"], help="which captioner")
    parser.add_argument("--model", type=Path,
                        help="BLIP folder (default data/models/blip_captions if step 06 made it, else "
                             "data/models/blip) or Keras captioner .h5 (default data/models/"
                             f"{SETTINGS['keras_model']})")
    parser.add_argument("--download", type=cli.non_empty, metavar="NAME",
                        help="fetch this Hugging Face BLIP model into --model (default data/models/blip) first")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per model call")
    parser.add_argument("--max-length", type=cli.positive_int, default=SETTINGS["max_length"],
                        help="longest caption in tokens (BLIP; the Keras captioner's is fixed at training)")
    parser.add_argument("--num-beams", type=cli.positive_int, default=SETTINGS["num_beams"],
                        help="beam width (1: greedy)")
    parser.add_argument("--device", default="auto", help="BLIP's torch device: auto, cpu, cuda, cuda:1")
    parser.add_argument("--txt", action="store_true", help="also write a caption file beside each image")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="with --txt: replace existing caption files")
    existing.add_argument("--append", action="store_true", help="with --txt: add to existing caption files")
    parser.add_argument("--with-tags", action="store_true", help="put the tagger's tags before each caption")
    parser.add_argument("--tagger", type=Path, help=f"tagger .h5 (default data/models/{SETTINGS['tagger']})")
    args = cli.parse(parser, argv)
    if (args.overwrite or args.append) and not args.txt:
        parser.error("--overwrite and --append apply to the --txt caption files; add --txt")
    if args.download and args.kind != "blip":
        parser.error("--download fetches a BLIP model; it needs --kind blip")
    if not args.download and not (args.images and args.out):
        parser.error("--images and --out are required (unless --download alone)")

    if args.kind == "blip":
        import torch  # before TensorFlow (the tagger), which can crash torch loaded after it
    from animeml.characters import captions
    from animeml.core import batch
    from animeml.core.faces import list_images
    from animeml.core.imagefile import TF_FORMATS, check_image, read_rgb
    from animeml.core.io import PipelineError
    from animeml.core.paths import models_dir

    if args.download:
        folder = args.model or captions.default_blip_dir()
        captions.download_blip(args.download, folder)
        print(f"{args.download} -> {folder}")
        if not args.images:
            return
    paths = list_images(args.images)
    if not paths:
        raise PipelineError(f"no image files in {args.images}")

    if args.kind == "blip":
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        folder = args.model or next((f for f in (captions.finetuned_blip_dir(), captions.default_blip_dir())
                                     if f.is_dir()), captions.default_blip_dir())
        processor, model = captions.load_blip(folder, device)

        from PIL import Image

        def describe(chunk):
            images = [Image.fromarray(image) for _, image in chunk]
            return captions.generate_captions(processor, model, images, args.max_length, args.num_beams)
    else:
        from animeml.characters import captioner
        from animeml.core.store import load_model

        model_file = args.model or models_dir() / SETTINGS["keras_model"]
        model, sidecar = batch.load_model_for(lambda p: load_model(p, captioner.CUSTOM_OBJECTS), model_file,
                                              STEPS["keras"], ["vocabulary", "image_size"])

        def describe(chunk):
            encoded = [path.read_bytes() for path, _ in chunk]  # checked by load() just before
            return captioner.caption_images(model, sidecar["vocabulary"], encoded.__getitem__, len(encoded),
                                            sidecar["image_size"], args.batch_size, args.num_beams, desc=None)
    if args.with_tags:
        from animeml.characters.classifier import load_model as load_tagger, predict_images
        from animeml.characters.tags import chosen_tags

        tagger, tag_sidecar = batch.load_model_for(load_tagger, args.tagger or models_dir() / SETTINGS["tagger"],
                                                   STEPS["tags"], ["labels", "image_size", "thresholds"])

        def tags_of(chunk_paths):  # as tag_images.py names them
            probabilities = predict_images(tagger, chunk_paths, tag_sidecar["image_size"], args.batch_size,
                                           flip=tag_sidecar.get("flip", False))
            return [", ".join(tag for tag, _ in row) for row in chosen_tags(probabilities, tag_sidecar)]

    def load(path):
        check_image(path, formats=TF_FORMATS)
        return path, read_rgb(path)

    def predict(chunk):
        texts = describe(chunk)
        rows = [{"caption": text} for text in texts]
        if args.with_tags:
            for row, tags in zip(rows, tags_of([str(path) for path, _ in chunk])):
                row["tags"] = tags
        return rows

    outcomes = batch.run_batch(paths, load, predict, args.batch_size, desc=f"captioning ({args.kind})")
    columns = ["caption"] + (["tags"] if args.with_tags else []) + (["caption_file"] if args.txt else [])
    if args.txt:
        mode = "overwrite" if args.overwrite else "append" if args.append else "keep"
        for outcome, text_file in zip(outcomes, batch.output_paths(paths, ".txt")):
            if outcome.ok:
                text = ", ".join(t for t in (outcome.result.get("tags"), outcome.result["caption"]) if t)
                outcome.result["caption_file"] = batch.write_text_file(text_file, text, mode)
    table = batch.outcome_table("file", [path.name for path in paths], outcomes, columns)
    batch.finish(table, outcomes, args.out, "images")


if __name__ == "__main__":
    cli.run(main)
