"""The data steps (01 metadata, 02 posters, 03 merge) against hostile input: misbehaving servers, broken tables and
indexes, paths that lead out of the output folder, Ctrl-C. Each case: the exit code, at most one `error:` line and
no traceback, what is on disk, and a time bound. Steps run in-process through `cli.run(main, argv)`; a few real
subprocesses cover --help timing and Ctrl-C."""
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from animeml.core import cli
from animeml.core.http import BadBody, read_body
from animeml.core.jikan import JikanClient, JikanError, RateLimiter
from animeml.core.paths import ROOT
from animeml.core.posters import is_valid_image
from animeml.core.table import read_kaggle_csv
from conftest import jpeg_bytes
from hostile_servers import add_images, add_jikan, png_bytes

FOLDER = ROOT / "AnimeScorePredictionAllParameters"
SCRIPTS = {"01": "01_fetch_metadata.py", "02": "02_download_posters.py", "03": "03_merge_data.py"}


def load(step):
    spec = importlib.util.spec_from_file_location(f"step_{step}", FOLDER / SCRIPTS[step])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STEPS = {step: load(step) for step in SCRIPTS}


def run_step(capsys, step, *argv):
    """(exit code, stdout, stderr, seconds) of one step run in this process as `cli.run` runs it."""
    started = time.monotonic()
    try:
        cli.run(STEPS[step].main, [str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - started


def assert_one_error(err, *words):
    """Exactly one `error:` line on stderr naming `words`, and no traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], errors[0]


def cached_files(cache):
    return sorted(p.name for p in cache.rglob("*.json")) if cache.exists() else []


def fetch(capsys, tmp_path, api_base, *extra):
    return run_step(capsys, "01", "--source", "jikan", "--api-base", api_base, "--rate", "50",
                    "--out", tmp_path / "anime.csv", *extra)


# --- step 01 against a misbehaving Jikan -----------------------------------------------------------------

def test_retry_after_of_a_day_is_capped_by_max_wait_with_a_message(server, tmp_path, capsys):
    code, _, err, seconds = fetch(capsys, tmp_path, add_jikan(server, "retry_after_a_day"), "--max-wait", "1")
    assert code == 2 and seconds < 15
    assert_one_error(err, "429", "rate limited")
    assert "waiting 1 s" in err and "86400" in err
    assert cached_files(tmp_path / "jikan_pages") == [] and not (tmp_path / "anime.csv").exists()


@pytest.mark.parametrize("fault, pages", [("empty_pages_forever", 2), ("same_page_forever", 2)])
def test_endless_pagination_stops(server, tmp_path, capsys, fault, pages):
    code, _, err, seconds = fetch(capsys, tmp_path, add_jikan(server, fault))
    assert code == 0 and seconds < 10, err
    assert "stopping" in err
    assert server.count("/v4/anime") == pages
    assert list(read_kaggle_csv(tmp_path / "anime.csv")["anime_id"]) == [1, 2]


def test_limit_bounds_the_pages_fetched(server, tmp_path, capsys):
    code, _, err, seconds = fetch(capsys, tmp_path, add_jikan(server, "one_new_anime_forever"), "--limit", "5")
    assert code == 0 and seconds < 10, err
    assert server.count("/v4/anime") == 5
    assert len(read_kaggle_csv(tmp_path / "anime.csv")) == 5


@pytest.mark.parametrize("fault, words", [
    ("malformed_json", ["did not answer JSON"]),
    ("html_page", ["did not answer JSON", "text/html"]),
    ("item_without_mal_id", ["item 2", "mal_id"]),
    ("mal_id_not_integer", ["mal_id"]),
    ("data_not_a_list", ["'data' is not a list"]),
    ("answer_not_an_object", ["not a JSON object"]),
])
def test_a_bad_page_is_one_line_and_never_cached(server, tmp_path, capsys, fault, words):
    code, _, err, seconds = fetch(capsys, tmp_path, add_jikan(server, fault))
    assert code == 2 and seconds < 10
    assert_one_error(err, *words)
    assert cached_files(tmp_path / "jikan_pages") == [] and not (tmp_path / "anime.csv").exists()


def test_cache_is_per_api_base_and_refresh_drops_it(server, tmp_path, capsys):
    bad = add_jikan(server, "item_without_mal_id", prefix="/bad")
    good = add_jikan(server, "ok", prefix="/good")
    assert fetch(capsys, tmp_path, bad)[0] == 2
    code, _, err, _ = fetch(capsys, tmp_path, good)
    assert code == 0, err
    assert list(read_kaggle_csv(tmp_path / "anime.csv")["anime_id"]) == [1, 2, 3, 4, 5, 6]

    other = add_jikan(server, "placeholder_scores", prefix="/other")
    assert fetch(capsys, tmp_path, other)[0] == 0
    assert list(read_kaggle_csv(tmp_path / "anime.csv")["anime_id"]) == [1, 2, 3, 4, 5, 6]
    assert len(list((tmp_path / "jikan_pages").iterdir())) == 2, "one cache folder per API base"

    hits = server.count("/good/")
    assert fetch(capsys, tmp_path, good)[0] == 0 and server.count("/good/") == hits, "a rerun reads the cache"
    assert fetch(capsys, tmp_path, good, "--refresh")[0] == 0 and server.count("/good/") == 2 * hits


def test_api_placeholder_scores_read_as_missing_and_the_table_reads_back(server, tmp_path, capsys):
    code, _, err, _ = fetch(capsys, tmp_path, add_jikan(server, "placeholder_scores"))
    assert code == 0, err
    table = read_kaggle_csv(tmp_path / "anime.csv")
    assert table["Score"].isna().tolist() == [True, True, True, True, True, False]
    assert table["Score"].iloc[-1] == 8.25


@pytest.mark.parametrize("api_base, words", [
    ("http://127.0.0.1:9/v4", ["connection refused"]),
    ("file:///etc/v4", ["not an http(s) URL"]),
    ("ftp://127.0.0.1/v4", ["not an http(s) URL"]),
])
def test_unreachable_or_non_http_api_is_one_line(tmp_path, capsys, api_base, words):
    code, _, err, seconds = fetch(capsys, tmp_path, api_base)
    assert code == 2 and seconds < 10
    assert_one_error(err, *words)


# --- step 01: the anime table ----------------------------------------------------------------------------

def write_table(path, ids, scores):
    pd.DataFrame({"anime_id": ids, "Name": [f"A{i}" for i in range(len(ids))], "Score": scores,
                  "Genres": "Action"}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("ids, scores, words", [
    (["1", "5.9"], ["7", "8"], ["'5.9'", "data row 2"]),
    (["1", "1e30"], ["7", "8"], ["'1e30'"]),
    (["1", "99999999999999999999"], ["7", "8"], ["64 bits"]),
    (["-1", "2"], ["7", "8"], ["'-1'", "data row 1"]),
    (["0", "2"], ["7", "8"], ["'0'"]),
    (["", "2"], ["7", "8"], ["anime_id is empty", "data row 1"]),
    (["1", "2", "1", "2"], ["7", "8", "7", "8"], ["repeated: 1, 2", "--drop-duplicates"]),
    (["1", "2"], ["15.5", "8"], ["outside 1-10", "'15.5'"]),
    (["1", "2"], ["7", "-3"], ["outside 1-10", "'-3'"]),
])
def test_bad_tables_are_one_line_errors(tmp_path, capsys, ids, scores, words):
    source = write_table(tmp_path / "in.csv", ids, scores)
    code, _, err, _ = run_step(capsys, "01", "--csv", source, "--out", tmp_path / "out.csv")
    assert code == 2
    assert_one_error(err, *words)
    assert not (tmp_path / "out.csv").exists()


def test_duplicates_dropped_only_when_asked_and_placeholders_are_missing(tmp_path, capsys):
    source = write_table(tmp_path / "in.csv", ["1", "2", "2", "3", "4"], ["N/A", "0", "9", "UNKNOWN", "10"])
    code, _, err, _ = run_step(capsys, "01", "--csv", source, "--out", tmp_path / "out.csv", "--drop-duplicates")
    assert code == 0 and "warning:" in err and "repeated anime_id 2" in err
    table = read_kaggle_csv(tmp_path / "out.csv")
    assert list(table["anime_id"]) == [1, 2, 3, 4]
    assert table["Score"].isna().tolist() == [True, True, True, False]


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text(""), ["is empty"]),
    (lambda p: p.mkdir(), ["is a folder"]),
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x00" * 50), ["cannot parse"]),
    (lambda p: None, ["not found"]),
])
def test_unusable_table_files_are_one_line(tmp_path, capsys, make, words):
    make(tmp_path / "in.csv")
    code, _, err, _ = run_step(capsys, "01", "--csv", tmp_path / "in.csv", "--out", tmp_path / "out.csv")
    assert code == 2
    assert_one_error(err, *words)


# --- step 03: the poster index ---------------------------------------------------------------------------

@pytest.mark.parametrize("index, words", [
    ("file,anime_id,source\na.jpg,one,x\n", ["anime_id 'one'"]),
    ("file,source\na.jpg,x\n", ["required column(s) missing: anime_id"]),
    ("", ["is empty"]),
    (None, ["is a folder"]),
    ("file,anime_id\n../../etc/a.jpg,1\n", ["not inside"]),
    ("file,anime_id\na.jpg,1\na.jpg,2\n", ["listed twice"]),
])
def test_bad_poster_index_in_merge_is_one_line(tmp_path, capsys, index, words):
    write_table(tmp_path / "anime.csv", ["1"], ["7"])
    posters = tmp_path / "posters"
    posters.mkdir()
    if index is None:
        (posters / "posters.csv").mkdir()
    else:
        (posters / "posters.csv").write_text(index)
    code, _, err, _ = run_step(capsys, "03", "--metadata", tmp_path / "anime.csv", "--posters", posters,
                               "--out", tmp_path / "merged.csv")
    assert code == 2
    assert_one_error(err, *words)
    assert not (tmp_path / "merged.csv").exists()


# --- step 02: downloads and local folders ----------------------------------------------------------------

def test_hostile_urls_are_failure_rows_and_the_run_goes_on(server, tmp_path, capsys):
    add_images(server)
    urls = {1: f"{server.url}/ok/1.jpg", 2: "file:///etc/passwd", 3: "ftp://127.0.0.1/3.jpg", 4: "http://",
            5: "not a url", 6: f"{server.url}/loop/6.jpg", 7: f"{server.url}/to-file/7.jpg",
            8: f"{server.url}/to-ftp/8.jpg", 9: f"{server.url}/huge/9.png", 10: f"{server.url}/to-ok/10.jpg"}
    table = pd.DataFrame({"anime_id": list(urls), "Image URL": list(urls.values())})
    table.to_csv(tmp_path / "anime.csv", index=False)
    out = tmp_path / "posters"
    code, stdout, err, seconds = run_step(capsys, "02", "--csv", tmp_path / "anime.csv", "--out-dir", out,
                                          "--workers", "3", "--timeout", "2")
    assert code == 0 and seconds < 20, err
    assert "Traceback" not in err and "downloaded 2, skipped 0, failed 8" in stdout
    reasons = pd.read_csv(out / "failures.csv").set_index("file")["reason"]
    assert all("not an http(s) URL" in reasons[f"{i}.jpg"] for i in (2, 3, 4, 5, 7, 8))
    assert "redirect" in reasons["6.jpg"]
    assert "too many pixels (12000x12000" in reasons["9.jpg"]
    assert sorted(pd.read_csv(out / "posters.csv")["anime_id"]) == [1, 10]
    assert sorted(p.name for p in out.iterdir()) == ["1.jpg", "10.jpg", "failures.csv", "posters.csv"]
    assert all(is_valid_image(p) for p in out.glob("*.jpg"))


def test_from_dir_never_writes_outside_out_dir(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.jpg"
    victim.write_bytes(b"the user's own file")
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "images" / "good.jpg").write_bytes(jpeg_bytes(1))
    (source / "images" / "link.jpg").write_bytes(jpeg_bytes(2))
    (source / "images" / "big.png").write_bytes(png_bytes(12000, 12000))
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(3))  # a real image where '../../x.jpg' leads
    out = tmp_path / "out" / "posters"
    out.mkdir(parents=True)
    (out / "link.jpg").symlink_to(victim)  # a symlink out of --out-dir, left by someone else
    rows = ["good.jpg", "../../x.jpg", str(victim), "link.jpg", "big.png", "posters.csv", "missing.jpg"]
    pd.DataFrame({"file": rows, "anime_id": range(1, len(rows) + 1)}).to_csv(source / "posters.csv", index=False)

    code, stdout, err, seconds = run_step(capsys, "02", "--from-dir", source, "--out-dir", out)
    assert code == 0 and seconds < 10, err
    assert "copied 1, skipped 0, failed 6" in stdout
    assert victim.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside", "src", "x.jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv", "good.jpg", "link.jpg", "posters.csv"]
    assert list(pd.read_csv(out / "posters.csv")["file"]) == ["good.jpg"]
    reasons = pd.read_csv(out / "failures.csv").set_index("file")["reason"]
    assert "leads outside" in reasons["../../x.jpg"] and "leads outside" in reasons[str(victim)]
    assert "leads outside" in reasons["link.jpg"] and "too many pixels" in reasons["big.png"]
    assert "not an image file name" in reasons["posters.csv"] and "not found" in reasons["missing.jpg"]


@pytest.mark.parametrize("argv, words", [
    (["--workers", "0"], ["--workers", "'0'"]),
    (["--timeout", "-1"], ["--timeout"]),
    (["--max-wait", "0"], ["--max-wait"]),
    (["--max-pixels", "ten"], ["--max-pixels"]),
])
def test_step_02_checks_its_arguments(tmp_path, capsys, argv, words):
    code, _, err, _ = run_step(capsys, "02", "--csv", tmp_path / "a.csv", *argv)
    assert code == 2
    assert_one_error(err, *words)


@pytest.mark.parametrize("argv, words", [
    (["--source", "jikan", "--rate", "0"], ["--rate"]),
    (["--source", "jikan", "--limit", "0"], ["--limit"]),
    (["--source", "jikan", "--max-wait", "-5"], ["--max-wait"]),
    (["--source", "jikan", "--api-base", " "], ["--api-base"]),
])
def test_step_01_checks_its_arguments(capsys, argv, words):
    code, _, err, _ = run_step(capsys, "01", *argv)
    assert code == 2
    assert_one_error(err, *words)


def test_old_out_spelling_of_step_02_still_works_with_a_warning(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jpg").write_bytes(jpeg_bytes(1))
    (source / "posters.csv").write_text("file,anime_id\na.jpg,1\n")
    code, _, err, _ = run_step(capsys, "02", "--from-dir", source, "--out", tmp_path / "posters")
    assert code == 0 and "deprecated" in err
    assert (tmp_path / "posters" / "a.jpg").exists()


# --- real processes: Ctrl-C and --help -------------------------------------------------------------------

def test_ctrl_c_stops_step_02_within_seconds_with_a_consistent_index(server, tmp_path):
    add_images(server)
    rows = [f"{server.url}/ok/{i}.jpg" for i in range(1, 5)] + [f"{server.url}/hang/{i}.jpg" for i in range(5, 25)]
    pd.DataFrame({"anime_id": range(1, 25), "Image URL": rows}).to_csv(tmp_path / "anime.csv", index=False)
    out = tmp_path / "posters"
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when the process started, and a shell
    # ignores it in background jobs (`pytest &` without job control): the step is given a terminal's default.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.Popen([sys.executable, "-c", start, str(FOLDER / SCRIPTS["02"]),
                            "--csv", str(tmp_path / "anime.csv"), "--out-dir", str(out), "--workers", "2",
                            "--timeout", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while server.count("/hang/") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.count("/hang/") == 2, "both workers should be waiting on a hanging server"
        os.kill(run.pid, signal.SIGINT)
        interrupted = time.monotonic()
        _, err = run.communicate(timeout=20)
        seconds = time.monotonic() - interrupted
    finally:
        server.release.set()
        run.kill()
    assert run.returncode == 130 and seconds < 5, (seconds, err)
    assert "interrupted" in err and "Traceback" not in err
    on_disk = sorted(int(p.stem) for p in out.glob("*.jpg"))
    assert on_disk == [1, 2, 3, 4]
    assert sorted(pd.read_csv(out / "posters.csv")["anime_id"]) == on_disk
    assert (out / "failures.csv").exists() and not list(out.glob(".*.part"))


@pytest.mark.parametrize("step", sorted(SCRIPTS))
def test_help_answers_at_once_without_tensorflow(step):
    probe = ("import runpy, sys; sys.argv = ['x', '--help']\n"
             "try:\n    runpy.run_path(%r, run_name='__main__')\n"
             "except SystemExit as stop:\n    assert stop.code == 0\n"
             "print('heavy:', sorted(m for m in ('tensorflow', 'keras', 'torch', 'pandas') if m in sys.modules))"
             % str(FOLDER / SCRIPTS[step]))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 1.5 and result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout and "--config" in result.stdout and not result.stderr


# --- the bounds themselves -------------------------------------------------------------------------------

def test_rate_limiter_keeps_both_jikan_limits(capsys):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    limiter = RateLimiter(3.0, 60, clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(150):
        limiter.wait()
        sent.append(now[0])
    assert all(sent[i + 3] - sent[i] >= 1.0 - 1e-9 for i in range(len(sent) - 3)), "over 3 requests a second"
    assert all(sent[i + 60] - sent[i] >= 60.0 - 1e-9 for i in range(len(sent) - 60)), "over 60 requests a minute"
    assert sent[-1] < 150, "waits no longer than the limits need"
    assert "60 requests a minute" in capsys.readouterr().err


class DribblingResponse:
    """A response whose body arrives one byte at a time, each before any socket timeout."""
    headers = {}

    def iter_content(self, size):
        while True:
            time.sleep(0.05)
            yield b"x"


def test_a_body_that_dribbles_forever_is_cut_off():
    started = time.monotonic()
    with pytest.raises(BadBody, match="too slow"):
        read_body(DribblingResponse(), 10_000, max_seconds=0.5)
    assert time.monotonic() - started < 2


def test_a_corrupt_earlier_download_is_never_indexed(server, tmp_path, capsys):
    add_images(server)
    out = tmp_path / "posters"
    out.mkdir()
    (out / "1.jpg").write_bytes(jpeg_bytes(1)[:200])  # truncated by an earlier crash
    (out / "2.jpg").mkdir()  # something in the way
    table = pd.DataFrame({"anime_id": [1, 2], "Image URL": [f"{server.url}/404/1.jpg", f"{server.url}/ok/2.jpg"]})
    table.to_csv(tmp_path / "anime.csv", index=False)
    code, stdout, err, _ = run_step(capsys, "02", "--csv", tmp_path / "anime.csv", "--out-dir", out)
    assert code == 0 and "downloaded 0, skipped 0, failed 2" in stdout, err
    assert pd.read_csv(out / "posters.csv").empty and not (out / "1.jpg").exists()
    assert "in the way" in pd.read_csv(out / "failures.csv").set_index("file")["reason"]["2.jpg"]


def test_client_reports_the_status_of_a_missing_item(server, tmp_path):
    client = JikanClient(add_jikan(server, "ok"), tmp_path / "cache", requests_per_second=50)
    with pytest.raises(JikanError, match="404") as missing:
        client.get("characters/5/full")
    assert missing.value.status == 404 and not list((tmp_path / "cache").rglob("*.json"))
