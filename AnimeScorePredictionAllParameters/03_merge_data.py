"""Step 03: join posters and metadata into data/ani_data_merged.csv, one row per poster image.

Post-release columns (Members, Popularity, Rank, Favorites, Scored By) carry a `post_` prefix so that models
meant to predict before release can leave them out. Rows without a score are kept: genre models use them.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(),
                        help="output of step 01 (default: %(default)s)")
    parser.add_argument("--posters", type=Path, default=paths.posters_dir(),
                        help="output folder of step 02, with its posters.csv (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=paths.merged_csv(), help="CSV to write (default: %(default)s)")
    args = cli.parse(parser, argv)
    if args.out.is_dir():
        raise PipelineError(f"--out {args.out} is a folder; give the CSV file to write")

    from animeml.core.io import write_csv
    from animeml.core.table import INDEX_NAME, merge_posters

    if not (args.posters / INDEX_NAME).exists():
        raise PipelineError(f"{args.posters / INDEX_NAME} not found: run step 02 (02_download_posters.py) first")
    merged = merge_posters(args.metadata, args.posters)
    write_csv(merged, args.out)
    print(f"wrote {args.out}: {len(merged)} poster rows of {merged['anime_id'].nunique()} anime, "
          f"{merged['score'].notna().sum()} with a score, {(~merged['has_metadata']).sum()} without metadata")


if __name__ == "__main__":
    cli.run(main)
