"""Step 01 (recommendation): embed every synopsis and save them as a FAISS index with the anime id of each row.

    python Recommendation/01_build_index.py                  # all-MiniLM-L6-v2 (384-d)
    python Recommendation/01_build_index.py --model use      # Universal Sentence Encoder v3 (512-d, numpy only)

Reads data/raw/anime.csv. Writes to --out-dir (data/recommendation/): synopsis.faiss (inner product of
L2-normalised vectors = cosine), synopsis_ids.npy, catalogue.parquet (the cleaned table, so that nothing parses
the CSV again), catalogue_columns.json (the columns a query scores with, read without pandas) and franchises.csv
(the franchise key derived from each title, see animeml/recommendation.py).
Anime without a synopsis stay out of the index and get metadata-only recommendations. The metadata features are
cheap and are rebuilt from the catalogue when the recommender loads.
"""
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(model="minilm", batch_size=16)  # animeml.core.embeddings.BATCH_SIZE: why 16
MODELS = ["minilm", "use"]  # animeml.core.embeddings.DIMS


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--csv", type=Path, help="anime table (default: data/raw/anime.csv)")
    parser.add_argument("--model", choices=MODELS, default=SETTINGS["model"], help="sentence embedding model")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="synopses per embedding batch")
    cli.add_out_dir(parser, "folder to write (default: data/recommendation)")
    args = cli.parse(parser, argv)

    import pandas as pd

    from animeml.core.embeddings import embed_texts
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.fields import franchise_key
    from animeml.core.table import read_anime_table
    from animeml.recommendation import save_index

    out_dir = cli.out_dir(args, paths.recommendation_dir())
    table = read_anime_table(args.csv or paths.raw_csv())
    if table.empty:
        raise PipelineError(f"{args.csv or paths.raw_csv()} has no anime rows")
    with_synopsis = table[table["synopsis"].notna()]
    vectors = embed_texts(with_synopsis["synopsis"], model=args.model, batch_size=args.batch_size)
    save_index(out_dir, with_synopsis["anime_id"].to_numpy(), vectors, table)
    franchises = pd.DataFrame({"anime_id": table["anime_id"], "name": table["name"],
                               "franchise": table["name"].map(franchise_key)})
    write_csv(franchises, out_dir / "franchises.csv")
    shared = franchises["franchise"].duplicated(keep=False)
    print(f"wrote {out_dir}: {len(with_synopsis)} of {len(table)} synopses embedded ({args.model}, "
          f"{vectors.shape[1]}-d); {shared.sum()} anime in {franchises.loc[shared, 'franchise'].nunique()} "
          f"franchises with 2+ entries")


if __name__ == "__main__":
    cli.run(main)
