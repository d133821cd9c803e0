"""Step 01 (recommendation): embed every synopsis and save them as a FAISS index with the anime id of each row.

    python Recommendation/01_build_index.py                  # all-MiniLM-L6-v2 (384-d)
    python Recommendation/01_build_index.py --model use      # Universal Sentence Encoder v3 (512-d, numpy only)

Reads data/raw/anime.csv. Writes data/recommendation/synopsis.faiss (inner product of L2-normalised vectors =
cosine), synopsis_ids.npy, and franchises.csv (the franchise key derived from each title, see animeml/recommend.py).
Anime without a synopsis stay out of the index and get metadata-only recommendations. The metadata features are
cheap (about a second) and are rebuilt from the table when the recommender loads.
"""
import argparse
from pathlib import Path

import pandas as pd

from animeml.core import paths
from animeml.core.cli import run
from animeml.core.io import write_csv
from animeml.core.embeddings import DIMS, embed_texts
from animeml.core.table import read_anime_table
from animeml.core.table import franchise_key
from animeml.recommendation import save_index


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=paths.raw_csv())
    parser.add_argument("--model", choices=list(DIMS), default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=paths.recommendation_dir())
    args = parser.parse_args()

    table = read_anime_table(args.csv)
    with_synopsis = table[table["synopsis"].notna()]
    vectors = embed_texts(with_synopsis["synopsis"], model=args.model, batch_size=args.batch_size)
    save_index(args.out, with_synopsis["anime_id"].to_numpy(), vectors)
    franchises = pd.DataFrame({"anime_id": table["anime_id"], "name": table["name"],
                               "franchise": table["name"].map(franchise_key)})
    write_csv(franchises, args.out / "franchises.csv")
    shared = franchises["franchise"].duplicated(keep=False)
    print(f"wrote {args.out}: {len(with_synopsis)} of {len(table)} synopses embedded ({args.model}, "
          f"{vectors.shape[1]}-d); {shared.sum()} anime in {franchises.loc[shared, 'franchise'].nunique()} "
          f"franchises with 2+ entries")


if __name__ == "__main__":
    run(main)
