"""Inputs of the score models: the saved split, the metadata encoding (fit on train only) and the synopsis embedding,
and the models' files (model_path), all without TensorFlow.

    spec = fit_metadata_encoder(train_table, with_post_release=False)
    X, columns, groups = encode_metadata(table, spec)  # groups: {"genres": [start, end), ...} inside X
    inputs = model_inputs(table, sidecar)              # {"metadata": X, "synopsis": E} for a saved model

Every group carries its own `missing` indicator column, always its last: most rows of the table lack type,
studios, source and year, and a silent zero would read as a real value. The title contributes flags known before
release (sequel, movie, OVA, recap, season number, ...) and its length, title_words its frequent words (multi-hot,
the vocabulary learned on train like the genres'); episodes adds count buckets (one-shot, one cour, ...).

The franchise group carries what earlier entries of the same franchise (animeml.core.table.franchise_key of the
title) scored: the mean, the latest and the count of the scores of TRAIN anime with that key and a smaller
anime_id (MAL ids grow with the time an entry was added, so a smaller id stands for an earlier entry). The train
entries are stored in the encoder (spec["franchise"]), so a new anime is encoded from them at predict time. A
train row is encoded the same way (only other, earlier train entries, never itself), so the feature means the same
for train, validation and test rows, and no validation or test score ever enters it.

The title_neighbours group does the same for titles that are alike without sharing the franchise key (other
romanisations, spin-offs, "Movie 2: ..."): the nearest TRAIN titles with a smaller anime_id by TF-IDF of character
n-grams (fit on the train titles), with their similarities and scores. The train titles, ids and scores are
stored in the encoder (spec["title_neighbours"]); like the franchise group it never sees a row's own score.

The optional neighbours group (fit_metadata_encoder(..., neighbours_model="minilm")) is the similarity-weighted
mean score of the K train anime whose synopsis embeddings are nearest to a row's, never counting the row's own
anime_id, so train rows are encoded leave-self-out like any other row. Its train vectors are numpy arrays in the
spec: score_models.write_sidecar stores them in an .npz beside the model. The anime_id group is the MAL id itself,
known from the day the entry exists: it orders entries by when they were added, and year is missing for most rows.
Genres that are awards (POST_RELEASE_GENRES) are known only after release and are left out.
"""
import bisect
import contextlib
import functools
import re

import numpy as np
import pandas as pd

from animeml.core import paths, store
from animeml.core.embeddings import embed_texts, embedding_ahead
from animeml.core.fields import franchise_key, split_list
from animeml.core.table import KAGGLE_COLUMNS, POST_RELEASE_COLUMNS, clean_table, read_anime_table
from animeml.core.splits import load_or_make_split

MODEL_STEMS = {"vision": "anime_vision_only_model", "hybrid": "anime_hybrid_model", "text": "anime_text_model"}
MODEL_INPUTS = {"vision": ["image"], "hybrid": ["image", "metadata", "synopsis"], "text": ["metadata", "synopsis"]}
SPLIT_SEED = 42
LIST_COLUMNS = ["genres", "studios"]  # comma-separated, multi-hot
CATEGORY_COLUMNS = ["type", "source", "rating"]  # one-hot
LOG_NUMBER_COLUMNS = ["episodes", "duration_min"] + POST_RELEASE_COLUMNS  # heavy-tailed: log1p, then z-score
GROUP_ORDER = ["genres", "type", "episodes", "source", "studios", "year", "duration_min", "rating", "anime_id",
               "title", "title_words", "franchise", "title_neighbours", "neighbours"]
POST_RELEASE_GENRES = {"Award Winning"}
NEIGHBOURS = 10  # train anime averaged by the neighbours group
TITLE_NEIGHBOURS = 5  # nearest earlier train titles of the title_neighbours group
SAME_TITLE = 0.5  # TF-IDF cosine above which an earlier title counts as the same series
# What a title says before release: sequels, movies, specials, recaps and promos score differently from first
# seasons (kind of entry and its place in a series).
TITLE_PATTERNS = {
    "sequel": r"season|\b2nd\b|\b3rd\b|\b\d+th\b|\bII+\b|\b[2-9]\b|part \d|final|shippuuden|zoku|kan\b|!!",
    "movie": r"movie|gekijouban|film",
    "special": r"special|ova|oad|recap|picture drama|mini|petit|chibi|\bcm\b|pv",
    "subtitle": r":",
    "ova": r"\bova\b|\boad\b",
    "specials": r"\bspecials?\b|\bextra\b|\bbonus\b|omake",
    "recap": r"recap|soushuuhen|digest|compilation",
    "season_number": r"season\s*\d|\b\d+(?:st|nd|rd|th) season|\bs\d\b",
    "ordinal": r"\b\d+(?:st|nd|rd|th)\b",
    "ends_in_number": r"\b\d+\s*$|\b(?:ii|iii|iv|v)\s*$",
    "short": r"\bmini\b|petit|chibi|\bshorts?\b|gekijou|theater",
    "promo": r"\bcm\b|\bpv\b|\bpromo|commercial|trailer|\bmv\b|music video",
    "kids": r"\bkun\b|chan\b|\bkids?\b",
    "final": r"final|kanketsu|\bkan\b",
    "picture_drama": r"picture drama|drama cd",
}
# Episode counts as buckets besides the log count: one-shot, short OVA run, one cour, two cours, a year, longer.
EPISODE_BUCKETS = [1, 2, 7, 14, 27, 53]
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


def model_path(kind):
    """data/models/<the kind's stem>.h5: the three score models' files, known without loading TensorFlow."""
    return store.model_file("anime", MODEL_STEMS[kind].removeprefix("anime_"))


def as_anime_table(table):
    """The cleaned snake_case table, whether `table` is already cleaned (read_merged, read_anime_table) or
    still in the Kaggle 2023 layout (read_kaggle_csv)."""
    if "Genres" in table.columns:
        return clean_table(table.reindex(columns=KAGGLE_COLUMNS))
    return table


def _values(table, column):
    """Each row's values of `column` as a list (empty when missing); title_words: the words of the name."""
    if column == "title_words":
        names = table["name"] if "name" in table.columns else pd.Series(np.nan, index=table.index, dtype=object)
        return [sorted(set(re.findall(r"[^\W\d_]{2,}", name.casefold()))) if isinstance(name, str) else []
                for name in names]
    if column not in table.columns:
        return [[] for _ in range(len(table))]
    if column in LIST_COLUMNS:
        return [[v for v in split_list(text) if v not in POST_RELEASE_GENRES] for text in table[column]]
    return [[] if pd.isna(v) else [str(v)] for v in table[column]]


def _numbers(table, column):
    values = pd.to_numeric(table[column], errors="coerce") if column in table.columns else pd.Series(
        np.nan, index=table.index)
    values = values.astype(float).to_numpy()
    return np.log1p(np.clip(values, 0, None)) if column in LOG_NUMBER_COLUMNS else values


def fit_franchise_scores(train):
    """{"scaling": [mean, std] of the train scores, "entries": {franchise key: [[anime_id, score], ...] by id}}
    from the scored train rows that have a name and an id."""
    columns = ["anime_id", "name", "score"]
    known = train.reindex(columns=columns).dropna().sort_values("anime_id")
    scores = known["score"].astype(float)
    entries = {}
    for key, anime_id, score in zip(known["name"].map(franchise_key), known["anime_id"], scores):
        entries.setdefault(key, []).append([int(anime_id), float(score)])
    scaling = [float(scores.mean()), float(scores.std()) or 1.0] if len(scores) > 1 else [0.0, 1.0]
    return {"scaling": scaling, "entries": entries}


def franchise_block(table, franchise):
    """[n, 4]: z-scored mean and latest score of each row's earlier train franchise-mates, log1p of their count,
    and `none known` (also for a row without a name). A row without an anime_id counts as newer than every entry."""
    mean, std = franchise["scaling"]
    names = table["name"] if "name" in table.columns else pd.Series(np.nan, index=table.index, dtype=object)
    ids = pd.to_numeric(table["anime_id"], errors="coerce") if "anime_id" in table.columns else pd.Series(
        np.nan, index=table.index)
    block = np.zeros((len(table), 4))
    for row, (name, anime_id) in enumerate(zip(names, ids.fillna(np.inf))):
        entries = franchise["entries"].get(franchise_key(name), []) if isinstance(name, str) else []
        earlier = [score for _, score in entries[:bisect.bisect_left(entries, [anime_id])]]
        if earlier:
            block[row, :3] = (np.mean(earlier) - mean) / std, (earlier[-1] - mean) / std, np.log1p(len(earlier))
        else:
            block[row, 3] = 1.0
    return block


def fit_title_neighbours(train):
    """The scored train rows with a name and an id: their names, ids and scores (JSON lists), and the scaling."""
    known = train.reindex(columns=["anime_id", "name", "score"]).dropna()
    scores = known["score"].astype(float)
    scaling = [float(scores.mean()), float(scores.std()) or 1.0] if len(scores) > 1 else [0.0, 1.0]
    return {"k": TITLE_NEIGHBOURS, "names": known["name"].astype(str).tolist(),
            "ids": known["anime_id"].astype("int64").tolist(), "scores": scores.tolist(), "scaling": scaling}


def title_neighbours_block(table, title_neighbours, chunk=2048):
    """[n, 7] from each row's K most similar earlier train titles (TF-IDF of character 2-4-grams, cosine; a
    smaller anime_id, so never the row itself): the top similarity and z-scored score, the similarity-weighted
    mean z-score and the mean similarity of the K, the mean z-score and log1p count of those above SAME_TITLE,
    and `none` (no earlier train title shares an n-gram, or the row has no name)."""
    mean, std = title_neighbours["scaling"]
    names = table["name"] if "name" in table.columns else pd.Series(np.nan, index=table.index, dtype=object)
    ids = pd.to_numeric(table["anime_id"], errors="coerce").to_numpy(float) if "anime_id" in table.columns else \
        np.full(len(table), np.nan)
    block = np.zeros((len(table), 7))
    block[:, 6] = 1.0
    if not title_neighbours["names"] or not len(table):
        return block
    vectorizer, train_vectors = title_vectorizer(tuple(title_neighbours["names"]))
    train_ids = np.asarray(title_neighbours["ids"], float)
    train_z = (np.asarray(title_neighbours["scores"]) - mean) / std
    vectors = vectorizer.transform(names.where(names.map(lambda n: isinstance(n, str)), ""))
    k = min(title_neighbours["k"], len(train_ids))
    for start in range(0, len(table), chunk):
        similarity = (vectors[start:start + chunk] @ train_vectors.T).toarray()
        # a row without an id counts as newer than every train entry
        similarity[np.nan_to_num(ids[start:start + chunk], nan=np.inf)[:, None] <= train_ids[None, :]] = 0.0
        weights, top = top_k(similarity, k)
        z = np.where(weights > 0, train_z[top], 0.0)
        same = weights > SAME_TITLE
        rows = block[start:start + chunk]
        rows[:, 0], rows[:, 1] = weights[:, 0], z[:, 0]
        rows[:, 2] = (weights * z).sum(1) / np.maximum(weights.sum(1), 1e-12)
        rows[:, 3] = weights.mean(1)
        rows[:, 4] = np.where(same, z, 0.0).sum(1) / np.maximum(same.sum(1), 1)
        rows[:, 5] = np.log1p(same.sum(1))
        rows[:, 6] = weights[:, 0] == 0
    return block


@functools.lru_cache(maxsize=2)
def title_vectorizer(names):
    """The TF-IDF of character 2-4-grams fit on the train titles `names` (a tuple) and their vectors; fit once per
    process, as a step encodes several tables against the same train titles."""
    # imported here, not at the top: predict_score starts its embedding child before scikit-learn's 1 s of imports
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    return vectorizer, vectorizer.fit_transform(names)


def top_k(similarity, k):
    """([m, k] largest positive values of each row of `similarity`, [m, k] their columns), largest first and ties in
    column order, as a stable argsort of each whole row would give them, but only the candidates at or above each
    row's k-th largest value are sorted; slots past a row's positive values hold 0 (column 0)."""
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    rows, columns = np.nonzero((similarity >= kth[:, None]) & (similarity > 0))
    values = similarity[rows, columns]
    order = np.lexsort((columns, -values, rows))
    rows, columns, values = rows[order], columns[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within its row
    kept = rank < k
    top_values, top_columns = np.zeros((len(similarity), k)), np.zeros((len(similarity), k), dtype=np.int64)
    top_values[rows[kept], rank[kept]] = values[kept]
    top_columns[rows[kept], rank[kept]] = columns[kept]
    return top_values, top_columns


def fit_neighbours(train, model):
    """The train anime with a synopsis: their ids, scores and L2-normalised synopsis embeddings (numpy arrays)."""
    vectors = embed_texts(train["synopsis"], model=model)
    known = (np.linalg.norm(vectors, axis=1) > 0) & train["score"].notna().to_numpy()
    scores = train["score"].to_numpy(float)[known]
    return {"model": model, "k": NEIGHBOURS, "ids": train["anime_id"].to_numpy("int64")[known],
            "scores": scores, "vectors": vectors[known], "scaling": [float(scores.mean()), float(scores.std()) or 1.0]}


def neighbours_block(table, neighbours, chunk=2048):
    """[n, 3]: z-scored similarity-weighted mean score of each row's K nearest train synopses (never its own
    anime_id), their mean cosine similarity, and `missing` (no synopsis)."""
    mean, std = neighbours["scaling"]
    vectors = embed_texts(table["synopsis"], model=neighbours["model"]) if "synopsis" in table.columns else \
        np.zeros((len(table), neighbours["vectors"].shape[1]), np.float32)
    ids = pd.to_numeric(table["anime_id"], errors="coerce").to_numpy() if "anime_id" in table.columns else \
        np.full(len(table), np.nan)
    k = min(neighbours["k"], len(neighbours["ids"]) - 1)
    block = np.zeros((len(table), 3))
    block[:, 2] = np.linalg.norm(vectors, axis=1) == 0
    for start in range(0, len(table) if k > 0 else 0, chunk):
        similarity = vectors[start:start + chunk] @ neighbours["vectors"].T
        similarity[ids[start:start + chunk, None] == neighbours["ids"][None, :]] = -np.inf
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.maximum(np.take_along_axis(similarity, top, axis=1), 1e-6)
        block[start:start + chunk, 0] = ((neighbours["scores"][top] * weights).sum(1) / weights.sum(1) - mean) / std
        block[start:start + chunk, 1] = weights.mean(1)
    block[block[:, 2] == 1, :2] = 0.0
    return block


def fit_metadata_encoder(train, with_post_release=False, with_franchise=True, neighbours_model=None):
    """Vocabularies, scalings, the train franchise scores and (with a neighbours_model) the train synopsis
    embeddings, learned from the training rows only. JSON-serialisable but for spec["neighbours"]."""
    train = as_anime_table(train)
    spec = {"vocabularies": {}, "scalings": {}, "groups": []}
    numeric = ["episodes", "year", "duration_min", "anime_id"] + (POST_RELEASE_COLUMNS if with_post_release else [])
    for column in GROUP_ORDER + (POST_RELEASE_COLUMNS if with_post_release else []):
        if column == "title":
            pass  # fixed patterns, nothing to learn
        elif column == "franchise":
            if not with_franchise:
                continue
            spec["franchise"] = fit_franchise_scores(train)
        elif column == "title_neighbours":
            if not with_franchise:
                continue
            spec["title_neighbours"] = fit_title_neighbours(train)
        elif column == "neighbours":
            if neighbours_model is None:
                continue
            spec["neighbours"] = fit_neighbours(train, neighbours_model)
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
                       for pattern in TITLE_PATTERNS.values()]
            # long titles are often specials and spin-offs ("... : ... Special Episode 2")
            blocks += [np.log1p(names.str.len().fillna(0).to_numpy(float)) - 3.0,
                       names.str.split().str.len().fillna(0).to_numpy(float) / 5.0, names.isna().to_numpy()]
            columns += [f"title={flag}" for flag in TITLE_PATTERNS] + ["title_length", "title_word_count",
                                                                        "title_missing"]
        elif group == "franchise":
            blocks += list(franchise_block(table, spec["franchise"]).T)
            columns += ["franchise_mean", "franchise_latest", "franchise_count", "franchise_missing"]
        elif group == "title_neighbours":
            blocks += list(title_neighbours_block(table, spec["title_neighbours"]).T)
            columns += ["title_neighbours_top_similarity", "title_neighbours_top_score", "title_neighbours_mean",
                        "title_neighbours_similarity", "title_neighbours_same_mean", "title_neighbours_same_count",
                        "title_neighbours_missing"]
        elif group == "neighbours":
            blocks += list(neighbours_block(table, spec["neighbours"]).T)
            columns += ["neighbours_mean", "neighbours_similarity", "neighbours_missing"]
        elif group in spec["scalings"]:
            mean, std = spec["scalings"][group]
            values = _numbers(table, group)
            missing = np.isnan(values)
            blocks.append(np.where(missing, 0.0, (values - mean) / std))
            columns.append(group)
            if group == "episodes":
                counts = np.round(np.expm1(values))
                edges = EPISODE_BUCKETS + [np.inf]
                blocks += [(counts >= low) & (counts < high) for low, high in zip(edges[:-1], edges[1:])]
                columns += [f"episodes={low}-{high - 1:g}" for low, high in zip(edges[:-1], edges[1:])]
            blocks.append(missing)
            columns.append(f"{group}_missing")
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


def model_inputs(table, sidecar, only=None):
    """The non-image inputs of a saved model (by input name; `only` some of them) for the rows of `table`, encoded
    with the vocabulary and scaling stored in its sidecar."""
    inputs = {}
    wanted = [name for name in sidecar["inputs"] if only is None or name in only]
    if "metadata" in wanted:
        inputs["metadata"] = encode_metadata(table, sidecar["encoder"])[0]
    if "synopsis" in wanted:
        inputs["synopsis"] = embed_texts(as_anime_table(table)["synopsis"], model=sidecar["embedding_model"])
    return inputs


def synopses_ahead(table, sidecar):
    """A block during which the synopses that `sidecar`'s model reads are embedded in a child process
    (animeml.core.embeddings.embedding_ahead), so that model_inputs after it finds them cached."""
    if "synopsis" not in sidecar["inputs"]:
        return contextlib.nullcontext()
    return embedding_ahead(as_anime_table(table)["synopsis"], model=sidecar["embedding_model"])
