"""Search the catalogue by name and genre, or show one anime's details.

    python Recommendation/search.py --name bebop
    python Recommendation/search.py --genre Action --genre Sci-Fi -k 20
    python Recommendation/search.py --show "Cowboy Bebop"

--name is a case-insensitive substring of Name, English name or Other name; every --genre must be present.
--show prints every known field, the derived franchise key and the other entries of that franchise.
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(k=20)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--name", type=cli.non_empty, help="part of a title")
    parser.add_argument("--genre", type=cli.non_empty, action="append", default=[],
                        help="a genre the anime must have (repeatable)")
    parser.add_argument("--show", type=cli.non_empty, metavar="TITLE", help="show the details of one anime")
    parser.add_argument("-k", type=cli.positive_int, default=SETTINGS["k"], help="how many results to show")
    parser.add_argument("-n", dest="k", type=cli.positive_int, action=cli.deprecated("-n", "-k"),
                        help="deprecated spelling of -k")
    parser.add_argument("--csv", type=Path, help="anime table in the Kaggle 2023 layout (default: the catalogue "
                                                 "saved with the index by 01_build_index.py)")
    parser.add_argument("--index-dir", type=Path, help="folder of the index (default: data/recommendation)")
    args = cli.parse(parser, argv)
    if not (args.name or args.genre or args.show):
        parser.error("give --name, --genre or --show")

    import pandas as pd

    from animeml.recommendation import load_recommender

    rec = load_recommender(args.csv, args.index_dir or paths.recommendation_dir())
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        if args.show:
            row, _ = rec.match_title(args.show)
            print(rec.details(row).to_string())
            return
        found = rec.search(args.name, args.genre, args.k)
        print(found.to_string(index=False) if len(found) else "nothing found")


if __name__ == "__main__":
    cli.run(main)
