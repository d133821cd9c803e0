"""Recommend anime similar to one title, or to the whole favourites list, from metadata and synopsis embeddings.

    python Recommendation/recommend.py --title "Cowboy Bebop" -k 10
    python Recommendation/recommend.py --favorites --exclude-franchise

The title is matched against Name, English name and Other name (exact, else a close typo; otherwise the error
lists "did you mean" suggestions). With --favorites each anime is scored against every favourite and keeps its
best score (the table names that favourite); no favourite is ever recommended. --exclude-franchise also leaves
out the other seasons, movies and OVAs of the query's (or a favourite's) franchise. Needs
Recommendation/01_build_index.py to have run.
"""
import argparse
from pathlib import Path

import pandas as pd

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.cli import run
from animeml.core.table import read_anime_table
from animeml.recommendation import ALPHA, Favorites, Recommender


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--title", help="the anime to find similar ones for")
    query.add_argument("--favorites", action="store_true", help="recommend for the whole favourites list")
    parser.add_argument("-k", type=int, default=10, help="how many to show")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="weight of metadata (1 - alpha: synopsis)")
    parser.add_argument("--exclude-franchise", action="store_true", help="leave out the query's own franchise")
    parser.add_argument("--db", type=Path, default=paths.recommendation_dir() / "favorites.sqlite")
    parser.add_argument("--csv", type=Path, default=paths.raw_csv())
    parser.add_argument("--index-dir", type=Path, default=paths.recommendation_dir())
    args = parser.parse_args()
    if not 0.0 <= args.alpha <= 1.0:
        raise PipelineError("--alpha must be between 0 and 1")

    rec = Recommender.load(read_anime_table(args.csv), args.index_dir)
    if args.title:
        row, match = rec.match_title(args.title)
        rows = [row]
        print(f"{rec.table.at[row, 'name']} (anime_id {rec.table.at[row, 'anime_id']}"
              f"{'' if match == 100 else f', fuzzy match {match:.0f}'})")
    else:
        favorites = Favorites(args.db).list()
        rows = rec.row_of.reindex(favorites["anime_id"]).dropna().astype(int).tolist()
        if not rows:
            raise PipelineError(f"no favourites in {args.db}; add some with Recommendation/favorites.py add TITLE")
        print(f"favourites ({len(rows)}): {'; '.join(rec.table.loc[rows, 'name'])}")

    result = rec.recommend(rows, args.alpha)
    franchises = set(rec.franchise[rows]) if args.exclude_franchise else ()
    top = rec.top(result.scores, args.k, exclude_rows=rows, exclude_franchises=franchises)
    shown = rec.table_of(top, result)
    if args.favorites:
        shown["because_of"] = rec.table.loc[result.closest[top], "name"].to_numpy()
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(shown.to_string(index=False))


if __name__ == "__main__":
    run(main)
