"""Each benchmark runs in a tiny mode and prints its ratio line (the numbers are the benchmarks' own business)."""
import re
import runpy

import pytest

from animeml.core.paths import ROOT, SHARED


def run_benchmark(name, argv, capsys):
    runpy.run_path(str(ROOT / "benchmarks" / name))["main"](argv)
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def shared_data():
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} (the real data folder) is absent")


def test_image_loader_prints_the_ratio_of_tfdata_to_opencv(capsys):
    out = run_benchmark("bench_image_loader.py", ["--images", str(SHARED / "data" / "posters" / "images"),
                                                  "--limit", "16", "--repeats", "1", "--image-size", "32"], capsys)
    assert out.startswith("devices: ") and "/device:CPU:0" in out
    assert re.search(r"16 images at 32px, batch 32: opencv loop \d+ img/s, image_dataset \d+ img/s, ratio "
                     r"\d+\.\d\dx", out)


def test_training_prints_images_per_second_and_share_of_peak(capsys):
    out = run_benchmark("bench_training.py", ["--images", str(SHARED / "data" / "posters" / "images"),
                                              "--backbones", "small_cnn", "--image-size", "48", "40",
                                              "--batch-size", "4", "--steps", "1", "--matmul-size", "256"], capsys)
    assert "vision score model, 48x40 px" in out
    assert re.search(r"peak float32 matmul \d+ GFLOP/s", out)
    rows = re.findall(r"small_cnn\s+(frozen|top 20)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%", out)
    assert [row[0] for row in rows] == ["frozen", "top 20"]
    (_, _, frozen_flop, _, _), (_, _, tuned_flop, _, _) = rows
    assert 0 < float(frozen_flop) < float(tuned_flop)  # fine-tuning also computes the backbone's gradients


def test_prediction_prints_the_share_of_model_throughput(capsys):
    out = run_benchmark("bench_prediction.py", ["--quick", "--images", "40", "--backbone", "small_cnn",
                                                "--batch-size", "16", "--repeats", "2"], capsys)
    assert out.startswith("devices: ")
    for script in ("CharacterTagging/tag_images.py", "GenreClassification/predict_genres.py"):
        found = re.search(re.escape(script) + r": small_cnn with random weights .* 40 images, batch 16, fastest of 2: "
                          r"script ([\d.]+) img/s, model.predict in memory ([\d.]+) img/s, forward pass in memory "
                          r"([\d.]+) img/s, ratio to the fastest \d+% \(by CPU time of those runs \d+%\); "
                          r"model.predict runs ([\d.]+), ([\d.]+) img/s; forward pass runs ([\d.]+), ([\d.]+) img/s; "
                          r"forward pass uint8 runs ([\d.]+), ([\d.]+) img/s; script runs ([\d.]+), ([\d.]+) img/s",
                          out)
        assert found, out
        script_best, predict_best, forward_best, *each = map(float, found.groups())
        # the fastest run of each counts; the forward pass's of float32 and uint8 batches alike
        assert (predict_best, forward_best, script_best) == (max(each[:2]), max(each[2:6]), max(each[6:]))


def test_end_to_end_prints_wall_times(capsys):
    out = run_benchmark("bench_end_to_end.py", ["--rows", "60", "--predict-rows", "5", "--repeats", "1"], capsys)
    assert re.search(r"recommend.py --title '.+' -k 10: [\d.]+ s \([\d.]+ s CPU\) end to end", out)
    assert re.search(r"predict_score.py --kind text on 5 new anime with synopses: [\d.]+ s \([\d.]+ s CPU\) end to "
                     r"end, embedding them", out)
    assert re.search(r"load average \(1/5/15 min\) before [\d.]+/[\d.]+/[\d.]+, after", out)
