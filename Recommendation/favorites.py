"""Keep a favourites list in SQLite: add, remove, list (recommend for it with recommend.py --favorites).

    python Recommendation/favorites.py add "Cowboy Bebop"
    python Recommendation/favorites.py remove "Cowboy Bebop"
    python Recommendation/favorites.py list

Titles are matched like recommend.py --title. The list lives in data/recommendation/favorites.sqlite (--db); a file
there that is not a favourites database is reported and never changed.
"""
from pathlib import Path

from animeml.core import cli, paths


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("action", choices=["add", "remove", "list"], help="what to do with the list")
    parser.add_argument("title", nargs="?", type=cli.non_empty, help="the anime to add or remove")
    parser.add_argument("--db", type=Path, help="favourites file (default: data/recommendation/favorites.sqlite)")
    parser.add_argument("--csv", type=Path, help="anime table in the Kaggle 2023 layout (default: the catalogue "
                                                 "saved with the index by 01_build_index.py)")
    parser.add_argument("--index-dir", type=Path, help="folder of the index (default: data/recommendation)")
    args = cli.parse(parser, argv)
    if args.action != "list" and not args.title:
        parser.error(f"{args.action} needs a TITLE")
    if args.action == "list" and args.title:
        parser.error("list takes no TITLE")

    from animeml.recommendation import Favorites, load_recommender

    db = args.db or paths.recommendation_dir() / "favorites.sqlite"
    if args.action == "list":
        if not db.exists():
            print(f"no favourites in {db}")
            return
        listed = Favorites(db, readonly=True).list()
        print(listed.to_string(index=False) if len(listed) else f"no favourites in {db}")
        return
    favorites = Favorites(db)  # a broken file is reported before the catalogue loads
    rec = load_recommender(args.csv, args.index_dir or paths.recommendation_dir())
    row, _ = rec.match_title(args.title)
    anime_id, name = int(rec.columns["anime_id"][row]), rec.name(row)
    done = favorites.add(anime_id, name) if args.action == "add" else favorites.remove(anime_id)
    favorites.close()
    if done:
        print(f"{args.action.rstrip('e')}ed {name} (anime_id {anime_id}) in {db}")
    else:
        print(f"{name} was {'already' if args.action == 'add' else 'not'} in {db}")


if __name__ == "__main__":
    cli.run(main)
