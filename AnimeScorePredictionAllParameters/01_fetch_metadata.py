"""Step 01: write the canonical anime table, data/raw/anime.csv, in the Kaggle "Anime Dataset 2023" layout.

    python AnimeScorePredictionAllParameters/01_fetch_metadata.py --csv ../shared/data/mal/anime-dataset-2023.csv
    python AnimeScorePredictionAllParameters/01_fetch_metadata.py --source jikan --limit 500
"""
import argparse
from pathlib import Path

from animeml.core import paths
from animeml.core.io import PipelineError, write_csv
from animeml.core.cli import run
from animeml.core.jikan import fetch_jikan
from animeml.core.table import read_kaggle_csv

JIKAN_API = "https://api.jikan.moe/v4"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, help="a file in the Kaggle 2023 layout (offline)")
    parser.add_argument("--source", choices=["jikan"], help="fetch from the Jikan v4 REST API instead")
    parser.add_argument("--limit", type=int, help="fetch at most N anime (Jikan only)")
    parser.add_argument("--api-base", default=JIKAN_API, help="Jikan base URL (tests point it at a local server)")
    parser.add_argument("--rate", type=float, default=3.0, help="Jikan requests per second at most")
    parser.add_argument("--out", type=Path, default=paths.raw_csv())
    args = parser.parse_args()
    if bool(args.csv) == bool(args.source):
        raise PipelineError("give exactly one of --csv PATH or --source jikan")

    if args.csv:
        table = read_kaggle_csv(args.csv)
    else:
        table = fetch_jikan(args.api_base, args.out.parent / "jikan_pages", args.limit, args.rate)
    write_csv(table, args.out)
    print(f"wrote {args.out}: {len(table)} anime, {table['Score'].notna().sum()} with a score")


if __name__ == "__main__":
    run(main)
