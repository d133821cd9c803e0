"""Step 03: join posters and metadata into data/ani_data_merged.csv, one row per poster image.

Post-release columns (Members, Popularity, Rank, Favorites, Scored By) carry a `post_` prefix so that models
meant to predict before release can leave them out. Rows without a score are kept: genre models use them.
"""
import argparse
from pathlib import Path

from animeml.core import paths
from animeml.core.io import PipelineError, write_csv
from animeml.core.cli import run
from animeml.core.table import merge_posters
from animeml.core.posters import INDEX_NAME


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", type=Path, default=paths.raw_csv(), help="output of step 01")
    parser.add_argument("--posters", type=Path, default=paths.posters_dir(), help="output of step 02")
    parser.add_argument("--out", type=Path, default=paths.merged_csv())
    args = parser.parse_args()
    if not (args.posters / INDEX_NAME).exists():
        raise PipelineError(f"{args.posters / INDEX_NAME} not found: run step 02 (02_download_posters.py) first")

    merged = merge_posters(args.metadata, args.posters)
    write_csv(merged, args.out)
    print(f"wrote {args.out}: {len(merged)} poster rows of {merged['anime_id'].nunique()} anime, "
          f"{merged['score'].notna().sum()} with a score, {(~merged['has_metadata']).sum()} without metadata")


if __name__ == "__main__":
    run(main)
