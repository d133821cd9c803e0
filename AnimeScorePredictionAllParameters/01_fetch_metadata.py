"""Step 01: write the canonical anime table, data/raw/anime.csv, in the Kaggle "Anime Dataset 2023" layout.

    python AnimeScorePredictionAllParameters/01_fetch_metadata.py --csv ../shared/data/mal/anime-dataset-2023.csv
    python AnimeScorePredictionAllParameters/01_fetch_metadata.py --source jikan --limit 500

The table is checked once here (ids positive whole numbers, each once; scores 1-10 or missing) and every later step
trusts it. Jikan pages are checked before they are cached in jikan_pages/ beside --out (one folder per API base).
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(api_base="https://api.jikan.moe/v4", rate=3.0, per_minute=60, max_wait=60.0)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--csv", type=Path, help="a file in the Kaggle 2023 layout (offline)")
    parser.add_argument("--source", choices=["jikan"], help="fetch from the Jikan v4 REST API instead")
    parser.add_argument("--limit", type=cli.positive_int,
                        help="fetch at most N anime (Jikan only; also at most N pages)")
    parser.add_argument("--api-base", type=cli.non_empty, default=SETTINGS["api_base"],
                        help="Jikan base URL, http(s) (tests point it at a local server)")
    parser.add_argument("--rate", type=cli.positive_float, default=SETTINGS["rate"],
                        help="Jikan requests per second at most (Jikan also allows 60 a minute, which is kept)")
    parser.add_argument("--max-wait", type=cli.positive_float, default=SETTINGS["max_wait"],
                        help="longest wait in seconds when the server asks to retry later (Retry-After)")
    parser.add_argument("--refresh", action="store_true", help="drop the cached Jikan pages of this API base first")
    parser.add_argument("--drop-duplicates", action="store_true",
                        help="keep the first row of a repeated anime_id (with a warning) instead of stopping")
    parser.add_argument("--out", type=Path, default=paths.raw_csv(), help="CSV to write (default: %(default)s)")
    args = cli.parse(parser, argv)
    if bool(args.csv) == bool(args.source):
        raise PipelineError("give exactly one of --csv PATH or --source jikan")
    if args.out.is_dir():
        raise PipelineError(f"--out {args.out} is a folder; give the CSV file to write")

    from animeml.core.io import write_csv
    from animeml.core.jikan import fetch_jikan
    from animeml.core.table import check_kaggle, read_kaggle_csv

    if args.csv:
        table = read_kaggle_csv(args.csv, drop_duplicates=args.drop_duplicates)
    else:
        fetched = fetch_jikan(args.api_base, args.out.parent / "jikan_pages", args.limit, args.rate,
                              SETTINGS["per_minute"], args.max_wait, refresh=args.refresh)
        table = check_kaggle(fetched, f"Jikan at {args.api_base}", args.drop_duplicates)
    write_csv(table, args.out)
    print(f"wrote {args.out}: {len(table)} anime, {table['Score'].notna().sum()} with a score")


if __name__ == "__main__":
    cli.run(main)
