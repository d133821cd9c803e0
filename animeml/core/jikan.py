"""The Jikan v4 API (an unofficial MyAnimeList API): a rate-limited client that checks every answer before it
caches it, and `/anime` as rows of the Kaggle 2023 layout."""
import hashlib
import json
import math
import re
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import requests
from tqdm import tqdm

from animeml.core.http import check_url, failure_reason, make_session, read_body
from animeml.core.io import PipelineError, write_json
from animeml.core.table import INT64_MAX, KAGGLE_COLUMNS, SCORE_RANGE, whole_number

MAX_PAGES = 5000  # Jikan lists about 1,100 pages of 25 anime; a server that never stops is cut here
TIMEOUT = 30.0
MAX_BODY = 20 * 1024 * 1024  # a page of 25 anime is about 100 KB


class JikanError(PipelineError):
    """An answer of the API that cannot be used (an error status, not JSON, content of the wrong shape); `status`
    is the HTTP status when there was one, so a caller can treat a 404 of one item as a row, not a stop."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RateLimiter:
    """At most `per_second` requests a second and `per_minute` in any 60 s (Jikan's documented limits)."""

    def __init__(self, per_second=3.0, per_minute=60, clock=time.monotonic, sleep=time.sleep):
        self.gap, self.per_minute = 1.0 / per_second, per_minute
        self.sent = deque(maxlen=per_minute)
        self.clock, self.sleep = clock, sleep

    def wait(self):
        now = self.clock()
        ready = self.sent[-1] + self.gap if self.sent else now
        if len(self.sent) == self.per_minute:
            ready = max(ready, self.sent[0] + 60.0)
            if ready - now > 2:
                print(f"waiting {ready - now:.0f} s: Jikan allows {self.per_minute} requests a minute",
                      file=sys.stderr)
        if ready > now:
            self.sleep(ready - now)
        self.sent.append(self.clock())


class JikanClient:
    """GET paths of a Jikan-like API as JSON objects: rate-limited, `Retry-After` capped at `max_wait`, every
    answer checked (a JSON object, then `validate(body)`, which raises JikanError) BEFORE it is cached under
    `cache_dir/<hash of api_base>/`, so a bad answer is never reused and two API bases never share pages.
    `refresh` drops this base's cache first."""

    def __init__(self, api_base, cache_dir, requests_per_second=3.0, requests_per_minute=60, max_wait=60.0,
                 session=None, refresh=False):
        self.api_base = str(api_base).rstrip("/")
        try:
            check_url(self.api_base)
        except requests.exceptions.RequestException as err:
            raise PipelineError(f"--api-base: {err}") from None
        self.cache_dir = Path(cache_dir) / hashlib.sha256(self.api_base.encode()).hexdigest()[:16]
        if refresh and self.cache_dir.is_dir():
            shutil.rmtree(self.cache_dir)
        self.session = session or make_session(max_wait=max_wait)
        self.limiter = RateLimiter(requests_per_second, requests_per_minute)

    def cache_path(self, path, params=None):
        key = path.strip("/") + ("?" + urlencode(sorted(params.items())) if params else "")
        slug = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")[:80]
        return self.cache_dir / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.json"

    def get(self, path, params=None, validate=None):
        cached = self.cache_path(path, params)
        if cached.exists():
            try:
                return checked(json.loads(cached.read_text()), validate, cached)
            except (ValueError, JikanError):
                cached.unlink()  # unreadable or of the wrong shape (an older version cached before checking)
        url = f"{self.api_base}/{path.lstrip('/')}"
        self.limiter.wait()
        try:
            with self.session.get(url, params=params, timeout=TIMEOUT, stream=True) as response:
                if response.status_code != 200:
                    hint = " (still rate limited after retries: try later)" if response.status_code == 429 else ""
                    raise JikanError(f"Jikan answered {response.status_code} for {response.url}{hint}",
                                     response.status_code)
                data = read_body(response, MAX_BODY, 4 * TIMEOUT)
        except requests.exceptions.RequestException as err:
            raise JikanError(f"{url}: {failure_reason(err)}") from None
        try:
            body = json.loads(data)
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise JikanError(f"{response.url} did not answer JSON ({kind}; it starts {data[:40]!r})") from None
        checked(body, validate, response.url)
        write_json(body, cached)
        return body


def checked(body, validate, where):
    """`body` if it is a JSON object that `validate` accepts; JikanError naming `where` otherwise."""
    if not isinstance(body, dict):
        raise JikanError(f"{where}: the answer is not a JSON object")
    if validate:
        try:
            validate(body)
        except JikanError as err:
            raise JikanError(f"{where}: {err}") from None
    return body


def anime_page(body):
    """Check a page of `/anime`: `data` a list of objects, each with a positive integer `mal_id`."""
    data = body.get("data")
    if not isinstance(data, list):
        raise JikanError("'data' is not a list")
    for n, item in enumerate(data, 1):
        mal_id = item.get("mal_id") if isinstance(item, dict) else None
        if isinstance(mal_id, bool) or not isinstance(mal_id, int) or not 1 <= mal_id <= INT64_MAX:
            raise JikanError(f"item {n} of 'data' has no positive integer 'mal_id'")
    if not isinstance(body.get("pagination") or {}, dict):
        raise JikanError("'pagination' is not an object")


def _number(value):
    """A finite number, or None for null, placeholders ('N/A') and anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _score(value):
    """A score in 1-10, else None: the API's 0 and null mean "not scored yet"."""
    number = _number(value)
    return number if number is not None and SCORE_RANGE[0] <= number <= SCORE_RANGE[1] else None


def _count(value):
    number = whole_number(value)
    return number if number is not None and 0 <= number <= 2**53 else None


def _names(items):
    names = [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)] \
        if isinstance(items, list) else []
    return ", ".join(names) or None


def jikan_to_kaggle(item):
    """One Jikan v4 anime object as one row of the Kaggle 2023 layout; numbers of the wrong kind read as missing."""
    def part(key):
        value = item.get(key)
        return value if isinstance(value, dict) else {}
    season, year = item.get("season"), item.get("year")
    genres = [g for key in ("genres", "explicit_genres") if isinstance(item.get(key), list) for g in item[key]]
    image = part("images").get("jpg") or {}
    return {
        "anime_id": item["mal_id"],
        "Name": item.get("title"),
        "English name": item.get("title_english"),
        "Other name": item.get("title_japanese"),
        "Score": _score(item.get("score")),
        "Genres": _names(genres),
        "Synopsis": item.get("synopsis"),
        "Type": item.get("type"),
        "Episodes": _count(item.get("episodes")),
        "Aired": part("aired").get("string"),
        "Premiered": f"{season} {year}" if season and year else None,
        "Status": item.get("status"),
        "Producers": _names(item.get("producers")),
        "Licensors": _names(item.get("licensors")),
        "Studios": _names(item.get("studios")),
        "Source": item.get("source"),
        "Duration": item.get("duration"),
        "Rating": item.get("rating"),
        "Rank": _count(item.get("rank")),
        "Popularity": _count(item.get("popularity")),
        "Favorites": _count(item.get("favorites")),
        "Scored By": _count(item.get("scored_by")),
        "Members": _count(item.get("members")),
        "Image URL": (image.get("large_image_url") or image.get("image_url")) if isinstance(image, dict) else None,
    }


def fetch_jikan(api_base, cache_dir, limit=None, requests_per_second=3.0, requests_per_minute=60, max_wait=60.0,
                session=None, refresh=False):
    """Fetch `/anime` page by page (each page checked, then cached, so an interrupted run resumes where it
    stopped). Stops at the last page, at a page with no anime not seen before (empty, or repeating earlier ones),
    after `limit` anime (so after `limit` pages at most) and after MAX_PAGES."""
    client = JikanClient(api_base, cache_dir, requests_per_second, requests_per_minute, max_wait, session, refresh)
    rows, seen = [], set()
    with tqdm(total=limit, desc="jikan", unit="anime") as bar:
        for page in range(1, min(limit or MAX_PAGES, MAX_PAGES) + 1):
            body = client.get("anime", {"page": page}, validate=anime_page)
            pagination = body.get("pagination") or {}
            new = []
            for item in body["data"]:
                if item["mal_id"] not in seen:
                    seen.add(item["mal_id"])
                    new.append(jikan_to_kaggle(item))
            if not new:
                if pagination.get("has_next_page"):
                    print(f"jikan: page {page} brings no new anime although more pages are announced; stopping",
                          file=sys.stderr)
                break
            rows.extend(new)
            bar.update(len(new))
            if (limit and len(rows) >= limit) or not pagination.get("has_next_page"):
                break
    return pd.DataFrame(rows[:limit] if limit else rows, columns=KAGGLE_COLUMNS)
