"""Keep a favourites list in SQLite: add, remove, list (recommend for it with recommend.py --favorites).

    python Recommendation/favorites.py add "Cowboy Bebop"
    python Recommendation/favorites.py remove "Cowboy Bebop"
    python Recommendation/favorites.py list

Titles are matched like recommend.py --title. The list lives in data/recommendation/favorites.sqlite (--db).
"""
import argparse
from pathlib import Path

from animeml.core import paths
from animeml.core.cli import run
from animeml.core.table import read_anime_table
from animeml.recommendation import Favorites, Recommender


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["add", "remove", "list"])
    parser.add_argument("title", nargs="?", help="the anime to add or remove")
    parser.add_argument("--db", type=Path, default=paths.recommendation_dir() / "favorites.sqlite")
    parser.add_argument("--csv", type=Path, default=paths.raw_csv())
    parser.add_argument("--index-dir", type=Path, default=paths.recommendation_dir())
    args = parser.parse_args()
    if args.action != "list" and not args.title:
        parser.error(f"{args.action} needs a TITLE")

    favorites = Favorites(args.db)
    if args.action == "list":
        listed = favorites.list()
        print(listed.to_string(index=False) if len(listed) else f"no favourites in {args.db}")
        return
    rec = Recommender.load(read_anime_table(args.csv), args.index_dir)
    row, _ = rec.match_title(args.title)
    anime_id, name = int(rec.table.at[row, "anime_id"]), rec.table.at[row, "name"]
    if args.action == "add":
        done = favorites.add(anime_id, name)
    else:
        done = favorites.remove(anime_id)
    if done:
        print(f"{args.action.rstrip('e')}ed {name} (anime_id {anime_id})")
    else:
        print(f"{name} was {'already' if args.action == 'add' else 'not'} in the list")


if __name__ == "__main__":
    run(main)
