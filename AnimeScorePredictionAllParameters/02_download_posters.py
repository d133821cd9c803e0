"""Step 02: put one poster per anime (or several, from a local folder) under data/posters/ with an index CSV.

    python AnimeScorePredictionAllParameters/02_download_posters.py --csv data/raw/anime.csv --workers 8
    python AnimeScorePredictionAllParameters/02_download_posters.py --from-dir ../shared/data/posters

posters.csv in --out-dir lists what is on disk, also after Ctrl-C; failures.csv gives one reason per poster that
could not be had (bad URL, http error, redirect loop, not an image, too large, too many pixels, a file name that
leads outside --out-dir). A rerun fetches only what is missing.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(workers=8, timeout=5.0, max_bytes=10 * 1024 * 1024, max_pixels=40_000_000, max_wait=60.0)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--csv", type=Path, help="anime table with an 'Image URL' column (download mode)")
    parser.add_argument("--from-dir", type=Path, help="a local posters folder with its posters.csv (offline)")
    cli.add_out_dir(parser, "folder for the posters, posters.csv and failures.csv (default: %(default)s)",
                    default=paths.posters_dir())
    parser.add_argument("--workers", type=cli.positive_int, default=SETTINGS["workers"],
                        help="downloads at a time")
    parser.add_argument("--timeout", type=cli.positive_float, default=SETTINGS["timeout"],
                        help="seconds without an answer before a retry; Ctrl-C waits at most this long")
    parser.add_argument("--max-bytes", type=cli.positive_int, default=SETTINGS["max_bytes"],
                        help="largest poster file kept, in bytes")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=SETTINGS["max_pixels"],
                        help="largest poster kept, in pixels (checked from the header before decoding)")
    parser.add_argument("--max-wait", type=cli.positive_float, default=SETTINGS["max_wait"],
                        help="longest wait in seconds when a server asks to retry later (Retry-After)")
    parser.add_argument("--failures", type=Path, help="CSV of posters not had, with reasons "
                                                      "(default: OUT_DIR/failures.csv)")
    args = cli.parse(parser, argv)
    if bool(args.csv) == bool(args.from_dir):
        raise PipelineError("give exactly one of --csv CSV or --from-dir DIR")
    args.out_dir = cli.out_dir(args)
    failures = args.failures or args.out_dir / "failures.csv"
    if failures.is_dir():
        raise PipelineError(f"--failures {failures} is a folder; give the CSV file to write")

    from animeml.core.http import make_session
    from animeml.core.posters import copy_posters, download_posters
    from animeml.core.table import read_kaggle_csv

    if args.from_dir:
        done, skipped, failed = copy_posters(args.from_dir, args.out_dir, failures, args.max_bytes, args.max_pixels)
        print(f"copied {done}, skipped {skipped}, failed {failed} into {args.out_dir}"
              + (f" (reasons in {failures})" if failed else ""))
        return
    table = read_kaggle_csv(args.csv, required=["anime_id", "Image URL"])
    session = make_session(pool_size=args.workers, max_wait=args.max_wait)
    done, skipped, failed = download_posters(table, args.out_dir, failures, args.workers, args.timeout,
                                             args.max_bytes, args.max_pixels, session)
    print(f"downloaded {done}, skipped {skipped}, failed {failed}" + (f" (reasons in {failures})" if failed else ""))


if __name__ == "__main__":
    cli.run(main)
