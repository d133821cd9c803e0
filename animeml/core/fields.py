"""Text fields of the anime table without pandas: comma-separated lists and the franchise key of a title. A
recommendation query needs only these, and starts faster than pandas imports."""
import re
import unicodedata


def split_list(text):
    """'Action, Sci-Fi' -> ['Action', 'Sci-Fi']; missing -> []."""
    if not isinstance(text, str):
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


FRANCHISE_NOISE = re.compile(
    r"\b(\d+|\d+(st|nd|rd|th)|i{1,3}|iv|vi{0,3}|ix|x|season|seasons|part|cour|movie|movies|the movie|film|ova|"
    r"ona|oad|tv|special|specials|recap|recaps|picture drama|omake|gekijouban|final|second|third|"
    r"new|series|edition)\b")


def franchise_key(name):
    """A normalised title stem shared by the seasons, movies and OVAs of one series."""
    text = unicodedata.normalize("NFKC", str(name)).casefold()
    full = re.sub(r"[^\w]+", " ", text).strip()
    for part in (re.split(r":| - ", text)[0], text):
        stem = re.sub(r"\([^)]*\)", " ", part)
        stem = re.sub(r"[^\w]+", " ", stem).replace("_", " ")
        stem = re.sub(r"\s+", " ", FRANCHISE_NOISE.sub(" ", stem)).strip()
        if len(stem) >= 4:
            return stem
    return stem or full
