"""Step 02 (recommendation): how often a top-k list holds another entry of the query's own franchise.

    python Recommendation/02_evaluate.py                  # every anime whose franchise has 2+ entries
    python Recommendation/02_evaluate.py --limit 2000     # a seeded sample of them

Positives are the other entries with the query's franchise key (derived from titles, see animeml/recommend.py;
the recommender itself never looks at titles). Methods: hybrid, metadata only (alpha = 1), synopsis only
(alpha = 0, queries that have a synopsis), popularity (the k anime with most members: one list for every query,
so it cannot use the franchise) and k random anime; each leaves out only the query. Also the mean genre Jaccard
between the query and its top k. Writes data/recommendation/evaluation.csv (one row per query and method) and
evaluation_summary.csv (hit rate with a 95% normal-approximation interval, per subset of queries).
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from animeml.core import paths
from animeml.core.cli import run
from animeml.core.io import write_csv
from animeml.core.table import read_anime_table
from animeml.recommendation import ALPHA, Recommender, evaluate, franchise_queries

METHODS = ["hybrid", "metadata only", "synopsis only", "popularity", "random"]


def summarise(results, k):
    subsets = {"all queries": results, "queries with a synopsis": results[results["has_synopsis"]]}
    rows = []
    for subset, part in subsets.items():
        for method, group in part.groupby("method"):
            hit = group["hit"].mean()
            rows.append({"queries": subset, "method": method, "n": len(group), f"hit@{k}": round(hit, 4),
                         "ci95": round(1.96 * np.sqrt(hit * (1 - hit) / len(group)), 4),
                         f"genre_jaccard@{k}": round(group["genre_jaccard"].mean(), 4)})
    summary = pd.DataFrame(rows)
    summary["order"] = summary["method"].map(METHODS.index)
    return summary.sort_values(["queries", "order"]).drop(columns="order")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=ALPHA)
    parser.add_argument("--limit", type=int, help="evaluate a seeded sample of this many queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=paths.raw_csv())
    parser.add_argument("--index-dir", type=Path, default=paths.recommendation_dir())
    parser.add_argument("--out", type=Path, default=paths.recommendation_dir(), help="folder for the two CSVs")
    args = parser.parse_args()

    rec = Recommender.load(read_anime_table(args.csv), args.index_dir)
    queries = franchise_queries(rec)
    if args.limit and args.limit < len(queries):
        queries = np.sort(np.random.default_rng(args.seed).choice(queries, args.limit, replace=False))
    results = evaluate(rec, queries, args.k, args.alpha, args.seed)
    write_csv(results, args.out / "evaluation.csv")
    summary = summarise(results, args.k)
    write_csv(summary, args.out / "evaluation_summary.csv")
    print(f"{len(queries)} queries of {rec.n} anime (franchise with 2+ entries), alpha={args.alpha}, k={args.k}")
    print(summary.to_string(index=False))


if __name__ == "__main__":
    run(main)
