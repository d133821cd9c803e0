"""Step 02 (recommendation): how often a top-k list holds another entry of the query's own franchise.

    python Recommendation/02_evaluate.py                  # every anime whose franchise has 2+ entries
    python Recommendation/02_evaluate.py --limit 2000     # a seeded sample of them

Positives are the other entries with the query's franchise key (derived from titles, see animeml/recommend.py;
the recommender itself never looks at titles). Methods: hybrid, metadata only (alpha = 1), synopsis only
(alpha = 0, queries that have a synopsis), popularity (the k anime with most members: one list for every query,
so it cannot use the franchise) and k random anime; each leaves out only the query. Also the mean genre Jaccard
between the query and its top k. Writes data/recommendation/evaluation.csv (one row per query and method) and
evaluation_summary.csv (hit rate with a 95% normal-approximation interval, per subset of queries) to --out-dir.
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(k=10, alpha=0.5, seed=0)  # alpha: ALPHA of animeml/recommendation.py
METHODS = ["hybrid", "metadata only", "synopsis only", "popularity", "random"]


def summarise(results, k):
    import numpy as np
    import pandas as pd

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


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("-k", type=cli.positive_int, default=SETTINGS["k"], help="length of each top-k list")
    parser.add_argument("--alpha", type=cli.probability, default=SETTINGS["alpha"],
                        help="weight of metadata in the hybrid, in [0, 1]")
    parser.add_argument("--limit", type=cli.positive_int, help="evaluate a seeded sample of this many queries")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"], help="seed of the sample and random lists")
    parser.add_argument("--csv", type=Path, help="anime table in the Kaggle 2023 layout (default: the catalogue "
                                                 "saved with the index by 01_build_index.py)")
    parser.add_argument("--index-dir", type=Path, help="folder of the index (default: data/recommendation)")
    cli.add_out_dir(parser, "folder for the two CSVs (default: data/recommendation)")
    args = cli.parse(parser, argv)

    import numpy as np

    from animeml.core.io import PipelineError, write_csv
    from animeml.recommendation import evaluate, franchise_queries, load_recommender

    out_dir = cli.out_dir(args, paths.recommendation_dir())
    rec = load_recommender(args.csv, args.index_dir or paths.recommendation_dir())
    queries = franchise_queries(rec)
    if not len(queries):
        raise PipelineError("no anime shares its franchise with another: nothing to evaluate")
    if args.limit and args.limit < len(queries):
        queries = np.sort(np.random.default_rng(args.seed).choice(queries, args.limit, replace=False))
    results = evaluate(rec, queries, args.k, args.alpha, args.seed)
    write_csv(results, out_dir / "evaluation.csv")
    summary = summarise(results, args.k)
    write_csv(summary, out_dir / "evaluation_summary.csv")
    print(f"{len(queries)} queries of {rec.n} anime (franchise with 2+ entries), alpha={args.alpha}, k={args.k}")
    print(summary.to_string(index=False))
    print(f"wrote {out_dir / 'evaluation.csv'} and {out_dir / 'evaluation_summary.csv'}")


if __name__ == "__main__":
    cli.run(main)
