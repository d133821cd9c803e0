"""Run the numbered steps of the pipeline in order, skipping a step whose outputs already exist.

    python run_pipeline.py                                   # online: Jikan metadata + poster downloads
    python run_pipeline.py --metadata-csv ../shared/data/mal/anime-dataset-2023.csv \\
                           --posters-dir ../shared/data/posters   # offline, from local files
    python run_pipeline.py --only 03 --force                 # rerun one step
    python run_pipeline.py --from 02                         # rerun a step and everything after it

Each step is also a script of its own (see README.md); this file only chains them.
"""
import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from animeml import paths

ALL = "AnimeScorePredictionAllParameters"


@dataclass
class Step:
    name: str
    script: str
    args: Callable[[argparse.Namespace], list]
    outputs: Callable[[argparse.Namespace], list]
    inputs: Callable[[argparse.Namespace], list]


def metadata_args(args):
    if args.metadata_csv:
        return ["--csv", args.metadata_csv]
    return ["--source", "jikan"] + (["--limit", str(args.limit)] if args.limit else [])


def poster_args(args):
    return ["--from-dir", args.posters_dir] if args.posters_dir else ["--csv", paths.raw_csv()]


STEPS = [
    Step("01_metadata", f"{ALL}/01_fetch_metadata.py", metadata_args,
         outputs=lambda a: [paths.raw_csv()], inputs=lambda a: []),
    Step("02_posters", f"{ALL}/02_download_posters.py", poster_args,
         outputs=lambda a: [paths.posters_dir() / "posters.csv"],
         inputs=lambda a: [] if a.posters_dir else [paths.raw_csv()]),
    Step("03_merge", f"{ALL}/03_merge_data.py", lambda a: [],
         outputs=lambda a: [paths.merged_csv()],
         inputs=lambda a: [paths.raw_csv(), paths.posters_dir() / "posters.csv"]),
]


def find_step(key):
    for i, step in enumerate(STEPS):
        if key in (step.name, step.name.split("_", 1)[0], step.name.split("_", 1)[1]):
            return i
    names = ", ".join(s.name for s in STEPS)
    sys.exit(f"error: no step {key!r}; steps are: {names}")


def producer_of(path, args):
    return next((s.name for s in STEPS if path in s.outputs(args)), "an earlier step")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata-csv", type=Path, help="Kaggle 2023 layout CSV instead of fetching from Jikan")
    parser.add_argument("--posters-dir", type=Path, help="local posters folder (with posters.csv) instead of downloads")
    parser.add_argument("--limit", type=int, help="fetch at most N anime from Jikan")
    parser.add_argument("--data-dir", type=Path, help="where data/ lives (default: data/ in the project)")
    parser.add_argument("--force", action="store_true", help="rerun steps even if their outputs exist")
    parser.add_argument("--only", metavar="STEP", help="run just this step (number or name, e.g. 03 or merge)")
    parser.add_argument("--from", dest="start", metavar="STEP", help="run this step and all after it, forced")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["ANIMEML_DATA_DIR"] = str(args.data_dir.resolve())

    if args.list:
        for step in STEPS:
            print(f"{step.name:16} {step.script}")
        return
    if args.only:
        selected = [STEPS[find_step(args.only)]]
    elif args.start:
        selected, args.force = STEPS[find_step(args.start):], True
    else:
        selected = STEPS

    for step in selected:
        outputs = step.outputs(args)
        if not args.force and all(p.exists() for p in outputs):
            print(f"skip {step.name}: {', '.join(str(p) for p in outputs)} exists (--force to rerun)")
            continue
        for needed in step.inputs(args):
            if not needed.exists():
                sys.exit(f"error: {step.name} needs {needed}, which step {producer_of(needed, args)} makes: "
                         f"run it first (python run_pipeline.py --only {producer_of(needed, args)})")
        print(f"run {step.name}: {step.script}", flush=True)
        command = [sys.executable, str(paths.ROOT / step.script)] + [str(a) for a in step.args(args)]
        result = subprocess.run(command)
        if result.returncode != 0:
            sys.exit(f"error: {step.name} failed (exit {result.returncode}); later steps not run")


if __name__ == "__main__":
    main()
