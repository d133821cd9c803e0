"""Inputs of the score models: the saved split, the metadata encoding (fit on train only) and the synopsis embedding.

    spec = fit_metadata_encoder(train_table, with_post_release=False)
    X, columns, groups = encode_metadata(table, spec)  # groups: {"genres": [start, end), ...} inside X
    inputs = model_inputs(table, sidecar)              # {"metadata": X, "synopsis": E} for a saved model

Every group carries its own `missing` indicator column, always its last: most rows of the table lack type,
studios, source and year, and a silent zero would read as a real value. The title contributes a few flags
(sequel, movie, special, subtitle) known before release.
"""
import sys

import numpy as np
import pandas as pd

from animeml import paths
from animeml.embeddings import embed_texts
from animeml.metadata import KAGGLE_COLUMNS, POST_RELEASE_COLUMNS, clean_table, read_anime_table, split_list
from animeml.splits import load_or_make_split

# sentence-transformers imports triton when present; triton's C extension segfaults once TensorFlow is loaded,
# and the score models need both in one process. Triton only serves CUDA kernels, so hide it.
sys.modules.setdefault("triton", None)

SPLIT_SEED = 42
LIST_COLUMNS = ["genres", "studios"]  # comma-separated, multi-hot
CATEGORY_COLUMNS = ["type", "source", "rating"]  # one-hot
LOG_NUMBER_COLUMNS = ["episodes", "duration_min"] + POST_RELEASE_COLUMNS  # heavy-tailed: log1p, then z-score
GROUP_ORDER = ["genres", "type", "episodes", "source", "studios", "year", "duration_min", "rating", "title"]
# What a title says before release: sequels, movies and specials score differently from first seasons.
TITLE_PATTERNS = {
    "sequel": r"season|\b2nd\b|\b3rd\b|\b\d+th\b|\bII+\b|\b[2-9]\b|part \d|final|shippuuden|zoku|kan\b|!!",
    "movie": r"movie|gekijouban|film",
    "special": r"special|ova|oad|recap|picture drama|mini|petit|chibi|\bcm\b|pv",
    "subtitle": r":",
}
MIN_COUNT = 5  # a category seen fewer times in train is encoded as `other`


def split_path():
    return paths.data_dir() / "splits" / "score_split.csv"


def score_split(anime_ids):
    """train/val/test of each id, from the one split every score model shares. The split is made once over
    all scored anime of data/raw/anime.csv, so poster and non-poster anime are split together."""
    path = split_path()
    if not path.exists():
        table = read_anime_table(paths.raw_csv())
        load_or_make_split(path, table.loc[table["score"].notna(), "anime_id"].to_numpy(), seed=SPLIT_SEED)
    return load_or_make_split(path, np.asarray(anime_ids, dtype="int64"))


def as_anime_table(table):
    """The cleaned snake_case table, whether `table` is already cleaned (read_merged, read_anime_table) or
    still in the Kaggle 2023 layout (read_kaggle_csv)."""
    if "Genres" in table.columns:
        return clean_table(table.reindex(columns=KAGGLE_COLUMNS))
    return table


def _values(table, column):
    """Each row's values of `column` as a list (empty when missing)."""
    if column not in table.columns:
        return [[] for _ in range(len(table))]
    if column in LIST_COLUMNS:
        return [split_list(v) for v in table[column]]
    return [[] if pd.isna(v) else [str(v)] for v in table[column]]


def _numbers(table, column):
    values = pd.to_numeric(table[column], errors="coerce") if column in table.columns else pd.Series(
        np.nan, index=table.index)
    values = values.astype(float).to_numpy()
    return np.log1p(np.clip(values, 0, None)) if column in LOG_NUMBER_COLUMNS else values


def fit_metadata_encoder(train, with_post_release=False):
    """Vocabularies and scalings learned from the training rows only; JSON-serialisable."""
    train = as_anime_table(train)
    spec = {"vocabularies": {}, "scalings": {}, "groups": []}
    numeric = ["episodes", "year", "duration_min"] + (POST_RELEASE_COLUMNS if with_post_release else [])
    for column in GROUP_ORDER + (POST_RELEASE_COLUMNS if with_post_release else []):
        if column == "title":
            pass  # fixed patterns, nothing to learn
        elif column in numeric:
            known = _numbers(train, column)
            known = known[~np.isnan(known)]
            mean, std = (float(known.mean()), float(known.std()) or 1.0) if len(known) else (0.0, 1.0)
            spec["scalings"][column] = [mean, std]
        else:
            counts = pd.Series([v for row in _values(train, column) for v in row]).value_counts()
            spec["vocabularies"][column] = sorted(counts[counts >= MIN_COUNT].index.tolist())
        spec["groups"].append(column)
    return spec


def encode_metadata(table, spec):
    """(X float32 [n, M], column names, {group: [start, end)}) for the rows of `table`."""
    table = as_anime_table(table)
    blocks, columns, groups = [], [], {}
    for group in spec["groups"]:
        start = len(columns)
        if group == "title":
            names = table["name"] if "name" in table.columns else pd.Series(np.nan, index=table.index, dtype=object)
            blocks += [names.str.contains(pattern, case=False, regex=True).fillna(False).to_numpy(float)
                       for pattern in TITLE_PATTERNS.values()] + [names.isna().to_numpy()]
            columns += [f"title={flag}" for flag in TITLE_PATTERNS] + ["title_missing"]
        elif group in spec["scalings"]:
            mean, std = spec["scalings"][group]
            values = _numbers(table, group)
            missing = np.isnan(values)
            blocks += [np.where(missing, 0.0, (values - mean) / std), missing]
            columns += [group, f"{group}_missing"]
        else:
            vocabulary = spec["vocabularies"][group]
            index = {v: i for i, v in enumerate(vocabulary)}
            block = np.zeros((len(table), len(vocabulary) + 2))
            for row, values in enumerate(_values(table, group)):
                for value in values:
                    block[row, index.get(value, len(vocabulary))] = 1.0
                block[row, -1] = not values
            blocks += list(block.T)
            columns += [f"{group}={v}" for v in vocabulary] + [f"{group}_other", f"{group}_missing"]
        groups[group] = [start, len(columns)]
    return np.stack(blocks, axis=1).astype(np.float32), columns, groups


def metadata_layout(spec):
    """(column names, {group: [start, end)}) of the metadata input that `spec` encodes."""
    return encode_metadata(pd.DataFrame(), spec)[1:]


def model_inputs(table, sidecar):
    """The non-image inputs of a saved model (by input name) for the rows of `table`, encoded with the
    vocabulary and scaling stored in its sidecar."""
    inputs = {}
    if "metadata" in sidecar["inputs"]:
        inputs["metadata"] = encode_metadata(table, sidecar["encoder"])[0]
    if "synopsis" in sidecar["inputs"]:
        inputs["synopsis"] = embed_texts(as_anime_table(table)["synopsis"], model=sidecar["embedding_model"])
    return inputs
