"""Genre step 01: multi-hot labels of the top-N genres for every poster, and the split grouped by anime.

Reads data/ani_data_merged.csv; writes data/genres/labels.csv (one row per poster: split, genres, one 0/1 column
per genre), data/genres/genres.json (the genre vocabulary), data/genres/split.csv (anime_id -> split, iteratively
stratified on the genres, seeded; reused once written) and data/genres/split_counts.csv (posters per genre and
split).

    python GenreClassification/01_make_labels.py --top 10
    python GenreClassification/01_make_labels.py --types TV Movie --catalog-covers ../shared/data/posters
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(
    top=10,
    seed=42,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="posters + metadata, output of step 03")
    parser.add_argument("--top", type=cli.positive_int, default=SETTINGS["top"],
                        help="number of most frequent genres to keep")
    parser.add_argument("--types", nargs="+", help="keep only these anime types (e.g. TV Movie); unknown dropped")
    parser.add_argument("--catalog-covers", type=Path, metavar="DIR",
                        help="a posters folder with catalog_covers.csv: its covers become extra training rows")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"],
                        help="seeds the stratified split (only when data/genres/split.csv is made)")
    args = cli.parse(parser, argv)

    import pandas as pd

    from animeml.core.io import PipelineError, write_csv, write_json
    from animeml.core.runs import RunRecord
    from animeml.core.table import read_merged
    from animeml.genres import catalog_rows, label_posters, read_catalog, labels_csv, split_counts, vocabulary_json

    if not args.merged.exists():
        raise PipelineError(f"{args.merged} not found: run step 03 (03_merge_data.py) first")
    catalog_csv = args.catalog_covers and args.catalog_covers / "catalog_covers.csv"
    inputs = {"merged": args.merged, **({"catalog_covers": catalog_csv} if catalog_csv else {})}
    record = RunRecord("genres/01_make_labels", cli.settings_of(args), inputs=inputs)
    merged = read_merged(args.merged)
    catalog = read_catalog(catalog_csv) if catalog_csv else None  # checked before the split file is written
    table, genres = label_posters(merged, args.top, paths.genres_dir() / "split.csv", seed=args.seed)
    if catalog is not None:
        table = pd.concat([table, catalog_rows(catalog, args.catalog_covers / "catalog_covers", merged, table,
                                               genres)], ignore_index=True)
    if args.types:
        table = table[table["type"].isin(args.types)].reset_index(drop=True)
    if table.empty:
        raise PipelineError("no poster left with a genre of the vocabulary")

    write_csv(table, labels_csv())
    write_json({"genres": genres}, vocabulary_json())
    counts = split_counts(table, genres)
    write_csv(counts, paths.genres_dir() / "split_counts.csv")
    print(counts.to_string(index=False))
    record.finish({"posters": len(table), "anime": int(table["anime_id"].nunique()), "genres": genres,
                   "posters_per_split": table["split"].value_counts().to_dict(),
                   "catalog_covers": int((table["source"] == "catalog").sum())})
    print(f"wrote {labels_csv()}: {len(table)} posters of {table['anime_id'].nunique()} anime, {len(genres)} genres "
          f"({(table['source'] == 'catalog').sum()} catalog covers)")


if __name__ == "__main__":
    cli.run(main)
