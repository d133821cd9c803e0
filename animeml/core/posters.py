"""Image acquisition: download (file name, URL) jobs safely, or take posters from a local folder; the poster steps
write an index CSV of what is on disk and a failures CSV with one reason per row that could not be had.

Every file name from data is resolved and confined to its output folder, every image is checked for its pixel
count (from the header, before decoding) and for decoding completely, and every write is atomic."""
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import requests
from PIL import Image
from tqdm import tqdm

from animeml.core.http import Stopped, check_url, failure_reason, make_session, read_body
from animeml.core.imagefile import MAX_PIXELS, ImageUnreadable, check_image
from animeml.core.io import atomic_path, write_csv
from animeml.core.table import INDEX_COLUMNS, INDEX_NAME, read_poster_index

MAX_BYTES = 10 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
FAILURE_COLUMNS = ["file", "url", "reason"]


class Rejected(Exception):
    """An image (or a file name) that must not be kept; the message is the reason written to the failures CSV."""


def confined(folder, name):
    """`folder/name` resolved, if it is an image file name that stays inside `folder` (no '..', no absolute path,
    no symlink leading out); Rejected otherwise."""
    root = Path(folder).resolve()
    try:
        target = (root / str(name)).resolve()
    except (ValueError, OSError):
        raise Rejected(f"unusable file name {str(name)[:200]!r}") from None
    if not target.is_relative_to(root) or target == root:
        raise Rejected(f"file name {str(name)[:200]!r} leads outside {folder}")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise Rejected(f"file name {str(name)[:200]!r} is not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return target


def checked_image(data, max_pixels=MAX_PIXELS):
    """The bytes of a complete image of at most `max_pixels` (JPEG kept as it came, any other format re-encoded as
    JPEG), or Rejected with the reason. The pixel count is read from the header before anything is decoded."""
    try:
        with warnings.catch_warnings():  # the pixel count is checked just below, against our own cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise Rejected(f"too many pixels ({width}x{height} > {max_pixels})")
            image.load()
            if image.format == "JPEG":
                return bytes(data)
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=95)
            return buffer.getvalue()
    except Rejected:
        raise
    except Image.DecompressionBombError:
        raise Rejected(f"too many pixels (over {max_pixels})") from None
    except Exception:
        raise Rejected("does not decode as an image (truncated or corrupt)") from None


def is_valid_image(path, max_pixels=MAX_PIXELS):
    """True if `path` holds a complete image of at most `max_pixels`."""
    try:
        check_image(path, max_pixels)
        return True
    except ImageUnreadable:
        return False


def fetch_image(session, url, timeout, max_bytes):
    """The body of an image response at `url`, at most `max_bytes` and within 10 timeouts, or Rejected with the
    reason."""
    try:
        with session.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise Rejected(f"http {response.status_code}")
            kind = response.headers.get("Content-Type", "")
            if not kind.startswith("image/"):
                raise Rejected(f"not an image ({kind or 'no content type'})")
            return read_body(response, max_bytes, 10 * timeout, getattr(session, "stop", None))
    except requests.exceptions.RequestException as err:
        raise Rejected(failure_reason(err)) from None


def remove_partial_files(out_dir):
    """A killed run can leave `.part` files behind; they never carry a final name, so just delete them."""
    for leftover in out_dir.glob(".*.part"):
        leftover.unlink()


def download_images(jobs, out_dir, failures_csv, workers=8, timeout=10.0, max_bytes=MAX_BYTES,
                    max_pixels=MAX_PIXELS, session=None):
    """Download each `(file_name, url)` of `jobs` to `out_dir/file_name`; a file already there that decodes is
    skipped, one that does not is deleted and fetched again. A row that fails (bad name or URL, http error,
    redirect loop, not an image, too large, too many pixels) is one row of `failures_csv` (file, url, reason) and
    the run goes on.
    Ctrl-C cancels pending downloads, lets no running one write, writes `failures_csv` and raises
    KeyboardInterrupt. Returns (downloaded, skipped, failed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    session = session or make_session(pool_size=workers)
    stop = getattr(session, "stop", None) or threading.Event()
    write_gate = threading.Lock()  # once `stop` is set under it, no download writes a file any more
    failures, todo, skipped, seen = [], [], 0, set()
    for name, url in jobs:
        if name in seen:
            continue
        seen.add(name)
        try:
            target = confined(out_dir, name)
            check_url(url)
        except (Rejected, requests.exceptions.RequestException) as reason:
            failures.append({"file": name, "url": url, "reason": str(reason)})
            continue
        if target.is_dir():
            failures.append({"file": name, "url": url, "reason": "a folder of that name is in the way"})
        elif target.exists() and is_valid_image(target, max_pixels):
            skipped += 1
        else:
            target.unlink(missing_ok=True)  # an earlier download that does not decode is never indexed
            todo.append((name, url, target))

    def download(job):
        _, url, target = job
        data = checked_image(fetch_image(session, url, timeout, max_bytes), max_pixels)
        with write_gate:
            if stop.is_set():
                raise Stopped("interrupted")
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)

    downloaded = 0
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(download, job): job for job in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="download", unit="img"):
            name, url, _ = futures[future]
            try:
                future.result()
                downloaded += 1
            except Rejected as reason:
                failures.append({"file": name, "url": url, "reason": str(reason)})
            except Exception as err:  # whatever one row does, the run goes on and says why
                failures.append({"file": name, "url": url, "reason": f"{type(err).__name__}: {err}"[:300]})
    except BaseException:
        with write_gate:
            stop.set()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        write_csv(pd.DataFrame(failures, columns=FAILURE_COLUMNS), failures_csv)
    return downloaded, skipped, len(failures)


def write_index(out_dir, anime_ids):
    """`out_dir/posters.csv`: every `<anime_id>.jpg` on disk whose anime is in `anime_ids`."""
    wanted = set(int(i) for i in anime_ids)
    files = sorted(f for f in out_dir.glob("*.jpg") if f.is_file() and f.stem.isdigit() and int(f.stem) in wanted)
    index = pd.DataFrame({"file": [f.name for f in files], "anime_id": [int(f.stem) for f in files],
                          "source": "download"})
    write_csv(index, out_dir / INDEX_NAME)


def download_posters(table, out_dir, failures_csv, workers=8, timeout=10.0, max_bytes=MAX_BYTES,
                     max_pixels=MAX_PIXELS, session=None):
    """Download `Image URL` of each row to `out_dir/<anime_id>.jpg` and index what is on disk in `posters.csv`,
    also when interrupted. Returns (downloaded, skipped, failed)."""
    out_dir = Path(out_dir)
    rows = table.dropna(subset=["Image URL"]).drop_duplicates("anime_id")
    jobs = [(f"{int(anime_id)}.jpg", url) for anime_id, url in zip(rows["anime_id"], rows["Image URL"])]
    try:
        return download_images(jobs, out_dir, failures_csv, workers, timeout, max_bytes, max_pixels, session)
    finally:
        write_index(out_dir, rows["anime_id"])


def copy_posters(from_dir, out_dir, failures_csv, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS):
    """Take posters from a local folder with its own `posters.csv` (file, anime_id, source): copy those that
    decode, so that a later step finds every poster, downloaded or local, in the same place and index. A file name
    that leads outside either folder, or a file that is missing, too large or not an image, is one row of
    `failures_csv` (file, anime_id, reason). Returns (copied, skipped, failed)."""
    from_dir, out_dir = Path(from_dir), Path(out_dir)
    index = read_poster_index(from_dir / INDEX_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    images = from_dir / "images" if (from_dir / "images").is_dir() else from_dir
    copied = skipped = 0
    kept, failures = [], []
    try:
        for row in tqdm(index.itertuples(), total=len(index), desc="posters", unit="img"):
            try:
                source, target = confined(images, row.file), confined(out_dir, row.file)
                if target.exists() and is_valid_image(target, max_pixels):
                    skipped += 1
                else:
                    if not source.is_file():
                        raise Rejected(f"not found in {images}")
                    if source.stat().st_size > max_bytes:
                        raise Rejected(f"too large ({source.stat().st_size} bytes)")
                    data = source.read_bytes()
                    checked_image(data, max_pixels)
                    with atomic_path(target) as tmp:
                        tmp.write_bytes(data)
                    copied += 1
                kept.append(row.Index)
            except (Rejected, OSError) as reason:
                failures.append({"file": row.file, "anime_id": row.anime_id, "reason": str(reason)})
    finally:
        write_csv(index.loc[kept, INDEX_COLUMNS], out_dir / INDEX_NAME)
        write_csv(pd.DataFrame(failures, columns=["file", "anime_id", "reason"]), failures_csv)
    return copied, skipped, len(failures)
