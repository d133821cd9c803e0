"""Step 03 (recommendation): latency of one query over the full table, and the vectorised scorer vs a loop.

    python Recommendation/03_benchmark.py --queries 200 --loop-queries 5

Latency: `recommend` (metadata similarity of the whole catalogue, one exact FAISS search, blend) plus the top-k
selection, for random query anime, after a warm-up; median and 95th percentile. Speedup: the same hybrid scores
computed one anime at a time in pure Python (`hybrid_loop`) against the vectorised `Recommender.hybrid`, timed on
the same queries in this run; the largest difference between the two is printed too. Everything runs on one
thread (BLAS included), as the loop does and as one query would inside a server; the load average is recorded
because other jobs on the machine stretch the tail. Writes data/recommendation/benchmark.json (--out).
"""
import json
import os
import time
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(queries=200, loop_queries=5, k=10, seed=0)


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--queries", type=cli.positive_int, default=SETTINGS["queries"],
                        help="queries timed for latency")
    parser.add_argument("--loop-queries", type=cli.positive_int, default=SETTINGS["loop_queries"],
                        help="queries for the loop comparison (slow)")
    parser.add_argument("-k", type=cli.positive_int, default=SETTINGS["k"], help="length of each top-k list")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the query sample")
    parser.add_argument("--csv", type=Path, help="anime table in the Kaggle 2023 layout (default: the catalogue "
                                                 "saved with the index by 01_build_index.py)")
    parser.add_argument("--index-dir", type=Path, help="folder of the index (default: data/recommendation)")
    parser.add_argument("--out", type=Path, help="JSON report to write (default: <index dir>/benchmark.json)")
    args = cli.parse(parser, argv)

    import numpy as np
    from threadpoolctl import threadpool_limits

    from animeml.core.io import PipelineError, write_json
    from animeml.recommendation import hybrid_loop, load_recommender, python_items

    index_dir = args.index_dir or paths.recommendation_dir()
    if args.out is not None and args.out.is_dir():
        raise PipelineError(f"--out {args.out} is a folder; give the name of the JSON file to write")
    rec = load_recommender(args.csv, index_dir)
    if args.queries + args.loop_queries > rec.n:
        raise PipelineError(f"--queries + --loop-queries ({args.queries + args.loop_queries}) is more than the "
                            f"{rec.n} anime of the catalogue")
    rows = np.random.default_rng(args.seed).choice(rec.n, args.queries + args.loop_queries, replace=False)
    query, loop_rows = rows[:args.queries], rows[args.queries:]

    def one_query(row):
        return rec.top(rec.recommend([row]).scores, args.k, [row])

    items = python_items(rec)
    vectorised_s, loop_s, largest_difference = [], [], 0.0
    with threadpool_limits(limits=1):
        for row in query[:10]:
            one_query(row)
        latency_ms = 1000 * np.array([timed(one_query, row)[1] for row in query])
        for row in loop_rows:
            fast, fast_s = timed(rec.hybrid, row)
            slow, slow_s = timed(hybrid_loop, items, rec.spans, row)
            slow = np.array([np.nan if s is None else s for s in slow])
            largest_difference = max(largest_difference, float(np.nanmax(np.abs(fast - slow))))
            vectorised_s.append(fast_s)
            loop_s.append(slow_s)

    report = {
        "catalogue": rec.n, "with_synopsis": len(rec.text_rows), "queries": args.queries,
        "latency_median_ms": round(float(np.median(latency_ms)), 2),
        "latency_p95_ms": round(float(np.percentile(latency_ms, 95)), 2),
        "latency_min_ms": round(float(latency_ms.min()), 2),
        "loop_queries": args.loop_queries,
        "vectorised_hybrid_median_ms": round(1000 * float(np.median(vectorised_s)), 2),
        "loop_hybrid_median_ms": round(1000 * float(np.median(loop_s)), 1),
        "speedup": round(float(np.median(loop_s) / np.median(vectorised_s)), 1),
        "largest_score_difference": largest_difference,
        "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
    write_json(report, args.out or index_dir / "benchmark.json")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)
