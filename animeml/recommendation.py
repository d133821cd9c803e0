"""Content-based anime recommendation: metadata similarity, synopsis cosine similarity, and their blend.

For a query anime q and every anime i of the catalogue at once:

    metadata(q, i) = sum_f w_f s_f(q, i) / max(sum_f w_f, MIN_SHARED_WEIGHT)   over the fields q and i both have
                     s_f = Jaccard of the two sets (set fields), 1 - |a - b| / catalogue range (number fields)
    text(q, i)     = cosine of the L2-normalised synopsis embeddings (stored as a FAISS inner-product index)
    hybrid(q, i)   = ALPHA * minmax(metadata) + (1 - ALPHA) * minmax(text)

Missing data: most rows lack studios, producers, type, source, duration and year, so the weights are renormalised
over the fields both anime have; MIN_SHARED_WEIGHT keeps a match on one minor field alone (same episode count,
nothing else known) from looking perfect. Only ~9k of 24k anime have a synopsis: after min-max scaling a missing
part of the hybrid gets the median of that part (no evidence either way), so an anime without a synopsis is still
recommended on its metadata; when the query itself has no synopsis, its hybrid is its metadata part alone.

Set fields are kept as (anime, item) pairs sorted both ways (ItemSets), so Jaccard for the whole catalogue is a
count of the anime that have each of the query's items; one query is a few such counts per field, one dense product
with the synopsis vectors of the FAISS index (every cosine is needed for the blend, so an exhaustive product beats a
k-nearest search) and array arithmetic.

A query reads only the columns it scores with (`catalogue_columns.json`, written beside the index) and never
imports pandas, which takes longer to import than the rest of a query; the whole table (`catalogue.parquet`) is
read when details, search or the evaluation ask for it.

Franchise: the table has no franchise column, so `franchise_key` derives one from the romaji title: the part
before the first ":" or " - " (the subtitle), without parentheses, punctuation, numbers, roman numerals and words
such as season / movie / OVA / specials / recap ("Shingeki no Kyojin Season 2" -> "shingeki no kyojin"); when
the part before ":" is shorter than 4 letters ("Re:Zero ...", "AU: ...") the whole title is kept instead.
"""
import json
import math
import sqlite3
import statistics
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process, utils

from animeml.core.fields import franchise_key, split_list
from animeml.core.io import PipelineError, atomic_path

ALPHA = 0.5  # weight of the metadata part of the hybrid score; 1 - ALPHA goes to the synopsis cosine
SET_WEIGHTS = {"genres": 3.0, "studios": 1.0, "producers": 0.5, "type": 0.5, "source": 0.5}
NUMBER_WEIGHTS = {"episodes": 0.5, "duration_min": 0.5, "score": 1.0, "year": 1.0}
LOG_SCALE = {"episodes", "duration_min"}  # 12 vs 24 episodes differ as much as 50 vs 100
MIN_SHARED_WEIGHT = 4.0  # = genres + score: the evidence needed for a similarity to reach 1
MATCH_THRESHOLD = 88  # rapidfuzz ratio (0-100) above which a non-exact title is taken as a typo of a real one
NAME_COLUMNS = ["name", "english_name", "other_name"]
BUILD_STEP = "Recommendation/01_build_index.py"
TEXT_COLUMNS = NAME_COLUMNS + list(SET_WEIGHTS)  # genres is a set field; score a number field
QUERY_COLUMNS = ["anime_id"] + TEXT_COLUMNS + list(NUMBER_WEIGHTS)
INDEX_FILE, IDS_FILE = "synopsis.faiss", "synopsis_ids.npy"
CATALOGUE_FILE, COLUMNS_FILE = "catalogue.parquet", "catalogue_columns.json"


class TitleNotFound(PipelineError):
    """No title matches well; `suggestions` holds the closest names."""

    def __init__(self, query, suggestions):
        self.suggestions = suggestions
        super().__init__(f"no anime matches {query!r} well; did you mean: {'; '.join(suggestions)}?")


@dataclass
class Recommendation:
    """Scores of every anime against its closest query row (the favourite it is recommended because of)."""
    scores: np.ndarray  # hybrid score (NaN for the query rows themselves)
    metadata: np.ndarray  # raw metadata similarity (NaN: no shared field)
    text: np.ndarray  # raw synopsis cosine (NaN: a synopsis is missing)
    closest: np.ndarray  # the query row with the highest hybrid score


class Recommender:
    """The catalogue as arrays: item sets, scaled numbers, and the synopsis embeddings. `columns` holds the
    QUERY_COLUMNS (`query_columns`); `table` is the whole catalogue as a DataFrame, or a function that reads it
    when first asked (a query never does)."""

    def __init__(self, columns, text_ids, text_vectors, table):
        self.columns = columns
        self._table = table
        self.n = len(columns["anime_id"])
        self.row_of = {int(anime_id): row for row, anime_id in enumerate(columns["anime_id"])}
        self.sets = {field: ItemSets(columns[field]) for field in SET_WEIGHTS}
        self.numbers, self.spans, self.present = {}, {}, {}
        for field in NUMBER_WEIGHTS:
            values = columns[field]
            self.numbers[field] = np.log1p(values) if field in LOG_SCALE else values
            finite = self.numbers[field][np.isfinite(self.numbers[field])]
            self.spans[field] = max(float(finite.max() - finite.min()), 1e-9) if len(finite) else 1.0
        for field in SET_WEIGHTS:
            self.present[field] = (self.sets[field].sizes > 0).astype(np.float64)
        for field in NUMBER_WEIGHTS:
            self.present[field] = np.isfinite(self.numbers[field]).astype(np.float64)

        rows = np.array([self.row_of.get(int(i), -1) for i in np.asarray(text_ids)], dtype=np.int64)
        known = rows >= 0  # an embedded anime that is not in the catalogue is left out
        self.vectors = np.ascontiguousarray(np.asarray(text_vectors, dtype=np.float32)[known])
        self.text_rows = rows[known]
        self.text_position = np.full(self.n, -1)
        self.text_position[self.text_rows] = np.arange(len(self.text_rows))

    @classmethod
    def from_table(cls, table, text_ids, text_vectors):
        """The recommender over a cleaned anime table (`read_anime_table`)."""
        table = table.reset_index(drop=True)
        return cls(query_columns(table), text_ids, text_vectors, table)

    @cached_property
    def table(self):
        """The whole catalogue (every column) as a DataFrame, the name and genre columns as strings."""
        table = self._table() if callable(self._table) else self._table
        for col in TEXT_COLUMNS:
            table[col] = table[col].astype("string")  # an all-missing column would be float
        return table

    def name(self, row):
        return self.columns["name"][row]

    # Derived only when a query needs them: a single recommendation never looks at franchises or genre sets.
    @cached_property
    def franchise(self):
        return np.array([franchise_key(name) for name in self.columns["name"]], dtype=object)

    @cached_property
    def genre_sets(self):
        return np.array([frozenset(split_list(g)) for g in self.columns["genres"]], dtype=object)

    @cached_property
    def titles(self):
        return [(unicodedata.normalize("NFKC", t), row) for col in NAME_COLUMNS
                for row, t in enumerate(self.columns[col]) if isinstance(t, str)]

    @classmethod
    def load(cls, table, index_dir):
        """The recommender for `table` (None: the catalogue saved with the index) with the FAISS index and ids
        written by Recommendation/01_build_index.py. A missing, corrupt or mismatched file is one line naming it
        and that step; nothing is written."""
        ids, vectors = read_index(index_dir)
        if table is not None:
            return cls.from_table(table, ids, vectors)
        columns = read_columns(index_dir)
        return cls(columns, ids, vectors, lambda: read_catalogue(index_dir, columns["anime_id"]))

    # --- similarities for the whole catalogue ----------------------------------------------------------

    def metadata_similarity(self, row):
        """Weighted similarity of every anime to `row` over the fields both have; NaN where they share none."""
        total, weight = np.zeros(self.n), np.zeros(self.n)
        for field, w in SET_WEIGHTS.items():
            sizes = self.sets[field].sizes
            if sizes[row] == 0:
                continue
            shared = self.sets[field].shared_with(row)
            total += w * shared / (sizes + sizes[row] - shared)  # 0 where the anime has no such set
            weight += w * self.present[field]
        for field, w in NUMBER_WEIGHTS.items():
            values = self.numbers[field]
            if np.isnan(values[row]):
                continue
            similarity = 1.0 - np.abs(values - values[row]) / self.spans[field]
            total += w * np.nan_to_num(similarity)
            weight += w * self.present[field]
        with np.errstate(invalid="ignore"):
            return np.where(weight > 0, total / np.maximum(weight, MIN_SHARED_WEIGHT), np.nan)

    def text_similarity(self, row):
        """Synopsis cosine of every anime to `row` (one matrix-vector product); NaN where a synopsis is missing."""
        cosine = np.full(self.n, np.nan)
        position = self.text_position[row]
        if position >= 0:
            cosine[self.text_rows] = self.vectors @ self.vectors[position]
        return cosine

    def hybrid(self, row, alpha=ALPHA, metadata=None, text=None):
        """ALPHA * minmax(metadata) + (1 - ALPHA) * minmax(text), missing parts the median; the query row is NaN."""
        metadata = self.metadata_similarity(row) if metadata is None else metadata
        text = self.text_similarity(row) if text is None else text
        if self.text_position[row] < 0:
            alpha = 1.0
        scores = alpha * minmax(metadata, row) + (1 - alpha) * minmax(text, row)
        scores[row] = np.nan
        return scores

    def recommend(self, rows, alpha=ALPHA):
        """Scores for one query row, or for a favourites list: each anime takes its best score over the list."""
        metadata = np.stack([self.metadata_similarity(r) for r in rows])
        text = np.stack([self.text_similarity(r) for r in rows])
        hybrid = np.stack([self.hybrid(r, alpha, m, t) for r, m, t in zip(rows, metadata, text)])
        best = np.argmax(np.nan_to_num(hybrid, nan=-np.inf), axis=0)
        every = np.arange(self.n)
        scores = np.where(np.isin(every, rows), np.nan, hybrid[best, every])
        return Recommendation(scores, metadata[best, every], text[best, every], np.asarray(rows)[best])

    def top(self, scores, k, exclude_rows=(), exclude_franchises=()):
        """Rows of the `k` highest finite scores, leaving out `exclude_rows` and anime of `exclude_franchises`."""
        scores = np.where(np.isnan(scores), -np.inf, scores)
        scores[list(exclude_rows)] = -np.inf
        if len(exclude_franchises):
            scores[np.isin(self.franchise, list(exclude_franchises))] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        best = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=int)
        return best[np.lexsort((best, -scores[best]))]

    def table_of(self, rows, result, because_of=False):
        """The recommendations as records (one dict per row) with both component scores, and with `because_of`
        the favourite each is recommended because of."""
        records = []
        for rank, row in enumerate(rows, 1):
            record = {"rank": rank, "anime_id": int(self.columns["anime_id"][row]), "name": self.name(row),
                      "genres": self.columns["genres"][row] or "", "score": float(self.columns["score"][row]),
                      "hybrid": round(float(result.scores[row]), 3),
                      "metadata_sim": round(float(result.metadata[row]), 3),
                      "synopsis_cos": round(float(result.text[row]), 3)}
            if because_of:
                record["because_of"] = self.name(result.closest[row])
            records.append(record)
        return records

    # --- titles, search and details -------------------------------------------------------------------

    def match_title(self, query):
        """The row whose Name / English name / Other name matches `query` (exact, else a close typo)."""
        key = utils.default_process(unicodedata.normalize("NFKC", query))
        if not key:
            raise TitleNotFound(query, [])
        # One pass in C: the first title with ratio 100 (equal after processing) is the exact match, as in the
        # order Name, English name, Other name; else the closest.
        names = [title for title, _ in self.titles]
        close = process.extractOne(key, names, scorer=fuzz.ratio, processor=utils.default_process)
        if close and close[1] >= MATCH_THRESHOLD:
            return self.titles[close[2]][1], close[1]
        raise TitleNotFound(query, self.suggest(query))

    def suggest(self, query, limit=5):
        """The `limit` anime whose names are closest to `query` (partial matches count)."""
        names = [title for title, _ in self.titles]
        found = []
        for _, _, i in process.extract(query, names, scorer=fuzz.token_set_ratio, processor=utils.default_process,
                                       limit=limit * 5):
            name = self.name(self.titles[i][1])
            if name not in found:
                found.append(name)
        return found[:limit]

    def search(self, name=None, genres=(), limit=20):
        """Anime whose names contain `name` (case-insensitive) and that have every genre in `genres`."""
        hits = np.ones(self.n, dtype=bool)
        if name:
            names = [self.table[col].str.contains(name, case=False, regex=False, na=False)
                     for col in NAME_COLUMNS]
            hits &= np.logical_or.reduce([found.to_numpy() for found in names])
        wanted = {g.casefold() for g in genres}
        if wanted:
            hits &= np.array([wanted <= {g.casefold() for g in have} for have in self.genre_sets])
        found = self.table.loc[hits, ["anime_id", "name", "english_name", "genres", "episodes", "score"]]
        found = found.sort_values("score", ascending=False, na_position="last").head(limit)
        return found.fillna({"english_name": "", "genres": ""})

    def details(self, row):
        """One anime's fields, its derived franchise key and the other entries of that franchise."""
        fields = self.table.loc[row].dropna()
        fields["franchise"] = self.franchise[row]
        same = np.flatnonzero(self.franchise == self.franchise[row])
        fields["franchise_entries"] = "; ".join(self.table.loc[same[same != row], "name"].head(20))
        fields["has_synopsis_embedding"] = bool(self.text_position[row] >= 0)
        return fields


class ItemSets:
    """A column of comma-separated lists (genres, studios, ...) as the pairs (anime row, item), kept twice: by row
    (the items of one anime) and by item (the anime that have it), so the items every anime shares with one anime
    are a few slices and a count. An item listed twice counts once. (A scipy.sparse matrix does the same but takes
    longer to import than a whole query.)"""

    def __init__(self, column):
        rows, codes, vocabulary = [], [], {}
        for row, text in enumerate(column):
            if text is None:  # most fields are missing for most anime
                continue
            for item in set(split_list(text)):
                rows.append(row)
                codes.append(vocabulary.setdefault(item, len(vocabulary)))
        rows, self.codes = np.asarray(rows, dtype=np.int64), np.asarray(codes, dtype=np.int64)
        self.n = len(column)
        per_row = np.bincount(rows, minlength=self.n)
        self.sizes = per_row.astype(np.float32)
        self.row_start = np.concatenate([[0], np.cumsum(per_row)])  # the pairs are in row order
        self.rows_by_item = rows[np.argsort(self.codes, kind="stable")]
        self.item_start = np.concatenate([[0], np.cumsum(np.bincount(self.codes, minlength=len(vocabulary)))])

    def shared_with(self, row):
        """How many items each anime has in common with `row` (float32, as its sizes)."""
        items = self.codes[self.row_start[row]:self.row_start[row + 1]]
        having = [self.rows_by_item[self.item_start[i]:self.item_start[i + 1]] for i in items]
        return np.bincount(np.concatenate([np.zeros(0, np.int64), *having]), minlength=self.n).astype(np.float32)


def minmax(values, exclude_row):
    """Scale to [0, 1] over the finite values except `exclude_row`; a missing value gets their median."""
    others = values.copy()
    others[exclude_row] = np.nan
    finite = others[np.isfinite(others)]
    if not len(finite):
        return np.zeros_like(values)
    low, high = finite.min(), finite.max()
    scaled = (values - low) / (high - low) if high > low else np.ones_like(values)
    return np.where(np.isfinite(values), scaled, np.median(scaled[np.isfinite(others)]))


# --- the per-item loop that the vectorised scorer replaces (tests and benchmark compare the two) ------------

def python_items(rec):
    """The catalogue as plain Python objects, one dict per anime."""
    vectors = {int(r): rec.vectors[p].tolist() for p, r in enumerate(rec.text_rows)}
    items = []
    for row in range(rec.n):
        item = {f: set(split_list(rec.columns[f][row])) for f in SET_WEIGHTS}
        item.update({f: None if np.isnan(rec.numbers[f][row]) else float(rec.numbers[f][row])
                     for f in NUMBER_WEIGHTS})
        item["vector"] = vectors.get(row)
        items.append(item)
    return items


def hybrid_loop(items, spans, row, alpha=ALPHA):
    """Rec.hybrid(row) computed one anime at a time in pure Python."""
    query = items[row]
    metadata, text = [], []
    for item in items:
        total = weight = 0.0
        for field, w in SET_WEIGHTS.items():
            if query[field] and item[field]:
                total += w * len(query[field] & item[field]) / len(query[field] | item[field])
                weight += w
        for field, w in NUMBER_WEIGHTS.items():
            if query[field] is not None and item[field] is not None:
                total += w * (1.0 - abs(item[field] - query[field]) / spans[field])
                weight += w
        metadata.append(total / max(weight, MIN_SHARED_WEIGHT) if weight else None)
        both = query["vector"] is not None and item["vector"] is not None
        text.append(sum(a * b for a, b in zip(query["vector"], item["vector"])) if both else None)
    if query["vector"] is None:
        alpha = 1.0
    scaled = [_minmax_list(metadata, row), _minmax_list(text, row)]
    return [None if i == row else alpha * scaled[0][i] + (1 - alpha) * scaled[1][i] for i in range(len(items))]


def _minmax_list(values, row):
    others = [v for j, v in enumerate(values) if v is not None and j != row]
    if not others:
        return [0.0] * len(values)
    low, high = min(others), max(others)
    middle = statistics.median((v - low) / (high - low) if high > low else 1.0 for v in others)
    return [middle if v is None else (v - low) / (high - low) if high > low else 1.0 for v in values]


# --- offline evaluation --------------------------------------------------------------------------------------

def franchise_queries(rec):
    """Rows whose franchise has at least one other entry in the table: the evaluation queries."""
    _, franchise_of, sizes = np.unique(rec.franchise.astype(str), return_inverse=True, return_counts=True)
    return np.flatnonzero(sizes[franchise_of] > 1)


def evaluate(rec, queries, k=10, alpha=ALPHA, seed=0):
    """Per query and method: does a top-k entry share the query's franchise, and mean genre Jaccard of the top k.

    Methods: hybrid, metadata only, synopsis only (queries with a synopsis), most members overall (popularity:
    it never sees the franchise), and k random anime. Each leaves out only the query itself.
    """
    import pandas as pd
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    members = pd.to_numeric(rec.table["post_members"], errors="coerce").fillna(-1).to_numpy()
    popular = np.argsort(-members, kind="stable")[:k + 1]
    rows = []
    for row in tqdm(queries, desc="evaluate", unit="query"):
        metadata, text = rec.metadata_similarity(row), rec.text_similarity(row)
        ranked = {
            "hybrid": rec.top(rec.hybrid(row, alpha, metadata, text), k, [row]),
            "metadata only": rec.top(rec.hybrid(row, 1.0, metadata, text), k, [row]),
            "popularity": popular[popular != row][:k],
            "random": rng.choice(np.delete(np.arange(rec.n), row), size=k, replace=False),
        }
        if rec.text_position[row] >= 0:
            ranked["synopsis only"] = rec.top(rec.hybrid(row, 0.0, metadata, text), k, [row])
        for method, top in ranked.items():
            rows.append({"anime_id": rec.columns["anime_id"][row], "method": method,
                         "has_synopsis": rec.text_position[row] >= 0,
                         "hit": bool((rec.franchise[top] == rec.franchise[row]).any()),
                         "genre_jaccard": genre_jaccard(rec.genre_sets[row], rec.genre_sets[top])})
    return pd.DataFrame(rows)


def genre_jaccard(query, others):
    if not query:
        return np.nan
    return float(np.mean([len(query & o) / len(query | o) for o in others])) if len(others) else np.nan


# --- favourites ----------------------------------------------------------------------------------------------

class Favorites:
    """A favourites list kept in a SQLite file: one row per anime id. `readonly` opens an existing file without
    ever creating or changing it. A file that is not a favourites database is one line naming it, and is left as
    it is (nothing is written to it)."""

    def __init__(self, path, readonly=False):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise PipelineError(f"no favourites file {self.path}; add some with Recommendation/favorites.py add TITLE")
        if self.path.is_dir():
            raise PipelineError(f"{self.path} is a folder, not a favourites file")
        fresh = not self.path.exists()
        if fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro" if readonly else self.path,
                                      uri=readonly)
            if not fresh:
                self._check()
            if fresh:
                self.db.execute("CREATE TABLE favorites (anime_id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                                " added_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
                self.db.commit()
        except sqlite3.Error as err:
            raise self._broken(err) from None

    def _check(self):
        """Refuse a corrupt file, or a database of something else, before anything is written to it."""
        if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(favorites)")}
        if not {"anime_id", "name", "added_at"} <= columns:
            raise sqlite3.DatabaseError("it has no favorites table (anime_id, name, added_at)")

    def _broken(self, err):
        return PipelineError(f"favourites file {self.path} is not a readable favourites database ({err}); it was "
                             f"left as it is: move it away and add favourites again with Recommendation/favorites.py "
                             f"add TITLE")

    def add(self, anime_id, name):
        """True if added, False if it was already there."""
        with self.db:
            return self.db.execute("INSERT OR IGNORE INTO favorites (anime_id, name) VALUES (?, ?)",
                                   (int(anime_id), name)).rowcount == 1

    def remove(self, anime_id):
        """True if removed, False if it was not in the list."""
        with self.db:
            return self.db.execute("DELETE FROM favorites WHERE anime_id = ?", (int(anime_id),)).rowcount == 1

    def list(self):
        import pandas as pd

        try:
            rows = self.db.execute("SELECT anime_id, name, added_at FROM favorites ORDER BY added_at, anime_id")
            return pd.DataFrame(rows.fetchall(), columns=["anime_id", "name", "added_at"])
        except sqlite3.Error as err:
            raise self._broken(err) from None

    def close(self):
        self.db.close()


# --- the index files of step 01 ------------------------------------------------------------------------------

def save_index(directory, ids, vectors, table=None):
    """Write the synopsis embeddings as a FAISS inner-product index plus the anime ids of its rows, and `table`
    (the cleaned catalogue) as a Parquet file so that a query need not parse the CSV again."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    with atomic_path(Path(directory) / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(Path(directory) / IDS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(ids, dtype=np.int64))
    if table is not None:
        with atomic_path(Path(directory) / CATALOGUE_FILE) as tmp:
            table.reset_index(drop=True).to_parquet(tmp, index=False)
        columns = {name: [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]
                   for name, values in query_columns(table).items()}
        with atomic_path(Path(directory) / COLUMNS_FILE) as tmp:
            tmp.write_text(json.dumps(columns, ensure_ascii=False), encoding="utf-8")


def read_index(directory):
    """(anime ids, L2-normalised vectors) of the synopsis index; a missing, corrupt or mismatched file is one line
    naming it and the step that rebuilds it. The files are only read."""
    index_path, ids_path = Path(directory) / INDEX_FILE, Path(directory) / IDS_FILE
    for path in (index_path, ids_path):
        if not path.is_file():
            raise PipelineError(f"{path} not found; run {BUILD_STEP} first")
    import faiss

    try:
        index = faiss.read_index(str(index_path))
        vectors = index.reconstruct_n(0, index.ntotal)
    except Exception as err:  # noqa: BLE001  (faiss reports a truncated or foreign file as RuntimeError)
        raise PipelineError(f"{index_path} is not a readable FAISS index ({type(err).__name__}); rebuild it with "
                            f"{BUILD_STEP}") from None
    try:
        ids = np.load(ids_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise PipelineError(f"{ids_path} is not a readable .npy file of anime ids ({type(err).__name__}); rebuild "
                            f"it with {BUILD_STEP}") from None
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise PipelineError(f"{ids_path} does not hold whole-number anime ids (it holds {ids.dtype} of shape "
                            f"{ids.shape}); rebuild it with {BUILD_STEP}")
    if len(ids) != len(vectors):
        raise PipelineError(f"{ids_path} has {len(ids)} ids for the {len(vectors)} vectors of {index_path}: they do "
                            f"not belong together; rebuild both with {BUILD_STEP}")
    return ids, vectors


def load_recommender(csv, index_dir):
    """The recommender over `csv` (any Kaggle 2023 table), or, when `csv` is None, over the catalogue saved with
    the index (fast: no CSV to parse). Warns when data/raw/anime.csv changed after the index was built."""
    import sys

    from animeml.core.paths import raw_csv

    if csv is not None:
        from animeml.core.table import read_anime_table

        return Recommender.load(read_anime_table(csv), index_dir)
    catalogue, raw = Path(index_dir) / CATALOGUE_FILE, raw_csv()
    if catalogue.is_file() and raw.is_file() and raw.stat().st_mtime > catalogue.stat().st_mtime:
        print(f"warning: {raw} changed after the index was built; rerun {BUILD_STEP} to include it",
              file=sys.stderr)
    return Recommender.load(None, index_dir)


def query_columns(table):
    """The QUERY_COLUMNS of a cleaned anime table as arrays: ids, text (None where missing), numbers (NaN)."""
    import pandas as pd

    columns = {"anime_id": table["anime_id"].to_numpy(dtype=np.int64)}
    for col in TEXT_COLUMNS:
        columns[col] = table[col].astype("string").to_numpy(dtype=object, na_value=None)
    for col in NUMBER_WEIGHTS:
        columns[col] = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return columns


def read_columns(directory):
    """The query columns saved with the index (`catalogue_columns.json`); one line naming the file and the step
    that rebuilds it when it is missing, corrupt or incomplete."""
    path = Path(directory) / COLUMNS_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found; run {BUILD_STEP} (or give the table with --csv)")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        columns = {"anime_id": np.asarray(saved["anime_id"], dtype=np.int64)}
        columns.update({col: np.asarray(saved[col], dtype=object) for col in TEXT_COLUMNS})
        columns.update({col: np.asarray(saved[col], dtype=np.float64) for col in NUMBER_WEIGHTS})
        if columns["anime_id"].ndim != 1 or len({len(values) for values in columns.values()}) != 1:
            raise ValueError("columns of different lengths")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"{path} is not a readable table of catalogue columns ({type(err).__name__}); rebuild "
                            f"it with {BUILD_STEP}") from None
    return columns


def read_catalogue(directory, anime_ids=None):
    """The cleaned anime table saved with the index (`catalogue.parquet`); one line naming it when it is missing,
    corrupt, or lists other anime than `anime_ids` (those of the query columns saved with it)."""
    import pandas as pd

    path = Path(directory) / CATALOGUE_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found; run {BUILD_STEP} (or give the table with --csv)")
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001  (pyarrow's errors for a truncated or foreign file vary)
        raise PipelineError(f"{path} is not a readable Parquet table ({type(err).__name__}); rebuild it with "
                            f"{BUILD_STEP}") from None
    if anime_ids is not None and (len(table) != len(anime_ids) or (table["anime_id"] != anime_ids).any()):
        raise PipelineError(f"{path} lists other anime than {COLUMNS_FILE} beside it; rebuild both with "
                            f"{BUILD_STEP}")
    return table
