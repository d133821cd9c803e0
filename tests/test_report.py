"""The results report: pages from the files a tiny run writes, "not run yet" for the rest, every image and link
found on disk, run records shown, and the README's results table printed from the same files.

`tiny_run(root)` writes step outputs in the layout the steps use (score metrics through animeml.core.metrics'
own writer, a training history and curve, character and tag tables, recommendation hit-rates and latency, model
sidecars with and without a run record); test_browser.py reuses it.
"""
import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # report.py is a root script, imported to call main() in-process


def figure(path, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot([0, 1, 2], [3, 1, 2])
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)


def tiny_run(root):
    """Outputs of a tiny run of the score, characters, tags and recommendation steps in `root` (genres and the
    score analysis are left unrun)."""
    from animeml.characters.classifier import scores_with_intervals
    from animeml.characters.openset import open_set_curve
    from animeml.core.io import write_csv, write_json
    from animeml.core.metrics import metrics_table, write_tables
    from animeml.core.runs import RunRecord

    root = Path(root)
    rng = np.random.default_rng(0)
    truth = rng.uniform(5, 9, 40)
    sections = {
        "All test anime: 40 anime": metrics_table(truth, {"text model": truth + rng.normal(0, 0.4, 40),
                                                          "mean score (baseline)": np.full(40, 7.0)}, (1, 10), 50),
        "Poster test rows: 40 posters of 40 anime": metrics_table(
            truth, {"hybrid": truth + rng.normal(0, 0.3, 40), "mean score of train posters (baseline)":
                    np.full(40, 7.2)}, (1, 10), 50),
    }
    write_tables(sections, root / "reports" / "score" / "score_metrics", "Score models")
    write_csv(pd.DataFrame({"epoch": [0, 1, 2], "phase": "head", "loss": [1.0, 0.7, 0.6],
                            "val_loss": [1.1, 0.8, 0.75]}), root / "reports" / "score" / "anime_text_model_history.csv")
    figure(root / "reports" / "score" / "anime_text_model_curve.png", "text model")
    record = RunRecord("score/04_train_text_model", settings={"members": 3, "seed": 7}).as_dict({"val_mae": 0.46})
    write_json({"kind": "text", "run": record}, root / "models" / "anime_text_model.json")
    write_json({"kind": "vision", "backbone": "efficientnet_lite0", "image_size": [192, 192]},
               root / "models" / "anime_vision_only_model.json")  # an older sidecar: no run record

    # Character metrics as step 02 scores them: classifier.scores_with_intervals on (labels, class scores).
    y_faces = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    guesses = {"majority class": np.zeros(8, int), "small_cnn": np.array([0, 1, 2, 0, 1, 0, 0, 1])}
    write_csv(pd.DataFrame([{"model": model, **scores_with_intervals(y_faces, np.eye(3)[guess], n_boot=20)}
                            for model, guess in guesses.items()]).assign(image_size=32, test_faces=8),
              root / "characters" / "metrics.csv")
    held_out = root / "characters20_held_out"
    write_csv(pd.DataFrame([{"model": "small_cnn", **scores_with_intervals(y_faces, np.eye(3)[guesses["small_cnn"]],
                                                                          n_boot=20)}]).assign(image_size=32,
                                                                                               test_faces=8),
              held_out / "metrics.csv")
    write_csv(pd.DataFrame([{"model": "small_cnn", "threshold": 0.9, "known_faces": 8, "unknown_faces": 5,
                             "unknown_named": 0.4, "unknown_named_low": 0.0, "unknown_named_high": 0.8}]),
              held_out / "openset_small_cnn.csv")
    # the curve as step 02 makes it, from validation, known and unseen scores (the unseen less confident)
    rng = np.random.default_rng(0)
    val, known, unseen = rng.dirichlet([1, 1, 1], 60), rng.dirichlet([1, 1, 1], 60), rng.dirichlet([8, 8, 8], 40)
    write_csv(open_set_curve(val, val.argmax(axis=1), known, known.argmax(axis=1), unseen, n_boot=20)
              .assign(model="small_cnn"), held_out / "openset_curve_small_cnn.csv")
    write_csv(pd.DataFrame({"label": ["ahagon_umiko", "suzukaze_aoba"], "precision": [0.8, 0.7],
                            "recall": [0.75, 0.72], "f1": [0.77, 0.71], "support": [20, 23]}),
              root / "characters" / "per_character_small_cnn.csv")
    figure(root / "characters" / "confusion_small_cnn.png", "confusion")
    write_csv(pd.DataFrame([  # the columns step 03 writes
        {"model": "tag prior (global threshold)", "sources": "tags", "test_images": 40, "chosen_on_val": False,
         "micro_f1": 0.261, "micro_f1_low": 0.2, "micro_f1_high": 0.3, "map": 0.2},
        {"model": "small_cnn (per-tag thresholds)", "sources": "tags", "test_images": 40, "chosen_on_val": True,
         "micro_f1": 0.55, "micro_f1_low": 0.5, "micro_f1_high": 0.6, "map": 0.5}]), root / "tags" / "metrics.csv")
    write_csv(pd.DataFrame({"tag": ["blonde hair", "blue eyes"], "test_support": [9, 12], "threshold": [0.4, 0.5],
                            "f1_global": [0.5, 0.6], "f1_per_tag": [0.55, 0.62]}), root / "tags" / "per_tag.csv")
    figure(root / "tags" / "pr_curves.png", "tags")

    summary = pd.DataFrame({"queries": "all queries", "method": ["hybrid", "popularity", "random"],
                            "n": 120, "hit@10": [0.41, 0.013, 0.003], "ci95": [0.09, 0.02, 0.01],
                            "genre_jaccard@10": [0.5, 0.1, 0.1]})
    write_csv(summary, root / "recommendation" / "evaluation_summary.csv")
    write_json({"catalogue": 42, "latency_median_ms": 1.4, "latency_p95_ms": 3.4, "speedup": 159.0},
               root / "recommendation" / "benchmark.json")
    write_json(RunRecord("recommendation/02_evaluate", settings={"k": 10}).as_dict({"hit@10": 0.41}),
               root / "runs" / "recommendation_02_evaluate_20260101T000000.json")
    return root


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("a", "link") and attrs.get("href") and not attrs["href"].startswith("data:"):
            self.links.append(attrs["href"])


def links_of(page):
    parser = Links()
    parser.feed(page.read_text())
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import report as script

    root = tiny_run(tmp_path_factory.mktemp("data"))
    start = time.perf_counter()
    script.main(["--data-dir", str(root)])
    return root, root / "reports", time.perf_counter() - start


def test_every_page_written_with_its_files_found(report):
    root, out, seconds = report
    assert seconds < 30
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["analysis.html", "characters.html", "genres.html", "index.html", "popularity.html",
                     "recommendation.html", "score.html"]
    for page in out.glob("*.html"):
        found = links_of(page)
        for target in found.images + found.links:
            assert (out / unquote(target)).is_file(), f"{page.name} links to missing {target}"
    score = links_of(out / "score.html")
    assert "score/anime_text_model_curve.png" in score.images and "score/anime_text_model_history.csv" in score.links
    characters = links_of(out / "characters.html")
    assert "files/characters/confusion_small_cnn.png" in characters.images  # copied: outside reports/
    assert "files/characters/per_character_small_cnn.csv" in characters.links


def test_tables_show_intervals_baselines_and_run_records(report):
    root, out, _ = report
    metrics = pd.read_csv(root / "reports" / "score" / "score_metrics.csv")
    text = metrics[metrics["model"] == "text model"].iloc[0]
    score = (out / "score.html").read_text()
    assert f"{text['MAE']:.3f} [{text['MAE_low']:.3f}, {text['MAE_high']:.3f}]" in score
    assert "mean score (baseline)" in score
    assert "score/04_train_text_model" in score and "settings.seed" in score and "versions.python" in score
    assert "older sidecar without a run record" in score and "efficientnet_lite0" in score
    recommendation = (out / "recommendation.html").read_text()
    assert "latency_median_ms" in recommendation and "recommendation/02_evaluate" in recommendation


def test_missing_steps_say_not_run_yet(report):
    _, out, _ = report
    genres = (out / "genres.html").read_text()
    assert "not run yet: <code>python GenreClassification/03_evaluate.py</code>" in genres
    analysis = (out / "analysis.html").read_text()
    assert "not run yet: <code>python AnimeScorePredictionOnlyPoster/02_gradcam.py</code>" in analysis
    assert "Traceback" not in genres + analysis


def test_markdown_table_from_the_same_files(report, capsys):
    import report as script

    root, _, _ = report
    script.main(["--data-dir", str(root), "--markdown"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| task | result |")
    metrics = pd.read_csv(root / "reports" / "score" / "score_metrics.csv")
    hybrid = metrics[metrics["model"] == "hybrid"].iloc[0]
    row = next(line for line in lines if line.startswith("| score, 40 posters"))
    assert f"MAE {hybrid['MAE']:.3f} [{hybrid['MAE_low']:.3f}, {hybrid['MAE_high']:.3f}]" in row
    assert "mean score of train posters MAE" in row
    small_cnn = pd.read_csv(root / "characters" / "metrics.csv").set_index("model").loc["small_cnn"]
    assert any(f"small_cnn top-1 {small_cnn['top1']:.3f} [{small_cnn['top1_low']:.3f}" in line and
               "majority class 0.375" in line for line in lines)
    assert any("`characters20_held_out`" in line and "5 faces of unseen characters named 0.400" in line
               for line in lines)
    curve = pd.read_csv(root / "characters20_held_out" / "openset_curve_small_cnn.csv")
    loosest = curve[curve["unknown_named"] <= 0.10].sort_values("keep_known").iloc[-1]
    assert loosest["keep_known"] < 0.99  # the curve crosses 10%, so the row names where
    assert any(f"<= 10% from `--keep-known {loosest['keep_known']:g}`: unseen named {loosest['unknown_named']:.3f}"
               in line and f"known accuracy {loosest['known_accuracy']:.3f}" in line for line in lines)
    assert any("tags, 40 test faces" in line and "(kept on validation) micro-F1 0.550 [0.500, 0.600]" in line
               for line in lines)
    assert any("hit@10 0.410" in line and "median query 1.4 ms" in line for line in lines)
    assert any(re.match(r"\| genres \| not run yet: `python GenreClassification/03_evaluate.py`", line)
               for line in lines)


def test_rebuild_and_corrupt_csv(report):
    import report as script
    from animeml.report.results import results_rows

    root, out, _ = report
    (root / "tags" / "per_tag.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x01")
    (root / "tags" / "metrics.csv").write_text("model,micro_f1\nsmall_cnn,0.5\n")  # an older layout
    script.main(["--data-dir", str(root)])
    assert "unreadable" in (out / "characters.html").read_text()
    tags = next(row for row in results_rows(root) if row[0] == "tags")
    assert tags[1].startswith("unreadable (KeyError") and "rerun its step" in tags[1]
    (root / "tags" / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x01")  # damaged: only the tags row says so
    rows = results_rows(root)
    assert any("`characters`" in row[0] and "small_cnn top-1" in row[1] for row in rows)
    assert next(row for row in rows if row[0] == "tags")[1].startswith("unreadable")
    assert json.loads((root / "recommendation" / "benchmark.json").read_text())["speedup"] == 159.0


def test_script_exit_codes_and_help_time(tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "report.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and "--markdown" in done.stdout and time.perf_counter() - start < 1.5
    bad = subprocess.run([sys.executable, "report.py", "--data-dir", str(tmp_path / "nowhere")], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr == f"error: data folder not found: {tmp_path / 'nowhere'}\n"


def test_open_set_clause_says_when_no_validation_rule_reaches_the_target():
    from animeml.report.results import openset_within_target

    curve = pd.DataFrame({"keep_known": [0.5, 0.95], "unknown_named": [0.2, 0.4], "unknown_named_low": [0.1, 0.3],
                          "unknown_named_high": [0.3, 0.5], "known_accuracy": [0.5, 0.9],
                          "known_accuracy_low": [0.4, 0.8], "known_accuracy_high": [0.6, 1.0]})
    assert openset_within_target(curve) == "; none of its validation rules (keep 0.5-0.95) names <= 10%"
    assert "`--keep-known 0.5`: unseen named 0.200 [0.100, 0.300]" in openset_within_target(curve, target=0.25)


def test_page_wait_looks_again_after_chromiums_inspector_error():
    """Chromium 156 answered a lookup on the page being replaced with this error, not a stale element (CI failed on
    it): the screenshots' and the browser test's wait must retry it within its bound, and still give up at the bound."""
    from selenium.common.exceptions import TimeoutException, WebDriverException

    from animeml.report.screenshots import page_wait

    answers = iter([WebDriverException("unhandled inspector error: Node with given id does not belong to the document"),
                    True])

    def replaced_page(_driver):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert page_wait(driver=None, timeout_s=5).until(replaced_page) is True
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        page_wait(driver=None, timeout_s=1).until(lambda _driver: False)
    assert time.monotonic() - started < 5
