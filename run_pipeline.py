"""Run the numbered steps of a task in order, skipping a step whose outputs are up to date.

    python run_pipeline.py                                   # online: Jikan metadata, poster downloads, merge
    python run_pipeline.py --metadata-csv ../shared/data/mal/anime-dataset-2023.csv \\
                           --posters-dir ../shared/data/posters   # offline, from local files
    python run_pipeline.py --task score --yolo-weights ../shared/models/yolov8n_int8.tflite
                                                             # then train, evaluate and analyse the score models
    python run_pipeline.py --task all                        # every offline task, then the report
    python run_pipeline.py --only merge --force              # rerun one step
    python run_pipeline.py --from 05                         # rerun a step and everything after it
    python run_pipeline.py --list --task all                 # show the steps
    python run_pipeline.py --task report                     # data/reports/index.html from what the steps wrote

The score, genres and recommendation tasks start with the data steps (the "data" task is just those). Each step
is also a script of its own (see README.md); this file only chains them.

A step runs when an output is missing, when one of its inputs (a file, or a folder's list of files and sizes) or
its arguments changed since the runner last made its outputs (recorded in data/runs/pipeline_state.json), or with
--force; otherwise it is skipped. Each step says why it runs or skips.
"""
import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from animeml import __version__
from animeml.core import paths
from animeml.core.io import write_json
from animeml.core.runs import fingerprint

SCORE = "AnimeScorePredictionAllParameters"
POSTER = "AnimeScorePredictionOnlyPoster"


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    outputs: Callable[[], list]
    inputs: Callable[[argparse.Namespace], list] = lambda args: []
    args: Callable[[argparse.Namespace], list] = lambda args: []
    always: bool = False  # cheap and reads everything: rerun on every call


def model(stem):
    return paths.models_dir() / f"{stem}.h5"


def metadata_inputs(args):
    return [args.metadata_csv] if args.metadata_csv else []


def metadata_args(args):
    if args.metadata_csv:
        return ["--csv", args.metadata_csv]
    return ["--source", "jikan"] + (["--limit", str(args.limit)] if args.limit else [])


def poster_args(args):
    return ["--from-dir", args.posters_dir] if args.posters_dir else ["--csv", paths.raw_csv()]


DATA_STEPS = [
    Step("score/01_fetch_metadata", f"{SCORE}/01_fetch_metadata.py", lambda: [paths.raw_csv()],
         inputs=metadata_inputs, args=metadata_args),
    Step("score/02_download_posters", f"{SCORE}/02_download_posters.py",
         lambda: [paths.posters_dir() / "posters.csv"],
         inputs=lambda a: [a.posters_dir] if a.posters_dir else [paths.raw_csv()], args=poster_args),
    Step("score/03_merge_data", f"{SCORE}/03_merge_data.py", lambda: [paths.merged_csv()],
         inputs=lambda a: [paths.raw_csv(), paths.posters_dir() / "posters.csv"]),
]
TASKS = {
    "data": DATA_STEPS,
    "score": DATA_STEPS + [
        Step("score/04_train_text_model", f"{SCORE}/04_train_text_model.py", lambda: [model("anime_text_model")],
             inputs=lambda a: [paths.raw_csv()], args=lambda a: a.with_post_release),
        Step("score/05_train_hybrid_model", f"{SCORE}/05_train_hybrid_model.py",
             lambda: [model("anime_hybrid_model")],
             inputs=lambda a: [model("anime_text_model"), paths.merged_csv()], args=lambda a: a.backbone),
        Step("poster/01_train_vision_model", f"{POSTER}/01_train_vision_model.py",
             lambda: [model("anime_vision_only_model")], inputs=lambda a: [paths.merged_csv()],
             args=lambda a: a.backbone),
        Step("score/06_evaluate", f"{SCORE}/06_evaluate.py", lambda: [paths.reports_dir() / "score/score_metrics.csv"],
             inputs=lambda a: [model("anime_text_model"), model("anime_hybrid_model"),
                               model("anime_vision_only_model")]),
        Step("score/07_detect_objects", f"{SCORE}/07_detect_objects.py",
             lambda: [paths.reports_dir() / "analysis/object_score_correlations.csv"],
             inputs=lambda a: [paths.merged_csv()], args=lambda a: ["--weights", a.yolo_weights]),
        Step("score/08_feature_importance", f"{SCORE}/08_feature_importance.py",
             lambda: [paths.reports_dir() / "analysis/anime_hybrid_model_importance.csv"],
             inputs=lambda a: [model("anime_hybrid_model")]),
        Step("poster/02_gradcam", f"{POSTER}/02_gradcam.py", lambda: [paths.reports_dir() / "gradcam/gradcam_posters.csv"],
             inputs=lambda a: [model("anime_vision_only_model")]),
    ],
    "genres": DATA_STEPS + [
        Step("genres/01_make_labels", "GenreClassification/01_make_labels.py",
             lambda: [paths.genres_dir() / "labels.csv"], inputs=lambda a: [paths.merged_csv()]),
        Step("genres/02_train", "GenreClassification/02_train.py", lambda: [model("genres_efficientnet_lite0_bce")],
             inputs=lambda a: [paths.genres_dir() / "labels.csv"]),
        Step("genres/03_evaluate", "GenreClassification/03_evaluate.py", lambda: [paths.genres_dir() / "results.csv"],
             inputs=lambda a: [model("genres_efficientnet_lite0_bce")]),
    ],
    "recommendation": DATA_STEPS[:1] + [
        Step("recommendation/01_build_index", "Recommendation/01_build_index.py",
             lambda: [paths.recommendation_dir() / "synopsis.faiss"], inputs=lambda a: [paths.raw_csv()]),
        Step("recommendation/02_evaluate", "Recommendation/02_evaluate.py",
             lambda: [paths.recommendation_dir() / "evaluation_summary.csv"],
             inputs=lambda a: [paths.recommendation_dir() / "synopsis.faiss"]),
        Step("recommendation/03_benchmark", "Recommendation/03_benchmark.py",
             lambda: [paths.recommendation_dir() / "benchmark.json"],
             inputs=lambda a: [paths.recommendation_dir() / "synopsis.faiss"]),
    ],
    # Needs the fetch step online (Jikan), or --characters-csv with a local characters table.
    "popularity": DATA_STEPS[:1] + [
        Step("score/09_fetch_characters", f"{SCORE}/09_fetch_characters.py", lambda: [paths.raw_csv().with_name(
             "characters.csv")], inputs=lambda a: [paths.raw_csv()] + ([a.characters_csv] if a.characters_csv else []),
             args=lambda a: ["--characters-csv", a.characters_csv] if a.characters_csv else []),
        Step("score/10_train_popularity", f"{SCORE}/10_train_popularity.py",
             lambda: [model("popularity_synopsis-descriptions-portraits_truncated")],
             inputs=lambda a: [paths.raw_csv(), paths.raw_csv().with_name("characters.csv")], args=lambda a: ["--table-11"]),
        Step("score/11_evaluate_popularity", f"{SCORE}/11_evaluate_popularity.py",
             lambda: [paths.reports_dir() / "popularity/table_11.csv"],
             inputs=lambda a: [model("popularity_synopsis-descriptions-portraits_truncated")]),
    ],
    # Reads the face, illustration and tag sets (default: ../shared/data/characters and ../shared/data/tags).
    "characters": [
        Step("characters/01_detect_faces", "CharacterTagging/01_detect_faces.py",
             lambda: [paths.characters_dir() / "detections/faces.csv"]),
        Step("characters/02_train_characters", "CharacterTagging/02_train_characters.py",
             lambda: [model("characters_efficientnet_lite0")]),
        Step("characters/03_train_tagger", "CharacterTagging/03_train_tagger.py", lambda: [model("tags_efficientnet_lite0")]),
        Step("characters/04_tune_detector", "CharacterTagging/04_tune_detector.py",
             lambda: [paths.characters_dir() / "detector_settings.csv"],
             inputs=lambda a: [model("characters_efficientnet_lite0")]),
    ],
}


# The report reads what every other step wrote; "all" ends with it.
REPORT = Step("report/report", "report.py", lambda: [paths.reports_dir() / "index.html"], always=True)
OFFLINE_TASKS = ["data", "score", "genres", "recommendation", "characters"]


def steps_of(task):
    if task == "report":
        return [REPORT]
    if task == "all":
        return list(dict.fromkeys(step for name in OFFLINE_TASKS for step in TASKS[name])) + [REPORT]
    return TASKS[task]


def find_step(steps, key):
    """A step by its full name (`score/03_merge_data`), its script stem, its number (`03`, or `poster/01` with the
    folder) or a part of its words (`merge`, `gradcam`); a key that fits several steps is an error."""
    def matches(step):
        folder, stem = step.name.split("/")
        number, _, rest = stem.partition("_")
        return key in (step.name, stem, number, f"{folder}/{number}") or key in rest
    found = [i for i, step in enumerate(steps) if matches(step)]
    if len(found) != 1:
        problem = "matches " + ", ".join(steps[i].name for i in found) if found else "is not a step"
        sys.exit(f"error: {key!r} {problem}; steps: {', '.join(s.name for s in steps)}")
    return found[0]


def producer_of(path, steps):
    return next((s.name for s in steps if path in s.outputs()), None)


def state_path():
    return paths.data_dir() / "runs" / "pipeline_state.json"


def read_state():
    """What the runner recorded when it last made each step's outputs; an unreadable file counts as no record."""
    try:
        state = json.loads(state_path().read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def step_record(step, args):
    """The inputs' fingerprints and the arguments a run of `step` depends on."""
    return {"inputs": {str(p): fingerprint(p) for p in step.inputs(args)},
            "args": [str(a) for a in step.args(args)]}


def why_run(step, args, state):
    """The reason `step` must run, or None when its outputs are up to date."""
    if args.force:
        return "forced"
    if step.always:
        return "it reads every step's outputs"
    missing = [p for p in step.outputs() if not p.is_file()]
    if missing:  # a folder of an output's name is not the output: the step runs and says what is in the way
        return f"{missing[0]} is {'not a file' if missing[0].exists() else 'missing'}"
    last = state.get(step.name)
    if last is None:
        return None
    now = step_record(step, args)
    changed = [name for name, digest in now["inputs"].items() if last.get("inputs", {}).get(name) != digest]
    if changed:
        return f"input changed: {changed[0]}"
    if now["args"] != last.get("args"):
        return f"arguments changed: {' '.join(last.get('args', []))!r} -> {' '.join(now['args'])!r}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(TASKS) + ["report", "all"], default="data",
                        help="which steps follow the data steps (default: none, just data); report writes "
                             "data/reports/index.html from what the steps wrote; all = every offline task, then "
                             "the report (popularity needs Jikan online or --characters-csv)")
    parser.add_argument("--metadata-csv", type=Path, help="Kaggle 2023 layout CSV instead of fetching from Jikan")
    parser.add_argument("--posters-dir", type=Path, help="local posters folder (with posters.csv) instead of downloads")
    parser.add_argument("--limit", type=int, help="fetch at most N anime from Jikan")
    parser.add_argument("--characters-csv", type=Path, help="popularity: a local characters table (anime_id, "
                        "character_id, name, role, about, image_url) instead of fetching from Jikan")
    parser.add_argument("--yolo-weights", default="yolov8n.pt", help="YOLO weights for object counts (offline: a "
                        "local file such as ../shared/models/yolov8n_int8.tflite)")
    parser.add_argument("--backbone", type=lambda b: ["--backbone", b], default=[],
                        help="image backbone of the score models (default: the scripts' efficientnet_lite0)")
    parser.add_argument("--with-post-release", action="store_const", const=["--with-post-release"], default=[],
                        help="let the text model use fields known only after release")
    parser.add_argument("--data-dir", type=Path, help="where data/ lives (default: data/ in the project)")
    parser.add_argument("--force", action="store_true", help="rerun steps even if their outputs exist")
    parser.add_argument("--only", metavar="STEP", help="run just this step (e.g. 03, merge_data, poster/02)")
    parser.add_argument("--from", dest="start", metavar="STEP", help="run this step and all after it, forced")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--version", action="version", version=f"animeml {__version__}")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["ANIMEML_DATA_DIR"] = str(args.data_dir.resolve())

    steps = steps_of(args.task)
    if args.list:
        for step in steps:
            print(f"{step.name:34} {step.script}")
        return
    if args.only:
        selected = [steps[find_step(steps, args.only)]]
    elif args.start:
        selected, args.force = steps[find_step(steps, args.start):], True
    else:
        selected = steps

    state = read_state()
    for step in selected:
        reason = why_run(step, args, state)
        if reason is None:
            made = "by this runner, inputs and arguments unchanged" if step.name in state else \
                "(no record of how: made outside the runner)"
            print(f"skip {step.name}: outputs exist {made}; --force reruns")
            continue
        for needed in step.inputs(args):
            if not Path(needed).exists():
                maker = producer_of(needed, steps_of("all"))
                if maker is None:
                    sys.exit(f"error: {step.name} needs {needed}, which does not exist")
                sys.exit(f"error: {step.name} needs {needed}, which step {maker} makes: run it first "
                         f"(python run_pipeline.py --task {args.task} --only {maker})")
        print(f"run {step.name} ({reason}): {step.script}", flush=True)
        record = step_record(step, args)
        command = [sys.executable, str(paths.ROOT / step.script)] + [str(a) for a in step.args(args)]
        if subprocess.run(command).returncode != 0:
            sys.exit(f"error: {step.name} failed; later steps not run")
        state[step.name] = record
        write_json(state, state_path())

if __name__ == "__main__":
    main()
