"""The anime table: the Kaggle "Anime Dataset 2023" layout, read from a file or fetched from Jikan v4, and cleaned."""
import json
import re
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from animeml.cli import PipelineError, write_json
from animeml.http import make_session

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


# --- Jikan v4 -------------------------------------------------------------------------------------------

def _names(items):
    return ", ".join(i["name"] for i in items or []) or None


def jikan_to_kaggle(item):
    """One Jikan v4 anime object as one row of the Kaggle 2023 layout."""
    season, year = item.get("season"), item.get("year")
    genres = (item.get("genres") or []) + (item.get("explicit_genres") or [])
    image = ((item.get("images") or {}).get("jpg") or {})
    return {
        "anime_id": item["mal_id"],
        "Name": item.get("title"),
        "English name": item.get("title_english"),
        "Other name": item.get("title_japanese"),
        "Score": item.get("score"),
        "Genres": _names(genres),
        "Synopsis": item.get("synopsis"),
        "Type": item.get("type"),
        "Episodes": item.get("episodes"),
        "Aired": (item.get("aired") or {}).get("string"),
        "Premiered": f"{season} {year}" if season and year else None,
        "Status": item.get("status"),
        "Producers": _names(item.get("producers")),
        "Licensors": _names(item.get("licensors")),
        "Studios": _names(item.get("studios")),
        "Source": item.get("source"),
        "Duration": item.get("duration"),
        "Rating": item.get("rating"),
        "Rank": item.get("rank"),
        "Popularity": item.get("popularity"),
        "Favorites": item.get("favorites"),
        "Scored By": item.get("scored_by"),
        "Members": item.get("members"),
        "Image URL": image.get("large_image_url") or image.get("image_url"),
    }


def fetch_jikan(api_base, cache_dir, limit=None, requests_per_second=3.0, session=None):
    """Fetch `/anime` page by page, each page cached as JSON so an interrupted run resumes where it stopped."""
    session = session or make_session()
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows, page, last_request = [], 1, 0.0
    bar = tqdm(total=limit, desc="jikan", unit="anime")
    while True:
        cached = cache_dir / f"page_{page:05d}.json"
        if cached.exists():
            body = json.loads(cached.read_text())
        else:
            time.sleep(max(0.0, last_request + 1.0 / requests_per_second - time.monotonic()))
            last_request = time.monotonic()
            response = session.get(f"{api_base.rstrip('/')}/anime", params={"page": page}, timeout=30)
            if response.status_code != 200:
                raise PipelineError(f"Jikan answered {response.status_code} for page {page}")
            body = response.json()
            write_json(body, cached)
        new = [jikan_to_kaggle(item) for item in body.get("data", [])]
        rows.extend(new)
        bar.update(len(new))
        if (limit and len(rows) >= limit) or not body.get("pagination", {}).get("has_next_page"):
            break
        page += 1
    bar.close()
    df = pd.DataFrame(rows[:limit] if limit else rows, columns=KAGGLE_COLUMNS)
    return df.drop_duplicates("anime_id")


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
