"""The anime table: the Kaggle "Anime Dataset 2023" layout read and cleaned, posters joined to it."""
import re
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from animeml.core.io import PipelineError, read_csv
from animeml.core.paths import ROOT

KAGGLE_COLUMNS = [
    "anime_id", "Name", "English name", "Other name", "Score", "Genres", "Synopsis", "Type", "Episodes",
    "Aired", "Premiered", "Status", "Producers", "Licensors", "Studios", "Source", "Duration", "Rating",
    "Rank", "Popularity", "Favorites", "Scored By", "Members", "Image URL",
]
REQUIRED_COLUMNS = ["anime_id", "Name", "Score", "Genres"]
COUNT_COLUMNS = ["Episodes", "Rank", "Popularity", "Favorites", "Scored By", "Members"]
MISSING = ["UNKNOWN", "Unknown", ""]
# what APIs and spreadsheets put in a number's place when they have none
PLACEHOLDERS = {"", "unknown", "n/a", "na", "nan", "none", "null", "-", "?"}
SCORE_RANGE = (1.0, 10.0)
INT64_MAX = 2**63 - 1
NO_SYNOPSIS = "No description available for this anime."
INDEX_NAME = "posters.csv"
INDEX_COLUMNS = ["file", "anime_id", "source"]

# Known only after an anime has aired: a model that claims to predict before release must leave them out.
POST_RELEASE_COLUMNS = ["post_members", "post_popularity", "post_rank", "post_favorites", "post_scored_by"]


def read_csv_file(path, what, columns=()):
    """A CSV as strings, `UNKNOWN` and empty as missing; a missing, empty, binary or folder path, or one without
    one of `columns`, is a PipelineError (animeml.core.io.read_csv)."""
    return read_csv(path, what, columns, na_values=MISSING, keep_default_na=False, dtype=str)


def whole_number(value):
    """`value` as a Python int if it is a whole number ('5', 5, 5.0, '5.0'), else None ('5.9', '1e3', 'x')."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if np.isfinite(value) and value == int(value) else None
    if isinstance(value, str):
        found = re.fullmatch(r"\s*\+?(\d+)(\.0*)?\s*", value)
        return int(found.group(1)) if found else None
    return None


def check_ids(values, where, empty=None):
    """`anime_id` values as int64: each a positive whole number that fits, else a PipelineError naming the row; an
    empty value is an error too, or becomes `empty` when that is given."""
    ids = []
    for row, value in enumerate(values, 1):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            if empty is not None:
                ids.append(empty)
                continue
            raise PipelineError(f"{where}: anime_id is empty (data row {row})")
        number = whole_number(value)
        if number is None or not 1 <= number <= INT64_MAX:
            raise PipelineError(f"{where}: anime_id {value!r} (data row {row}) is not a positive whole number "
                                f"that fits in 64 bits")
        ids.append(number)
    return np.array(ids, dtype="int64")


def as_numbers(series):
    """A column as floats, placeholders ('N/A', 'UNKNOWN', null) as NaN; the first value that is not a number is
    returned as (row, value) so the caller can name it."""
    def plain(value):
        if isinstance(value, str):
            value = value.strip().replace(",", "")
            return np.nan if value.lower() in PLACEHOLDERS else value
        return value
    values = series.map(plain)
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    bad = np.flatnonzero((numbers.isna() & values.notna()).to_numpy())
    return numbers, (int(bad[0]), series.iloc[bad[0]]) if len(bad) else None


def first_row(mask):
    return int(np.flatnonzero(np.asarray(mask))[0])


def check_kaggle(df, where, drop_duplicates=False):
    """The one check of an anime table in the Kaggle 2023 layout; every later step trusts what it returns.

    `anime_id`: positive whole numbers that fit in int64, each once (a repeated id is an error naming it, or,
    with `drop_duplicates`, only its first row is kept, with a warning). `Score`: 1-10 or missing (0 and
    placeholders read as missing). Counts (episodes, members, ...): whole numbers >= 0 or missing. A value that
    breaks this is a PipelineError naming it and its data row."""
    if df.empty:
        raise PipelineError(f"{where} has no rows")
    df = df.copy()
    df["anime_id"] = check_ids(df["anime_id"], where)
    for col in ["Score"] + COUNT_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
            continue
        numbers, bad = as_numbers(df[col])
        if bad:
            raise PipelineError(f"{where}: column {col!r} has a value that is not a number: {bad[1]!r} "
                                f"(data row {bad[0] + 1})")
        if col == "Score":
            numbers = numbers.mask(numbers == 0)  # MyAnimeList's "not scored yet"
            outside = numbers.notna() & ~numbers.between(*SCORE_RANGE)
            what = "a score outside 1-10"
        else:
            outside = numbers.notna() & ((numbers < 0) | (numbers != np.floor(numbers)) | (numbers > 2**53))
            what = "a value that is not a whole number >= 0"
        if outside.any():
            row = first_row(outside)
            raise PipelineError(f"{where}: column {col!r} has {what}: {df[col].iloc[row]!r} (data row {row + 1})")
        df[col] = numbers
    repeated = df["anime_id"].duplicated(keep=False)
    if repeated.any():
        ids = sorted(set(df.loc[repeated, "anime_id"]))
        named = ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        if not drop_duplicates:
            raise PipelineError(f"{where}: anime_id repeated: {named} (step 01's --drop-duplicates keeps the "
                                f"first row of each)")
        extra = int(df["anime_id"].duplicated().sum())
        print(f"warning: {where}: dropped {extra} later row(s) of repeated anime_id {named}", file=sys.stderr)
        df = df[~df["anime_id"].duplicated()]
    for col in KAGGLE_COLUMNS:
        if col not in df.columns:
            df[col] = None  # missing text, so that `.str` still works on it
    return df[KAGGLE_COLUMNS].reset_index(drop=True)


def read_kaggle_csv(path, required=REQUIRED_COLUMNS, drop_duplicates=False):
    """Read and check (`check_kaggle`) a table in the Kaggle 2023 layout, `UNKNOWN` as missing; a malformed file
    or one without a `required` column raises PipelineError (new anime have no Score yet: pass the columns a
    caller really needs)."""
    df = read_csv_file(path, "metadata file", required)
    return check_kaggle(df, str(path), drop_duplicates)


def read_poster_index(path):
    """A posters index (file, anime_id[, source]) checked: a missing or empty file, a folder, a missing column,
    an empty file name, a bad id or a file listed twice is a PipelineError naming it."""
    path = Path(path)
    index = read_csv_file(path, "posters index", ("file", "anime_id"))
    if index["file"].isna().any():
        raise PipelineError(f"{path}: empty file name (data row {first_row(index['file'].isna()) + 1})")
    index["anime_id"] = check_ids(index["anime_id"], str(path))
    twice = index["file"].duplicated()
    if twice.any():
        raise PipelineError(f"{path}: file {index['file'][twice].iloc[0]!r} is listed twice")
    index["source"] = index["source"].fillna("local") if "source" in index.columns else "local"
    return index[INDEX_COLUMNS]


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


def leaves_folder(name):
    """True if a file name from data would point outside its folder: absolute, or climbing with '..'."""
    parts = PurePosixPath(str(name).replace("\\", "/"))
    return parts.is_absolute() or ".." in parts.parts or bool(re.match(r"^[A-Za-z]:", str(name)))


def merge_posters(raw_csv, posters_dir):
    """Every poster in `posters_dir/posters.csv` with the metadata of its anime (empty where the table has none:
    such a row is kept and flagged `has_metadata = False`, since nothing downstream should silently lose it)."""
    posters_dir = Path(posters_dir)
    anime = read_anime_table(raw_csv)
    index = read_poster_index(posters_dir / INDEX_NAME)
    outside = [leaves_folder(name) for name in index["file"]]
    if any(outside):
        raise PipelineError(f"{posters_dir / INDEX_NAME}: file {index['file'][outside].iloc[0]!r} is not inside "
                            f"{posters_dir}")
    posters = pd.DataFrame({
        "anime_id": index["anime_id"],
        "image_path": [relative_to_root(posters_dir / f) for f in index["file"]],
        "image_source": index["source"],
    })
    merged = posters.merge(anime, on="anime_id", how="left", indicator=True)
    merged["has_metadata"] = merged.pop("_merge") == "both"
    rest = [c for c in merged.columns if c not in LEADING_COLUMNS and c not in POST_RELEASE_COLUMNS]
    return merged[LEADING_COLUMNS + rest + POST_RELEASE_COLUMNS]


def read_merged(path):
    """Read `ani_data_merged.csv` back with absolute image paths and typed columns."""
    df = read_csv(path, "merged table", ("anime_id", "image_path", "episodes", *POST_RELEASE_COLUMNS),
                  dtype={"synopsis": str, "genres": str})
    df["image_path"] = [str(ROOT / p) for p in df["image_path"]]
    for col in ["episodes"] + POST_RELEASE_COLUMNS:
        df[col] = df[col].astype("Int64")
    return df
