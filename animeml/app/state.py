"""What the app loads once at start: the anime table and recommender, posters, and the trained models. Anything
missing leaves a `missing` line that the tab shows (which step makes it) instead of failing."""
import numpy as np
import pandas as pd

from animeml.core import paths
from animeml.core.io import PipelineError
from animeml.core.fields import split_list
from animeml.core.table import read_anime_table

STEP_TABLE = "python AnimeScorePredictionAllParameters/01_fetch_metadata.py --csv ../shared/data/mal/anime-dataset-2023.csv"
STEP_CHARACTERS = "python CharacterTagging/02_train_characters.py"
STEP_TAGGER = "python CharacterTagging/03_train_tagger.py"
STEP_CAPTIONS = "python CharacterTagging/07_train_captioner.py (Keras) or 06_finetune_blip.py (BLIP)"
STEP_REPORT = "python report.py"
PREFERRED_BACKBONE = "efficientnet_lite0"  # the scripts' default model; another backbone if only that exists


def model_file(task):
    """data/models/<task>_<backbone>.h5: the scripts' default backbone, else the first one trained."""
    found = sorted(paths.models_dir().glob(f"{task}_*.h5"))
    preferred = [f for f in found if f.stem == f"{task}_{PREFERRED_BACKBONE}"]
    return (preferred or found or [None])[0]


def caption_folder():
    """The BLIP folder of step 06 (fine-tuned), else a downloaded pretrained one, else None."""
    from animeml.characters.captions import default_blip_dir, finetuned_blip_dir

    return next((f for f in (finetuned_blip_dir(), default_blip_dir()) if (f / "config.json").is_file()), None)


def read_posters():
    """{anime_id: poster file} from data/posters/posters.csv, only files inside the posters folder."""
    folder = paths.posters_dir().resolve()
    index = folder / "posters.csv"
    if not index.is_file():
        return {}
    table = pd.read_csv(index, dtype={"file": str})
    found = {}
    for file, anime_id in zip(table["file"], pd.to_numeric(table["anime_id"], errors="coerce")):
        path = (folder / str(file)).resolve()
        if pd.notna(anime_id) and path.is_relative_to(folder) and path.is_file():
            found.setdefault(int(anime_id), path)
    return found


def detector_settings():
    """The cascade settings step 04 chose (its `chosen` row), else the cascade's own defaults."""
    from animeml.core import faces

    settings = {"scale_factor": faces.SCALE_FACTOR, "min_neighbors": faces.MIN_NEIGHBORS, "min_size": 24,
                "upscale": 1.0}
    table_path = paths.characters_dir() / "detector_settings.csv"
    if table_path.is_file():
        table = pd.read_csv(table_path)
        chosen = table[table.get("role", pd.Series(dtype=str)) == "chosen"]
        if len(chosen):
            row = chosen.iloc[0]
            settings = {key: type(default)(row[key]) if key in row else default
                        for key, default in settings.items()}
    return settings


class AppState:
    def __init__(self):
        from animeml.recommendation import Recommender

        self.missing = {}
        self.recommender = None
        self.has_index = False
        try:
            table = read_anime_table(paths.raw_csv())
        except PipelineError as err:
            self.missing["anime"] = f"{err}; run {STEP_TABLE}"
        else:
            try:
                self.recommender = Recommender.load(table, paths.recommendation_dir())
                self.has_index = True
            except PipelineError as err:  # search still works; the message names the file and the step
                self.recommender = Recommender.from_table(table, np.zeros(0, np.int64), np.zeros((0, 1), np.float32))
                self.missing["recommend"] = str(err)
        self.genres = sorted({g for text in (table["genres"] if self.recommender else []) for g in split_list(text)})
        self.posters = read_posters()
        self.captioner = self.load_captioner()  # torch before TensorFlow: the other order can segfault
        self.characters = self.load("characters", STEP_CHARACTERS)
        self.tagger = self.load("tags", STEP_TAGGER)
        self.cascade, self.detector = None, detector_settings()
        if self.characters:
            from animeml.core.faces import load_cascade
            try:
                self.cascade = load_cascade()
            except PipelineError as err:
                self.characters = None
                self.missing["characters"] = str(err)

    def load_captioner(self):
        """("blip", (processor, model)) of step 06's BLIP or a downloaded one, else ("keras", (model, sidecar)) of
        step 07's captioner, else None with the steps that make one."""
        from animeml.characters.captions import load_blip

        folder = caption_folder()
        keras_file = model_file("captioner")
        try:
            if folder is not None:
                return "blip", load_blip(folder)
            if keras_file is not None:
                from animeml.characters import captioner
                from animeml.core.store import load_model
                return "keras", load_model(keras_file, captioner.CUSTOM_OBJECTS)
        except PipelineError as err:
            self.missing["captions"] = str(err)
            return None
        self.missing["captions"] = f"no caption model in {paths.models_dir()}; run {STEP_CAPTIONS}"
        return None

    def load(self, task, step):
        """(model, sidecar) of the task's model, or None with the step that makes it in `missing`."""
        path = model_file(task)
        if path is None:
            self.missing[task] = f"no {task} model in {paths.models_dir()}; run {step}"
            return None
        from animeml.characters.classifier import load_model  # TensorFlow: only when there is a model
        try:
            return load_model(path)
        except Exception as err:  # a corrupt file: the tab says so, the rest of the app still works
            self.missing[task] = f"{path} cannot be loaded ({type(err).__name__}); rerun {step}"
            return None
