"""predict_score.py's faster paths give the same numbers: the title-neighbour top k is what a stable argsort of each
whole row gives, and the script (inputs encoded once for the whole table, the gradient boosting on one thread)
writes the scores that predict_scores gives when it encodes the rows itself, as the script did before."""
import contextlib
import runpy

import keras
import numpy as np
import pandas as pd

from animeml.core import paths
from animeml.core.table import KAGGLE_COLUMNS, clean_table, read_kaggle_csv
from animeml.score import features as score_features
from animeml.score.features import fit_metadata_encoder, model_inputs, top_k
from animeml.score.models import (boosting_path, build_text_model, fit_boosting, load_score_model, make_sidecar,
                                  predict_scores, save_score_model, write_boosting)


def test_top_k_is_a_stable_argsort_of_the_positive_values():
    rng = np.random.default_rng(0)
    similarity = rng.choice([0.0, 0.0, 0.0, 0.2, 0.5, 0.5, 0.9], size=(60, 40))  # many ties and zeros
    similarity[0] = 0.0
    similarity[1, 1:] = 0.0  # one positive value
    for k in (1, 3, 10, 40):
        weights, top = top_k(similarity, k)
        expected = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        expected_weights = np.take_along_axis(similarity, expected, axis=1)
        np.testing.assert_array_equal(weights, expected_weights)
        positive = expected_weights > 0  # the rest carry weight 0, whichever column
        np.testing.assert_array_equal(top[positive], expected[positive])


def no_child(texts, model):
    """embedding_ahead without its child process: fake_embed needs no cache."""
    return contextlib.nullcontext()


def fake_embed(texts, model="minilm", batch_size=64):
    """Three words of the synopsis as dimensions; a missing synopsis is a zero row, as in embed_texts."""
    vectors = np.array([[w in t for w in ("battle", "comedy", "a")] if isinstance(t, str) else [0, 0, 0]
                        for t in texts], dtype=np.float32).reshape(len(texts), 3)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def kaggle_rows(ids, rng):
    rows = pd.DataFrame("UNKNOWN", index=range(len(ids)), columns=KAGGLE_COLUMNS)
    rows["anime_id"] = ids
    rows["Name"] = [f"{rng.choice(['Star', 'Cake', 'Tennis', 'Ghost'])} Club {rng.choice(['', '2', 'Movie'])}"
                    for _ in ids]
    rows["Genres"] = rng.choice(["Action, Drama", "Comedy", "Sports, Comedy"], len(ids))
    rows["Synopsis"] = rng.choice(["a long battle", "a school comedy", "UNKNOWN"], len(ids))
    rows["Episodes"], rows["Type"] = rng.choice(["1", "12", "24"], len(ids)), rng.choice(["TV", "Movie"], len(ids))
    rows["Score"] = np.round(rng.uniform(5, 9, len(ids)), 2)
    return rows


def test_script_scores_equal_predict_scores_on_its_own(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(score_features, "embed_texts", fake_embed)
    monkeypatch.setattr(score_features, "embedding_ahead", no_child)
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    kaggle_rows(np.arange(1, 61), rng).to_csv(tmp_path / "train.csv", index=False)
    train = clean_table(read_kaggle_csv(tmp_path / "train.csv"))
    sidecar = make_sidecar("text", float(train["score"].mean()), encoder=fit_metadata_encoder(train))
    inputs = model_inputs(train, sidecar)
    model = build_text_model(inputs["metadata"].shape[1], 3, float(train["score"].mean()))
    model.set_weights([rng.normal(0, 0.3, w.shape) for w in model.get_weights()])  # every input counts
    path = paths.models_dir() / "anime_text_model.h5"
    sidecar["boosting"] = {"file": boosting_path(path).name, "weight": 0.4}
    write_boosting(path, fit_boosting(inputs, train["score"].to_numpy()))
    save_score_model(model, path, sidecar)

    new = kaggle_rows(np.arange(100, 140), rng).drop(columns=["Score"])
    new.loc[5, ["Genres", "Synopsis", "Episodes", "Type"]] = "UNKNOWN"
    new.loc[5, "Name"] = "Qqq"  # no train title shares a letter pair with it: nothing known, skipped
    new.to_csv(tmp_path / "new.csv", index=False)
    main = runpy.run_path(str(paths.ROOT / "AnimeScorePredictionAllParameters" / "predict_score.py"),
                          run_name="predict")["main"]
    main(["--kind", "text", "--csv", str(tmp_path / "new.csv"), "--out", str(tmp_path / "scores.csv")])
    assert "39 done, 1 skipped" in capsys.readouterr().out
    scored = pd.read_csv(tmp_path / "scores.csv")
    assert scored.loc[5, "status"] == "skipped" and "neither synopsis nor metadata" in scored.loc[5, "reason"]

    table = clean_table(read_kaggle_csv(tmp_path / "new.csv", required=["anime_id", "Name"]))
    table = table.drop(index=5).reset_index(drop=True)
    expected = predict_scores(*load_score_model("text", path), table)
    assert np.ptp(expected) > 0.1  # the rows differ, so a mix-up of rows would show
    np.testing.assert_array_equal(scored.drop(index=5)["predicted_score"].to_numpy(), np.round(expected, 3))
