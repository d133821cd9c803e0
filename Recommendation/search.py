"""Search the catalogue by name and genre, or show one anime's details.

    python Recommendation/search.py --name bebop
    python Recommendation/search.py --genre Action --genre Sci-Fi -n 20
    python Recommendation/search.py --show "Cowboy Bebop"

--name is a case-insensitive substring of Name, English name or Other name; every --genre must be present.
--show prints every known field, the derived franchise key and the other entries of that franchise.
"""
import argparse
from pathlib import Path

import pandas as pd

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.table import read_anime_table
from animeml.recommendation import Recommender


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="part of a title")
    parser.add_argument("--genre", action="append", default=[], help="a genre the anime must have (repeatable)")
    parser.add_argument("--show", metavar="TITLE", help="show the details of one anime")
    parser.add_argument("-n", type=int, default=20, help="how many results to show")
    parser.add_argument("--csv", type=Path, default=paths.raw_csv())
    parser.add_argument("--index-dir", type=Path, default=paths.recommendation_dir())
    args = parser.parse_args()
    if not (args.name or args.genre or args.show):
        raise PipelineError("give --name, --genre or --show")

    rec = Recommender.load(read_anime_table(args.csv), args.index_dir)
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        if args.show:
            row, _ = rec.match_title(args.show)
            print(rec.details(row).to_string())
            return
        found = rec.search(args.name, args.genre, args.n)
        print(found.to_string(index=False) if len(found) else "nothing found")


if __name__ == "__main__":
    run(main)
