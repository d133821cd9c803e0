"""Step 02: put one poster per anime (or several, from a local folder) under data/posters/ with an index CSV.

    python AnimeScorePredictionAllParameters/02_download_posters.py --csv data/raw/anime.csv --workers 8
    python AnimeScorePredictionAllParameters/02_download_posters.py --from-dir ../shared/data/posters
"""
import argparse
from pathlib import Path

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.table import read_kaggle_csv
from animeml.core.posters import MAX_BYTES, copy_posters, download_posters


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, help="anime table with an 'Image URL' column (download mode)")
    parser.add_argument("--from-dir", type=Path, help="a local posters folder with its posters.csv (offline)")
    parser.add_argument("--out", type=Path, default=paths.posters_dir())
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request before a retry")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest poster kept")
    parser.add_argument("--failures", type=Path, help="CSV of failed downloads (default: OUT/failures.csv)")
    args = parser.parse_args()
    if bool(args.csv) == bool(args.from_dir):
        raise PipelineError("give exactly one of --csv CSV or --from-dir DIR")

    if args.from_dir:
        done, skipped, failed = copy_posters(args.from_dir, args.out)
        print(f"copied {done}, skipped {skipped}, failed {failed} (undecodable or missing) into {args.out}")
        return
    failures = args.failures or args.out / "failures.csv"
    done, skipped, failed = download_posters(read_kaggle_csv(args.csv), args.out, failures, args.workers,
                                             args.timeout, args.max_bytes)
    print(f"downloaded {done}, skipped {skipped}, failed {failed}" + (f" (reasons in {failures})" if failed else ""))


if __name__ == "__main__":
    run(main)
