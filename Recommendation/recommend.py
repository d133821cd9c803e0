"""Recommend anime similar to one title, or to the whole favourites list, from metadata and synopsis embeddings.

    python Recommendation/recommend.py --title "Cowboy Bebop" -k 10
    python Recommendation/recommend.py --favorites --exclude-franchise

The title is matched against Name, English name and Other name (exact, else a close typo; otherwise the error
lists "did you mean" suggestions). With --favorites each anime is scored against every favourite and keeps its
best score (the table names that favourite); no favourite is ever recommended. --exclude-franchise also leaves
out the other seasons, movies and OVAs of the query's (or a favourite's) franchise. Needs
Recommendation/01_build_index.py to have run: it reads the index and the catalogue saved beside it (or --csv).
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(k=10, alpha=0.5)  # alpha: ALPHA of animeml/recommendation.py


def main(argv=None):
    parser = cli.parser(__doc__)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--title", type=cli.non_empty, help="the anime to find similar ones for")
    query.add_argument("--favorites", action="store_true", help="recommend for the whole favourites list")
    parser.add_argument("-k", type=cli.positive_int, default=SETTINGS["k"], help="how many anime to show")
    parser.add_argument("--alpha", type=cli.probability, default=SETTINGS["alpha"],
                        help="weight of metadata, in [0, 1] (1 - alpha: synopsis)")
    parser.add_argument("--exclude-franchise", action="store_true", help="leave out the query's own franchise")
    parser.add_argument("--db", type=Path, help="favourites file (default: data/recommendation/favorites.sqlite)")
    parser.add_argument("--csv", type=Path, help="anime table in the Kaggle 2023 layout (default: the catalogue "
                                                 "saved with the index by 01_build_index.py)")
    parser.add_argument("--index-dir", type=Path, help="folder of the index (default: data/recommendation)")
    args = cli.parse(parser, argv)

    from animeml.core.io import PipelineError
    from animeml.recommendation import Favorites, load_recommender

    index_dir = args.index_dir or paths.recommendation_dir()
    if args.favorites:  # read the favourites first: a broken file should not wait for the index
        db = args.db or paths.recommendation_dir() / "favorites.sqlite"
        store = Favorites(db, readonly=True)
        favorites = store.list()
        store.close()
    rec = load_recommender(args.csv, index_dir)
    if args.title:
        row, match = rec.match_title(args.title)
        rows = [row]
        print(f"{rec.name(row)} (anime_id {rec.columns['anime_id'][row]}"
              f"{'' if match == 100 else f', fuzzy match {match:.0f}'})")
    else:
        rows = [rec.row_of[i] for i in favorites["anime_id"] if i in rec.row_of]
        if not rows:
            raise PipelineError(f"no favourites in {db} are in the catalogue; add some with "
                                f"Recommendation/favorites.py add TITLE")
        print(f"favourites ({len(rows)}): {'; '.join(rec.name(r) for r in rows)}")

    result = rec.recommend(rows, args.alpha)
    franchises = set(rec.franchise[rows]) if args.exclude_franchise else ()
    top = rec.top(result.scores, args.k, exclude_rows=rows, exclude_franchises=franchises)
    print(cli.text_table(rec.table_of(top, result, because_of=args.favorites)))


if __name__ == "__main__":
    cli.run(main)
