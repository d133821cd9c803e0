"""Every step script: `--help` answers at once without importing a deep learning library, every option has help
text, and settings come from `--config FILE` with command-line flags winning over it."""
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from animeml.core.io import PipelineError
from animeml.core.paths import ROOT
from animeml.core.table import POST_RELEASE_COLUMNS

TASK_FOLDERS = ["AnimeScorePredictionAllParameters", "AnimeScorePredictionOnlyPoster", "GenreClassification",
                "CharacterTagging", "Recommendation", "benchmarks"]
SCRIPTS = sorted(str(path.relative_to(ROOT)) for folder in TASK_FOLDERS for path in (ROOT / folder).glob("*.py"))
SCRIPTS += ["run_pipeline.py", "report.py", "app.py"]
# the steps that train a Keras model: each runs under a tf.distribute strategy of the user's choosing
KERAS_TRAINING_STEPS = {"AnimeScorePredictionAllParameters/04_train_text_model.py",
                        "AnimeScorePredictionAllParameters/05_train_hybrid_model.py",
                        "AnimeScorePredictionAllParameters/10_train_popularity.py",
                        "AnimeScorePredictionOnlyPoster/01_train_vision_model.py", "GenreClassification/02_train.py",
                        "CharacterTagging/02_train_characters.py", "CharacterTagging/03_train_tagger.py",
                        "CharacterTagging/07_train_captioner.py"}
HEAVY = ("tensorflow", "keras", "torch", "transformers", "ultralytics")
HELP_SECONDS = 1.5

# Runs a script with --help; every parser that prints help first reports, on stderr, its options without help text
# (subcommands' parsers included).
DRIVER = """
import argparse, json, runpy, sys

def undocumented(parser):
    found = []
    for action in parser._actions:
        if not action.help:
            found.append("/".join(action.option_strings) or action.dest)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [f"{name} {option}" for option in undocumented(sub)]
    return found

print_help = argparse.ArgumentParser.print_help
def report_then_print(parser, file=None):
    print("UNDOCUMENTED " + json.dumps(undocumented(parser)), file=sys.stderr)
    print_help(parser, file)
argparse.ArgumentParser.print_help = report_then_print
script = sys.argv[1]
sys.argv = [script, "--help"]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
runpy.run_path(script, run_name="__main__")
"""


def test_every_step_script_is_listed():
    assert len(SCRIPTS) >= 40 and KERAS_TRAINING_STEPS <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_fast_light_and_documents_every_option(script):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", DRIVER, script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    if script in KERAS_TRAINING_STEPS:
        assert "--strategy" in done.stdout and "--mixed-precision" in done.stdout
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    heavy = sorted({name.split(".")[0] for name in imported if name.split(".")[0] in HEAVY})
    assert not heavy, f"--help imports {heavy}"
    log = [line for line in done.stderr.splitlines() if not line.startswith(("import time:", "UNDOCUMENTED"))]
    assert not any("tensorflow" in line.lower() or "onednn" in line.lower() for line in log), log
    undocumented = json.loads(next(line for line in done.stderr.splitlines()
                                   if line.startswith("UNDOCUMENTED")).removeprefix("UNDOCUMENTED "))
    assert undocumented == [], f"options without help text: {undocumented}"
    # CPU time is what start-up costs; the wall time of this shared machine also counts every other process
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < HELP_SECONDS, f"--help took {cpu:.2f} s of CPU ({wall:.2f} s wall)"


@pytest.fixture
def merged_csv(tmp_path, monkeypatch):
    """A merged table of 30 anime with one poster each and three genres, in a fresh data dir."""
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    genres = ["Action", "Comedy", "Drama"]
    rows = [{"anime_id": i, "image_path": f"poster_{i}.jpg", "name": f"anime {i}", "type": "TV", "episodes": 12,
             "genres": ", ".join([g for g in genres if rng.random() < 0.5] or ["Drama"])} for i in range(30)]
    path = tmp_path / "merged.csv"
    pd.DataFrame(rows).assign(**{c: pd.NA for c in POST_RELEASE_COLUMNS}).to_csv(path, index=False)
    return path


def labels_step():
    import runpy

    return runpy.run_path(str(ROOT / "GenreClassification" / "01_make_labels.py"))["main"]


def run_records(data_dir, step):
    return [json.loads(path.read_text()) for path in sorted((data_dir / "runs").glob(f"{step}_*.json"))]


def test_config_file_sets_flags_and_the_command_line_wins(merged_csv, tmp_path):
    config = tmp_path / "labels.yaml"
    config.write_text("top: 2\nseed: 7\n")
    main = labels_step()
    main(["--merged", str(merged_csv), "--config", str(config), "--top", "3"])

    record, = run_records(tmp_path / "data", "genres_01_make_labels")
    assert record["settings"]["top"] == 3 and record["settings"]["seed"] == 7 and record["seed"] == 7
    assert len(record["metrics"]["genres"]) == 3 and record["metrics"]["posters"] == 30
    assert record["inputs"]["merged"] and record["wall_seconds"] >= 0 and record["versions"]["python"]
    assert json.loads((tmp_path / "data" / "genres" / "genres.json").read_text())["genres"] == \
        record["metrics"]["genres"]


def test_config_with_an_unknown_setting_is_one_error_naming_it(merged_csv, tmp_path):
    config = tmp_path / "labels.json"
    config.write_text(json.dumps({"top": 2, "epochs": 3}))
    with pytest.raises(PipelineError, match="unknown setting.*epochs"):
        labels_step()(["--merged", str(merged_csv), "--config", str(config)])
    assert not (tmp_path / "data" / "genres").exists()


def test_a_missing_model_names_the_file_and_the_step_that_makes_it(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "AnimeScorePredictionOnlyPoster" / "02_gradcam.py"),
                           "--model", str(tmp_path / "absent.h5")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "ANIMEML_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line, = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "absent.h5" in line and "01_train_vision_model.py" in line
