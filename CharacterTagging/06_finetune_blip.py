"""Fine-tune BLIP (BlipForConditionalGeneration) on a caption set, either layout (captions.csv + images/ or .arrow
shards), on the set's saved train/validation/test split (shared with steps 07 and 08).

AdamW for --steps optimizer steps of --accumulation micro-batches each, mixed precision (bfloat16, else float16 with
loss scaling) on a GPU. Every --checkpoint-every steps the model, the optimizer and the loss history go to
data/captions/blip_checkpoints/<out name>/step_N/ and the validation loss is measured; a rerun resumes from the
latest checkpoint and sees the same batches an unbroken run would. At the end: the model and processor saved with
save_pretrained to --out (default data/models/blip_captions), the loss curve as CSV and PNG, and validation
BLEU-4/CIDEr-D of generated captions in a run record.

The base model is a local folder (default data/models/blip; fetch one where there is internet with
`caption_images.py --download Salesforce/blip-image-captioning-base`).
"""
import shutil
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(
    steps=1000,
    batch_size=8,
    accumulation=4,
    learning_rate=5e-5,
    weight_decay=0.01,
    checkpoint_every=100,
    keep_checkpoints=2,
    max_length=40,
    num_beams=3,
    seed=42,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--data", type=Path, help="caption set folder (default data/captions/tag_captions)")
    parser.add_argument("--model", type=Path, help="base BLIP folder (default data/models/blip)")
    parser.add_argument("--out", type=Path, help="folder of the fine-tuned model (default data/models/blip_captions)")
    parser.add_argument("--steps", type=cli.positive_int, default=SETTINGS["steps"], help="optimizer steps in all")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="images per micro-batch")
    parser.add_argument("--accumulation", type=cli.positive_int, default=SETTINGS["accumulation"],
                        help="micro-batches whose gradients make one optimizer step")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=SETTINGS["weight_decay"], help="AdamW weight decay")
    parser.add_argument("--checkpoint-every", type=cli.positive_int, default=SETTINGS["checkpoint_every"],
                        help="optimizer steps between checkpoints (and validation losses)")
    parser.add_argument("--keep-checkpoints", type=cli.positive_int, default=SETTINGS["keep_checkpoints"],
                        help="how many of the latest checkpoints to keep")
    parser.add_argument("--max-length", type=cli.positive_int, default=SETTINGS["max_length"],
                        help="longest caption in tokens (longer ones are cut in training)")
    parser.add_argument("--num-beams", type=cli.positive_int, default=SETTINGS["num_beams"],
                        help="beam width of the validation captions")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the split and the data order")
    parser.add_argument("--restart", action="store_true", help="delete this model's checkpoints and start over")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = cli.parse(parser, argv)

    import torch  # before anything that may load TensorFlow
    import pandas as pd

    from animeml.characters import captions
    from animeml.characters.caption_metrics import caption_scores
    from animeml.core.io import PipelineError, write_csv, write_json
    from animeml.core.runs import RunRecord

    source = args.data or captions.captions_dir() / "tag_captions"
    out = args.out or captions.finetuned_blip_dir()
    checkpoints = captions.captions_dir() / "blip_checkpoints" / out.name
    if out.exists() and not args.overwrite:
        raise PipelineError(f"{out} exists; pass --overwrite to replace it")
    if not source.exists():
        raise PipelineError(f"caption set {source} not found: run CharacterTagging/05_make_caption_set.py or pass "
                            f"--data")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    processor, model = captions.load_blip(args.model or captions.default_blip_dir(), device)
    parts = captions.load_caption_splits(source, seed=args.seed)
    if args.restart:
        shutil.rmtree(checkpoints, ignore_errors=True)
    torch.manual_seed(args.seed)
    record = RunRecord("characters/06_finetune_blip", cli.settings_of(args), inputs={"captions": source})

    history = captions.finetune_blip(
        processor, model, parts["train"], parts["val"], checkpoints, args.steps, args.batch_size,
        args.accumulation, args.learning_rate, args.weight_decay, args.checkpoint_every, args.keep_checkpoints,
        args.max_length, seed=args.seed, device=device)
    reports = captions.captions_dir()
    write_csv(pd.DataFrame(history), reports / f"{out.name}_loss.csv")
    captions.plot_loss(history, reports / f"{out.name}_loss.png", f"BLIP fine-tuning on {source.name}")

    check = parts["val"] if len(parts["val"]) else parts["train"]
    predicted = []
    for start in range(0, len(check), args.batch_size):
        rows = range(start, min(start + args.batch_size, len(check)))
        predicted += captions.generate_captions(processor, model, [check.image(i) for i in rows],
                                                args.max_length, args.num_beams)
    scores = caption_scores(predicted, [[c] for c in check.captions])
    metrics = {"steps": args.steps, "final_train_loss": history[-1]["loss"] if history else None,
               **{f"val_{name}": round(value, 4) for name, value in scores.items()}}
    run = record.finish(metrics)
    captions.save_blip(processor, model, out)
    write_json({"source": str(source), "split": str(captions.split_path(source)), "run": run},
               out / "animeml_run.json")
    print(f"BLIP -> {out}; validation BLEU-4 {scores['BLEU-4']:.3f}, CIDEr-D {scores['CIDEr-D']:.3f} "
          f"({len(check)} images); loss curve {reports / f'{out.name}_loss.png'}")


if __name__ == "__main__":
    cli.run(main)
