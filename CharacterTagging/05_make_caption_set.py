"""Make a small real caption set from colour-tagged anime faces: each face's hair and eye tags composed into one
sentence ("blonde hair, blue eyes" -> "an anime face with blonde hair and blue eyes"), written in the
`captions.csv` + `images/` layout and, with --arrow, also as Hugging Face `.arrow` shards (`image` bytes, `text`)
under `<out>_arrow/train/shards/`.

Such captions name colours only: a model trained on them learns colour recognition and exercises the caption
machinery; it says nothing about describing real illustrations.
"""
import shutil
from pathlib import Path

from animeml.core import cli
from animeml.core.paths import SHARED

SETTINGS = dict(
    tags_csv=SHARED / "data" / "tags" / "tags.csv",
    limit=None,
    shards=4,
    seed=0,
)


def default_out():
    from animeml.characters.captions import captions_dir
    return captions_dir() / "tag_captions"


def compose_caption(tags):
    """'an anime face with X hair and Y eyes' from a face's tags; other tags are left out, None if none fit."""
    hair = [tag[:-len(" hair")] for tag in tags if tag.endswith(" hair")]
    eyes = [tag[:-len(" eyes")] for tag in tags if tag.endswith(" eyes")]
    parts = ([f"{' and '.join(hair)} hair"] if hair else []) + ([f"{' and '.join(eyes)} eyes"] if eyes else [])
    return f"an anime face with {' and '.join(parts)}" if parts else None


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--tags-csv", type=Path, default=SETTINGS["tags_csv"],
                        help="CSV of file,tags (relative to its folder)")
    parser.add_argument("--out", type=Path, help="output folder (default data/captions/tag_captions)")
    parser.add_argument("--limit", type=cli.positive_int, default=SETTINGS["limit"],
                        help="keep this many faces, a seeded sample (default: all)")
    parser.add_argument("--arrow", action="store_true", help="also write the set as .arrow shards via datasets")
    parser.add_argument("--shards", type=cli.positive_int, default=SETTINGS["shards"], help="number of .arrow shards")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the --limit sample")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = cli.parse(parser, argv)

    import pandas as pd
    from tqdm import tqdm

    from animeml.characters.tags import read_tags_csv
    from animeml.core.io import PipelineError, write_csv

    out = args.out or default_out()
    arrow_out = out.with_name(out.name + "_arrow")
    for folder in (out, arrow_out) if args.arrow else (out,):
        if folder.exists() and not args.overwrite:
            raise PipelineError(f"{folder} exists; pass --overwrite to replace it")
    table = read_tags_csv(args.tags_csv)
    table["caption"] = [compose_caption(tags) for tags in table["tags"]]
    table = table[table["caption"].notna()]
    if args.limit and args.limit < len(table):
        table = table.sample(args.limit, random_state=args.seed).sort_index()
    if table.empty:
        raise PipelineError(f"no face in {args.tags_csv} has a hair or eye tag")

    tmp = out.with_name(f".{out.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    files = []
    for source in tqdm(table["path"], desc="copying faces", unit="image"):
        name = Path(source).name
        shutil.copyfile(source, tmp / "images" / name)
        files.append(f"images/{name}")
    write_csv(pd.DataFrame({"file": files, "caption": table["caption"].to_numpy()}), tmp / "captions.csv")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{len(files)} captions ({table['caption'].nunique()} distinct) -> {out}/captions.csv + images/")
    if args.arrow:
        write_arrow_shards(out, arrow_out, args.shards)
        print(f"{args.shards} .arrow shards -> {arrow_out}/train/shards/")


def write_arrow_shards(csv_folder, out, shards):
    """The CSV layout as `train/shards/anime-captions-train-000NN-of-000MM.arrow` (columns image: binary,
    text: string), written with datasets' save_to_disk into a temporary folder, then renamed into place."""
    import pandas as pd
    from datasets import Dataset, Features, Value

    table = pd.read_csv(csv_folder / "captions.csv", dtype=str, keep_default_na=False)
    data = Dataset.from_dict({"image": [(csv_folder / f).read_bytes() for f in table["file"]],
                              "text": list(table["caption"])},
                             features=Features({"image": Value("binary"), "text": Value("string")}))
    tmp = out.with_name(f".{out.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp / "saved"), num_shards=min(shards, len(data)))
    (tmp / "train" / "shards").mkdir(parents=True)
    for index, shard in enumerate(sorted((tmp / "saved").glob("data-*.arrow"))):
        shard.rename(tmp / "train" / "shards" / f"anime-captions-train-{index:05d}-of-{shards:05d}.arrow")
    shutil.rmtree(tmp / "saved")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    cli.run(main)
