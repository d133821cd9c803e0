"""The anime table: the Kaggle "Anime Dataset 2023" layout read and cleaned, posters joined to it, franchise keys."""
import re
import unicodedata

import numpy as np
import pandas as pd

from animeml.core.io import PipelineError
from animeml.core.paths import ROOT
from animeml.core.posters import INDEX_NAME

KAGGLE_COLUMNS = [
    "anime_id", "Name", "English name", "Other name", "Score", "Genres", "Synopsis", "Type", "Episodes",
    "Aired", "Premiered", "Status", "Producers", "Licensors", "Studios", "Source", "Duration", "Rating",
    "Rank", "Popularity", "Favorites", "Scored By", "Members", "Image URL",
]
REQUIRED_COLUMNS = ["anime_id", "Name", "Score", "Genres"]
NUMERIC_COLUMNS = ["anime_id", "Score", "Episodes", "Rank", "Popularity", "Favorites", "Scored By", "Members"]
MISSING = ["UNKNOWN", "Unknown", ""]
NO_SYNOPSIS = "No description available for this anime."

# Known only after an anime has aired: a model that claims to predict before release must leave them out.
POST_RELEASE_COLUMNS = ["post_members", "post_popularity", "post_rank", "post_favorites", "post_scored_by"]


def read_kaggle_csv(path, required=REQUIRED_COLUMNS):
    """Read a table in the Kaggle 2023 layout, `UNKNOWN` as missing; a malformed file or one without a `required`
    column raises PipelineError (new anime have no Score yet: pass the columns a caller really needs)."""
    try:
        df = pd.read_csv(path, na_values=MISSING, keep_default_na=False, dtype=str)
    except FileNotFoundError:
        raise PipelineError(f"metadata file not found: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PipelineError(f"cannot parse {path}: {err}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: required column(s) missing: {', '.join(missing)}")
    for col in NUMERIC_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
            continue
        values = df[col].str.replace(",", "", regex=False)
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"{path}: column {col!r} has a value that is not a number: "
                                f"{df[col].iloc[row]!r} (data row {row + 1})")
        df[col] = numbers
    if df["anime_id"].isna().any():
        raise PipelineError(f"{path}: column 'anime_id' has empty values")
    df["anime_id"] = df["anime_id"].astype("int64")
    for col in KAGGLE_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    return df[KAGGLE_COLUMNS]


# --- the cleaned table -----------------------------------------------------------------------------------

RENAMES = {
    "Name": "name", "English name": "english_name", "Other name": "other_name", "Score": "score",
    "Genres": "genres", "Synopsis": "synopsis", "Type": "type", "Episodes": "episodes", "Aired": "aired",
    "Premiered": "premiered", "Status": "status", "Producers": "producers", "Licensors": "licensors",
    "Studios": "studios", "Source": "source", "Rating": "rating", "Image URL": "image_url",
    "Members": "post_members", "Popularity": "post_popularity", "Rank": "post_rank",
    "Favorites": "post_favorites", "Scored By": "post_scored_by",
}


def duration_minutes(text):
    """'1 hr 55 min' -> 115.0, '24 min per ep' -> 24.0, '30 sec' -> 0.5; None when unknown."""
    if not isinstance(text, str):
        return np.nan
    hours = re.search(r"(\d+)\s*hr", text)
    minutes = re.search(r"(\d+)\s*min", text)
    seconds = re.search(r"(\d+)\s*sec", text)
    if not (hours or minutes or seconds):
        return np.nan
    return sum(float(m.group(1)) * f for m, f in ((hours, 60), (minutes, 1), (seconds, 1 / 60)) if m)


def start_year(premiered, aired):
    """The year an anime started, from 'spring 1998' or else the first year in 'Apr 3, 1998 to ...'."""
    for text in (premiered, aired):
        if isinstance(text, str):
            found = re.search(r"(19|20)\d\d", text)
            if found:
                return float(found.group(0))
    return np.nan


def clean_table(kaggle):
    """The Kaggle layout as typed snake_case columns; post-release fields carry the `post_` prefix."""
    df = kaggle.rename(columns=RENAMES)
    df["synopsis"] = df["synopsis"].where(df["synopsis"].str.strip() != NO_SYNOPSIS)
    df["duration_min"] = df.pop("Duration").map(duration_minutes)
    df["year"] = [start_year(p, a) for p, a in zip(df["premiered"], df["aired"])]
    df["episodes"] = df["episodes"].astype("Int64")
    for col in ["post_rank", "post_popularity", "post_favorites", "post_scored_by", "post_members"]:
        df[col] = df[col].astype("Int64")
    return df


def split_list(text):
    """'Action, Sci-Fi' -> ['Action', 'Sci-Fi']; missing -> []."""
    if not isinstance(text, str):
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def read_anime_table(path):
    """`data/raw/anime.csv` (or any Kaggle 2023 file) as the cleaned, typed table."""
    return clean_table(read_kaggle_csv(path))


# --- posters joined with the table (step 03) -----------------------------------------------------------

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


# --- franchises ------------------------------------------------------------------------------------------

FRANCHISE_NOISE = re.compile(
    r"\b(\d+|\d+(st|nd|rd|th)|i{1,3}|iv|vi{0,3}|ix|x|season|seasons|part|cour|movie|movies|the movie|film|ova|"
    r"ona|oad|tv|special|specials|recap|recaps|picture drama|omake|gekijouban|final|second|third|"
    r"new|series|edition)\b")


def franchise_key(name):
    """A normalised title stem shared by the seasons, movies and OVAs of one series."""
    text = unicodedata.normalize("NFKC", str(name)).casefold()
    full = re.sub(r"[^\w]+", " ", text).strip()
    for part in (re.split(r":| - ", text)[0], text):
        stem = re.sub(r"\([^)]*\)", " ", part)
        stem = re.sub(r"[^\w]+", " ", stem).replace("_", " ")
        stem = re.sub(r"\s+", " ", FRANCHISE_NOISE.sub(" ", stem)).strip()
        if len(stem) >= 4:
            return stem
    return stem or full
