"""Step 03: one row per poster image, joined with the cleaned anime table."""
import pandas as pd

from animeml.metadata import POST_RELEASE_COLUMNS, read_anime_table
from animeml.paths import ROOT
from animeml.posters import INDEX_NAME

LEADING_COLUMNS = ["anime_id", "image_path", "image_source", "name", "score", "genres", "type", "episodes",
                   "year", "synopsis"]


def relative_to_root(path):
    """Paths under the project are stored relative to it, so the CSV survives a moved checkout."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def merge_posters(raw_csv, posters_dir):
    """Every poster in `posters_dir/posters.csv` with the metadata of its anime (empty where the table has none:
    such a row is kept and flagged `has_metadata = False`, since nothing downstream should silently lose it)."""
    anime = read_anime_table(raw_csv)
    index = pd.read_csv(posters_dir / INDEX_NAME)
    posters = pd.DataFrame({
        "anime_id": index["anime_id"].astype("int64"),
        "image_path": [relative_to_root(posters_dir / f) for f in index["file"]],
        "image_source": index["source"],
    })
    merged = posters.merge(anime, on="anime_id", how="left", indicator=True)
    merged["has_metadata"] = merged.pop("_merge") == "both"
    rest = [c for c in merged.columns if c not in LEADING_COLUMNS and c not in POST_RELEASE_COLUMNS]
    return merged[LEADING_COLUMNS + rest + POST_RELEASE_COLUMNS]


def read_merged(path):
    """Read `ani_data_merged.csv` back with absolute image paths and typed columns."""
    df = pd.read_csv(path, dtype={"synopsis": str, "genres": str})
    df["image_path"] = [str(ROOT / p) for p in df["image_path"]]
    for col in ["episodes"] + POST_RELEASE_COLUMNS:
        df[col] = df[col].astype("Int64")
    return df
