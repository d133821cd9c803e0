"""A recommend.py query stays light: the set-field Jaccard equals the sparse-matrix product it replaced, and a query
process loads none of scipy, scikit-learn, TensorFlow, torch, pandas or pyarrow."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
from scipy import sparse

from animeml.core.paths import ROOT
from animeml.core.fields import split_list
from animeml.recommendation import ItemSets, save_index


def sparse_shared(column, row):
    """The replaced computation: a multi-hot float32 CSR matrix times the query row's 0/1 vector."""
    vocabulary = sorted({item for text in column for item in split_list(text)})
    dense = np.array([[item in split_list(text) for item in vocabulary] for text in column], dtype=np.float32)
    matrix = sparse.csr_matrix(dense)
    return matrix @ dense[row], np.asarray(matrix.sum(axis=1)).ravel()


def test_item_sets_count_what_the_sparse_product_counted():
    rng = np.random.default_rng(0)
    items = ["Action", "Drama", "Sci-Fi", "Comedy", " Romance", "Sports"]
    texts = [None if rng.random() < 0.3 else ", ".join(rng.choice(items, rng.integers(1, 5))) for _ in range(200)]
    texts[:3] = ["Action, Action, ", "", " , Drama"]  # repeats, blank lists and blank items
    column = pd.Series(texts, dtype="string")
    sets = ItemSets(column)
    for row in range(len(texts)):
        shared, sizes = sparse_shared(column.to_numpy(dtype=object, na_value=None), row)
        np.testing.assert_array_equal(sets.sizes, sizes)
        assert sets.sizes.dtype == sizes.dtype == np.float32
        if sizes[row]:
            np.testing.assert_array_equal(sets.shared_with(row), shared)
            assert sets.shared_with(row).dtype == shared.dtype


QUERY = """
import json, runpy, sys
main = runpy.run_path(sys.argv[1], run_name="query")["main"]
main(["--title", "Star Hunters", "-k", "2", "--index-dir", sys.argv[2]])
heavy = ["scipy", "sklearn", "tensorflow", "keras", "torch", "transformers", "sentence_transformers", "pandas",
         "pyarrow"]
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def test_a_query_loads_no_heavy_library(tmp_path):
    table = pd.DataFrame({
        "anime_id": [1, 2, 3], "name": ["Star Hunters", "Star Hunters 2", "Cake Club"],
        "english_name": [None] * 3, "other_name": [None] * 3, "genres": ["Action, Sci-Fi", "Action", "Comedy"],
        "studios": ["Sunrise", None, "Kyoto Animation"], "producers": [None] * 3, "type": ["TV", "TV", "TV"],
        "source": [None] * 3, "episodes": [26, 13, 12], "duration_min": [24.0, 24.0, 24.0], "score": [8.7, 8.4, 7.1],
        "year": [1998, 1999, 2009]})
    vectors = np.eye(3, 4, dtype=np.float32)
    save_index(tmp_path, table["anime_id"], vectors, table)
    done = subprocess.run([sys.executable, "-c", QUERY, str(ROOT / "Recommendation" / "recommend.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "Star Hunters 2" in "\n".join(out[:-1])
    assert json.loads(out[-1]) == []
