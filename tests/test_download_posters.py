"""The poster downloader against a local server with injected faults."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from animeml.core.http import make_session
from animeml.core.paths import ROOT
from animeml.core.posters import download_posters, is_valid_image
from conftest import jpeg_bytes

SCRIPT = ROOT / "AnimeScorePredictionAllParameters" / "02_download_posters.py"
JPEG = {"Content-Type": "image/jpeg"}


def add_fault_routes(server, timeout):
    once = {}

    def first_time(request):
        with server.lock:
            seen = once.get(request.path, False)
            once[request.path] = True
        return not seen

    def ok(request, query):
        return 200, JPEG, jpeg_bytes(seed=len(request.path))

    def rate_limited_once(request, query):
        if first_time(request):
            return 429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"slow down"
        return ok(request, query)

    def error_once(request, query):
        return (500, {"Content-Type": "text/plain"}, b"oops") if first_time(request) else ok(request, query)

    def too_slow(request, query):
        time.sleep(timeout * 3)
        return ok(request, query)

    def truncated(request, query):
        return 200, JPEG, jpeg_bytes(seed=3)[:300]

    def html(request, query):
        return 200, {"Content-Type": "text/html"}, b"<html>not a poster</html>"

    def huge(request, query):
        return 200, JPEG, jpeg_bytes(seed=4, size=(900, 900))

    server.routes.update({"/ok/": ok, "/429/": rate_limited_once, "/500/": error_once, "/slow/": too_slow,
                          "/truncated/": truncated, "/html/": html, "/huge/": huge})


def catalogue(server, kinds):
    rows = [{"anime_id": i, "Image URL": f"{server.url}/{kind}/{i}.jpg"} for i, kind in enumerate(kinds, 1)]
    return pd.DataFrame(rows)


def test_every_fault_handled_and_rerun_downloads_nothing(server, tmp_path):
    timeout = 0.4
    add_fault_routes(server, timeout)
    kinds = ["ok", "ok", "429", "500", "slow", "truncated", "html", "missing", "huge"]
    table = catalogue(server, kinds)
    out, failures_csv = tmp_path / "posters", tmp_path / "failures.csv"
    session = make_session(retries=2, backoff=0.05)

    started = time.monotonic()
    done, skipped, failed = download_posters(table, out, failures_csv, workers=4, timeout=timeout,
                                             max_bytes=50_000, session=session)
    assert (done, skipped, failed) == (4, 0, 5)
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 was not honoured"
    assert server.count("/429/") == 2 and server.count("/500/") == 2
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert all(is_valid_image(p) for p in out.glob("*.jpg"))
    assert not list(out.glob(".*"))

    reasons = pd.read_csv(failures_csv).set_index("file")["reason"]
    assert sorted(reasons.index) == ["5.jpg", "6.jpg", "7.jpg", "8.jpg", "9.jpg"]
    assert "timeout" in reasons["5.jpg"]
    assert "decode" in reasons["6.jpg"]
    assert "not an image" in reasons["7.jpg"]
    assert "404" in reasons["8.jpg"]
    assert "too large" in reasons["9.jpg"]
    index = pd.read_csv(out / "posters.csv")
    assert sorted(index["anime_id"]) == [1, 2, 3, 4]

    before = dict(server.hits)
    done, skipped, failed = download_posters(table[table["anime_id"] <= 4], out, failures_csv, workers=4,
                                             timeout=timeout, session=session)
    assert (done, skipped, failed) == (0, 4, 0)
    assert server.hits == before


def test_killed_run_leaves_no_partial_file_and_rerun_completes(server, tmp_path):
    def slow_ok(request, query):
        time.sleep(0.15)
        return 200, JPEG, jpeg_bytes(seed=len(request.path), size=(200, 280))

    server.routes["/slowok/"] = slow_ok
    table = catalogue(server, ["slowok"] * 40)
    table["Name"], table["Score"], table["Genres"] = "x", 7.0, "Action"
    csv = tmp_path / "anime.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "posters"
    command = [sys.executable, str(SCRIPT), "--csv", str(csv), "--out-dir", str(out), "--workers", "2"]

    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.jpg"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    finished = list(out.glob("*.jpg"))
    assert 5 <= len(finished) < 40
    assert all(is_valid_image(p) for p in finished)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    last_line = rerun.stdout.strip().splitlines()[-1]
    assert last_line.startswith(f"downloaded {40 - len(finished)}, skipped {len(finished)}, failed 0")
    assert len(list(out.glob("*.jpg"))) == 40
    assert all(is_valid_image(p) for p in out.glob("*.jpg"))
    assert not list(out.glob(".*.part"))
