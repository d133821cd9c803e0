"""The Jikan v4 API (an unofficial MyAnimeList API) as rows of the Kaggle 2023 layout."""
import json
import time

import pandas as pd
from tqdm import tqdm

from animeml.core.io import PipelineError, write_json
from animeml.core.http import make_session
from animeml.core.table import KAGGLE_COLUMNS


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
