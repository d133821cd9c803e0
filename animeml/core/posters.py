"""Poster acquisition: download `Image URL`s safely, or take posters from a local folder; both write an index CSV."""
import io
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import requests
from PIL import Image
from tqdm import tqdm

from animeml.core.io import PipelineError, atomic_path, write_csv
from animeml.core.http import make_session

INDEX_NAME = "posters.csv"
INDEX_COLUMNS = ["file", "anime_id", "source"]
MAX_BYTES = 10 * 1024 * 1024


class PosterRejected(Exception):
    """A response that must not be kept; the message is the reason written to the failures CSV."""


def decodes(data):
    """True if `data` is a complete image: a truncated JPEG fails `load()`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return True
    except Exception:
        return False


def is_valid_image(path):
    try:
        return decodes(Path(path).read_bytes())
    except OSError:
        return False


def as_jpeg(data):
    """Keep JPEG bytes as they came; re-encode any other image format as JPEG."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            return data
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()


def fetch_image(session, url, timeout, max_bytes):
    """Return the bytes of a decodable image at `url`, or raise PosterRejected with the reason."""
    try:
        with session.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise PosterRejected(f"http {response.status_code}")
            kind = response.headers.get("Content-Type", "")
            if not kind.startswith("image/"):
                raise PosterRejected(f"not an image ({kind or 'no content type'})")
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise PosterRejected(f"too large ({declared} bytes)")
            data = bytearray()
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise PosterRejected(f"too large (over {max_bytes} bytes)")
    except requests.exceptions.RetryError as err:
        raise PosterRejected(f"gave up after retries ({err.args[0].reason})") from None
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as err:
        raise PosterRejected(f"timeout or connection error ({type(err).__name__})") from None
    except requests.exceptions.ChunkedEncodingError:
        raise PosterRejected("connection broken mid-body") from None
    if not decodes(bytes(data)):
        raise PosterRejected("does not decode as an image (truncated or corrupt)")
    return as_jpeg(bytes(data))


def remove_partial_files(out_dir):
    """A killed run can leave `.part` files behind; they never carry a final name, so just delete them."""
    for leftover in out_dir.glob(".*.part"):
        leftover.unlink()


def download_posters(table, out_dir, failures_csv, workers=8, timeout=10.0, max_bytes=MAX_BYTES,
                     session=None):
    """Download `Image URL` of each row to `out_dir/<anime_id>.jpg`. Returns (downloaded, skipped, failed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    session = session or make_session(pool_size=workers)
    rows = table.dropna(subset=["Image URL"]).drop_duplicates("anime_id")
    todo, skipped = [], 0
    for anime_id, url in zip(rows["anime_id"], rows["Image URL"]):
        target = out_dir / f"{int(anime_id)}.jpg"
        if target.exists() and is_valid_image(target):
            skipped += 1
        else:
            todo.append((int(anime_id), url, target))

    def download(job):
        anime_id, url, target = job
        data = fetch_image(session, url, timeout, max_bytes)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)

    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(download, job): job for job in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="posters", unit="img"):
            anime_id, url, _ = futures[future]
            try:
                future.result()
            except PosterRejected as reason:
                failures.append({"anime_id": anime_id, "url": url, "reason": str(reason)})
    write_csv(pd.DataFrame(failures, columns=["anime_id", "url", "reason"]), failures_csv)
    files = sorted(out_dir.glob("*.jpg"))
    index = pd.DataFrame({"file": [f.name for f in files], "anime_id": [int(f.stem) for f in files],
                          "source": "download"})
    write_csv(index[index["anime_id"].isin(rows["anime_id"])], out_dir / INDEX_NAME)
    return len(todo) - len(failures), skipped, len(failures)


def copy_posters(from_dir, out_dir):
    """Take posters from a local folder with its own `posters.csv` (file, anime_id, source): copy those that
    decode, so that a later step finds every poster, downloaded or local, in the same place and index.
    Returns (copied, skipped, failed)."""
    from_dir, out_dir = Path(from_dir), Path(out_dir)
    listing = from_dir / INDEX_NAME
    if not listing.exists():
        raise PipelineError(f"{listing} not found: --from-dir needs a folder with {INDEX_NAME}")
    index = pd.read_csv(listing)
    missing = [c for c in ("file", "anime_id") if c not in index.columns]
    if missing:
        raise PipelineError(f"{listing}: required column(s) missing: {', '.join(missing)}")
    if "source" not in index.columns:
        index["source"] = "local"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    images = from_dir / "images" if (from_dir / "images").is_dir() else from_dir
    copied = skipped = 0
    kept = []
    for row in tqdm(index.itertuples(), total=len(index), desc="posters", unit="img"):
        source, target = images / row.file, out_dir / row.file
        if target.exists() and is_valid_image(target):
            skipped += 1
        elif source.exists() and is_valid_image(source):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            copied += 1
        else:
            continue
        kept.append(row.Index)
    write_csv(index.loc[kept, INDEX_COLUMNS], out_dir / INDEX_NAME)
    return copied, skipped, len(index) - len(kept)
