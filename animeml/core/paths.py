"""Where every step reads and writes. `ANIMEML_DATA_DIR` moves the whole data folder (tests use it)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ANIMEML_SHARED_DIR", ROOT.parent / "shared"))


def data_dir() -> Path:
    return Path(os.environ.get("ANIMEML_DATA_DIR", ROOT / "data"))


def raw_csv() -> Path:
    return data_dir() / "raw" / "anime.csv"


def jikan_cache_dir() -> Path:
    return data_dir() / "raw" / "jikan_pages"


def posters_dir() -> Path:
    return data_dir() / "posters"


def merged_csv() -> Path:
    return data_dir() / "ani_data_merged.csv"


def models_dir() -> Path:
    return data_dir() / "models"


def reports_dir() -> Path:
    return data_dir() / "reports"


def genres_dir() -> Path:
    return data_dir() / "genres"


def recommendation_dir() -> Path:
    return data_dir() / "recommendation"


def characters_dir() -> Path:
    return data_dir() / "characters"


def tags_dir() -> Path:
    return data_dir() / "tags"
