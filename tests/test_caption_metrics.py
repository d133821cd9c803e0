"""Caption scorers against values computed by hand."""
import math

import pytest

from animeml.characters.caption_metrics import (bleu, caption_scores, cider_d, exact_match, lcs_length, rouge_l,
                                                tokenize)


def test_tokenize_lowers_and_drops_punctuation():
    assert tokenize("Blonde hair, blue-eyes.") == ["blonde", "hair", "blue", "eyes"]


def test_identical_captions_score_one_and_ten():
    captions = ["a girl with blonde hair and blue eyes", "a girl with black hair and red eyes"]
    scores = caption_scores(captions, [[c] for c in captions])
    assert scores["BLEU-1"] == scores["BLEU-4"] == pytest.approx(1.0)
    assert scores["ROUGE-L"] == pytest.approx(1.0)
    assert scores["CIDEr-D"] == pytest.approx(10.0)
    assert scores["exact"] == 1.0


def test_exact_match_ignores_case_and_punctuation():
    assert exact_match(["Red hair.", "red hair", "blue"], [["red hair"], ["x", "Red, hair"], ["red"]]) == 2 / 3


def test_bleu_precisions_by_hand():
    # a b c d vs a b c e: unigrams 3/4, bigrams 2/3, trigrams 1/2, no 4-gram in common; same length, no penalty
    b1, b2, b3, b4 = bleu(["a b c d"], [["a b c e"]])
    assert b1 == pytest.approx(0.75)
    assert b2 == pytest.approx(math.sqrt(0.75 * 2 / 3))
    assert b3 == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3))
    assert b4 == 0.0


def test_bleu_clips_repeats_and_penalises_short_candidates():
    assert bleu(["the the the"], [["the cat"]])[0] == pytest.approx(1 / 3 * math.exp(0))  # 3 words >= 2: no penalty
    assert bleu(["a b"], [["a b c d"]])[0] == pytest.approx(math.exp(1 - 4 / 2))
    # the closest reference length sets the penalty: 2 words against references of 2 and 6 words
    assert bleu(["a b"], [["a b", "a b c d e f"]])[0] == pytest.approx(1.0)


def test_rouge_l_by_hand():
    assert lcs_length("a b c d".split(), "a x c d y".split()) == 3
    precision, recall = 3 / 4, 3 / 5
    expected = (1 + 1.44) * precision * recall / (recall + 1.44 * precision)
    assert rouge_l(["a b c d"], [["a x c d y"]]) == pytest.approx(expected)
    assert rouge_l(["a b c d"], [["z", "a x c d y"]]) == pytest.approx(expected)  # best reference counts


def test_cider_weights_ngrams_by_rarity():
    # n-grams in every image's references carry no weight: one shared caption for all images scores 0
    assert cider_d(["red hair", "red hair"], [["red hair"], ["red hair"]]) == 0.0
    assert cider_d(["blue eyes", "red hair"], [["red hair"], ["blue eyes"]]) == 0.0
    # a partly right caption sits between
    score = cider_d(["red hair blue eyes", "black hair"], [["red hair green eyes"], ["black hair"]])
    assert 0.0 < score < 10.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        bleu(["a"], [])
