"""What each report page shows: sections of files that one step writes, found by glob under the data folder.

A section is shown when any of its files exists, else as "not run yet: <command>". Each figure links to the CSV
behind it: the CSV of the same name (`x.png` -> `x.csv`, `x_curve.png` -> `x_history.csv`), else the section's
first table. Globs are relative to the data folder (`data/` or `ANIMEML_DATA_DIR`).
"""
from dataclasses import dataclass, field


@dataclass
class Section:
    title: str
    command: str  # what makes the files, shown while they are missing
    tables: list = field(default_factory=list)  # CSV globs, each shown as a table
    figures: list = field(default_factory=list)  # PNG globs, each shown full width
    gallery: list = field(default_factory=list)  # PNG globs shown as thumbnails (many small images)
    json: list = field(default_factory=list)  # JSON globs shown as key/value tables
    note: str = ""


@dataclass
class Page:
    name: str  # file name without .html
    title: str
    sections: list
    models: list = field(default_factory=list)  # sidecar globs under models/ whose run records the page shows
    runs: list = field(default_factory=list)  # step-name prefixes of run records in runs/ shown on the page


SCORE = "python AnimeScorePredictionAllParameters/"
POSTER = "python AnimeScorePredictionOnlyPoster/"
GENRES = "python GenreClassification/"
CHARACTERS = "python CharacterTagging/"
RECOMMENDATION = "python Recommendation/"

PAGES = [
    Page("score", "Score prediction", [
        Section("Test metrics with bootstrap 95% intervals, next to the baselines", f"{SCORE}06_evaluate.py",
                tables=["reports/score/score_metrics.csv", "reports/score/test_predictions.csv"]),
        Section("Training curves", f"{SCORE}04_train_text_model.py, {SCORE}05_train_hybrid_model.py, "
                f"{POSTER}01_train_vision_model.py", figures=["reports/score/*_curve.png"]),
    ], models=["anime_*model.json"], runs=["score", "anime"]),
    Page("analysis", "Score analysis: objects, importance, Grad-CAM", [
        Section("Objects on posters (YOLO) vs score: Spearman per class, BH-adjusted", f"{SCORE}07_detect_objects.py",
                tables=["reports/analysis/object_score_correlations.csv"],
                figures=["reports/analysis/object_score_correlations.png"]),
        Section("Permutation importance per input group, with 95% intervals", f"{SCORE}08_feature_importance.py",
                tables=["reports/analysis/*_importance.csv", "reports/analysis/*_first_layer_norms.csv"],
                figures=["reports/analysis/*_importance.png"]),
        Section("Grad-CAM and Grad-CAM++ of the best, worst and typical test posters", f"{POSTER}02_gradcam.py",
                tables=["reports/gradcam/gradcam_posters.csv"], figures=["reports/gradcam/gradcam_grid.png"],
                gallery=["reports/gradcam/[0-9]*.png"]),
    ], models=["anime_vision_only_model.json", "anime_hybrid_model.json", "anime_text_model.json"],
        runs=["score", "analysis", "gradcam"]),
    Page("popularity", "Popularity before release", [
        Section("Table 11 layout: each model next to the paper's number and the train mean, with 95% intervals",
                f"{SCORE}11_evaluate_popularity.py",
                tables=["reports/popularity/table_11.csv", "reports/popularity/test_predictions.csv"],
                figures=["reports/popularity/*.png"]),
    ], models=["popularity_*.json"], runs=["popularity"]),
    Page("genres", "Genres from posters", [
        Section("Test results: backbone x loss x threshold scheme vs the label prior", f"{GENRES}03_evaluate.py",
                tables=["genres/results.csv"], figures=["genres/pr_curves_*.png", "genres/examples.png"]),
        Section("Labels and split", f"{GENRES}01_make_labels.py", tables=["genres/split_counts.csv"]),
    ], models=["genres_*.json"], runs=["genres"]),
    Page("characters", "Characters and tags", [
        Section("Character classifier on test faces, next to the majority class", f"{CHARACTERS}02_train_characters.py",
                tables=["characters/metrics.csv", "characters/per_character_*.csv"],
                figures=["characters/confusion_*.png"]),
        Section("Face detector settings on labelled illustrations (tuned on one part, measured on the other)",
                f"{CHARACTERS}04_tune_detector.py", tables=["characters/detector_settings.csv"]),
        Section("Detected faces", f"{CHARACTERS}01_detect_faces.py", tables=["characters/detections/faces.csv"],
                gallery=["characters/detections/boxes/*.png"]),
        Section("Tagger on test faces, next to the tag prior", f"{CHARACTERS}03_train_tagger.py",
                tables=["tags/metrics.csv", "tags/per_tag.csv"], figures=["tags/pr_curves.png"]),
        Section("Captions", f"{CHARACTERS}08_evaluate_captions.py",
                tables=["captions/*.csv"], figures=["captions/*.png"]),
    ], models=["characters_*.json", "tags_*.json", "captioner_*.json"], runs=["characters", "tags", "caption"]),
    Page("recommendation", "Recommendation", [
        Section("Franchise hit-rate@10 and genre overlap: hybrid vs metadata, synopsis, popularity, random",
                f"{RECOMMENDATION}02_evaluate.py",
                tables=["recommendation/evaluation_summary.csv", "recommendation/evaluation.csv"]),
        Section("Query latency: vectorised scorer vs a per-item loop", f"{RECOMMENDATION}03_benchmark.py",
                json=["recommendation/benchmark.json"]),
        Section("Index", f"{RECOMMENDATION}01_build_index.py", tables=["recommendation/franchises.csv"]),
    ], runs=["recommendation"]),
]
