"""Benchmark: wall time of what a user runs, each a fresh process as from the terminal (Python and library start-up
included): one Recommendation/recommend.py query and AnimeScorePredictionAllParameters/predict_score.py on new anime.

They need a synopsis index and a score model. When data/ has them (data/recommendation/synopsis.faiss,
data/models/anime_text_model.h5) they are used as they are; otherwise this script builds small ones in a temporary
data folder from the first --rows anime of the Kaggle table (Recommendation/01_build_index.py, then
AnimeScorePredictionAllParameters/04_train_text_model.py with --epochs 2 --members 1) and says so: a query then
searches --rows anime instead of about 24,000. predict_score.py scores the newest --predict-rows anime of the table
that have a synopsis, in a data folder of its own with an empty embedding cache: its first run embeds their synopses
with the sentence model (and caches them), the later runs find them cached; both times are printed. It uses the text
model (--kind text: a hybrid model needs the poster steps 02-05).

Each time is the wall time and, in brackets, the CPU time of the script's process: on a machine that other programs
share, the wall time also counts them. The load average before and after the runs is printed with them.

    python benchmarks/bench_end_to_end.py
    python benchmarks/bench_end_to_end.py --rows 300 --predict-rows 50 --repeats 1
"""
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

SETTINGS = dict(
    rows=1500,
    predict_rows=690,
    repeats=3,
)
KAGGLE_CSV = paths.SHARED / "data" / "mal" / "anime-dataset-2023.csv"
STEP_SECONDS = 900


def run_step(script, *args, env):
    """Run one script as a user would; (wall, CPU) seconds of it. A failure stops the benchmark with its error."""
    start, used = time.perf_counter(), children_cpu()
    done = subprocess.run([sys.executable, str(paths.ROOT / script), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=STEP_SECONDS)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise PipelineError(f"{script} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return seconds, children_cpu() - used


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_run(times):
    """'wall s (CPU s)' of the median run by wall time."""
    wall, cpu = sorted(times)[(len(times) - 1) // 2]
    return f"{wall:.2f} s ({cpu:.2f} s CPU)"


def load_average():
    return "/".join(f"{load:.1f}" for load in os.getloadavg())


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--rows", type=cli.positive_int, default=SETTINGS["rows"],
                        help="anime of the temporary index and text model (when data/ has none)")
    parser.add_argument("--predict-rows", type=cli.positive_int, default=SETTINGS["predict_rows"],
                        help="new anime scored by predict_score.py")
    parser.add_argument("--repeats", type=cli.positive_int, default=SETTINGS["repeats"],
                        help="timed runs of each command; the median counts")
    args = cli.parse(parser, argv)

    import pandas as pd

    from animeml.core.table import MISSING, NO_SYNOPSIS

    if not KAGGLE_CSV.exists():
        raise PipelineError(f"{KAGGLE_CSV} not found: the benchmark reads its anime from the shared data")
    table = pd.read_csv(KAGGLE_CSV)
    has_synopsis = ~table["Synopsis"].fillna("").str.strip().isin([*MISSING, NO_SYNOPSIS])
    new_rows = table[has_synopsis].iloc[-args.predict_rows:]  # the newest: the sentence model has work to do
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="bench_end_to_end_") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ)
        index, text_model = paths.recommendation_dir() / "synopsis.faiss", paths.models_dir() / "anime_text_model.h5"
        if index.exists() and text_model.exists():
            print(f"using {index} and {text_model}")
        else:
            env["ANIMEML_DATA_DIR"] = str(tmp / "data")
            subset = tmp / "data" / "raw" / "anime.csv"  # where step 01 would put it: later steps read it there
            subset.parent.mkdir(parents=True)
            table.iloc[:args.rows].to_csv(subset, index=False)
            build = run_step("Recommendation/01_build_index.py", "--csv", subset, env=env)[0]
            train = run_step("AnimeScorePredictionAllParameters/04_train_text_model.py", "--metadata", subset,
                             "--epochs", 2, "--members", 1, env=env)[0]
            text_model = tmp / "data" / "models" / text_model.name
            print(f"no index or text model in {paths.data_dir()}: built them on the first {args.rows} anime in a "
                  f"temporary data folder (index {build:.0f} s, text model {train:.0f} s)")
        new_csv = tmp / "new.csv"
        new_rows.to_csv(new_csv, index=False)
        title = table["Name"].iloc[0]
        query = [run_step("Recommendation/recommend.py", "--title", title, "-k", 10, env=env)
                 for _ in range(args.repeats)]
        cold_cache = {**env, "ANIMEML_DATA_DIR": str(tmp / "predict_data")}  # no synopsis embedded yet
        predict = [run_step("AnimeScorePredictionAllParameters/predict_score.py", "--kind", "text", "--model",
                            text_model, "--csv", new_csv, "--out", tmp / f"scores_{i}.csv", env=cold_cache)
                   for i in range(args.repeats)]
    loads.append(load_average())
    print(f"recommend.py --title {title!r} -k 10: {median_run(query)} end to end (median of {args.repeats}; "
          f"target < 1 s)")
    warm = f", then {median_run(predict[1:])} with the synopses cached" if len(predict) > 1 else ""
    print(f"predict_score.py --kind text on {len(new_rows)} new anime with synopses: {median_run(predict[:1])} "
          f"end to end, embedding them{warm} (target < 30 s for 690)")
    print(f"load average (1/5/15 min) before {loads[0]}, after {loads[1]}")


if __name__ == "__main__":
    cli.run(main)
