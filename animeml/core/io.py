"""Atomic writes, cache files read back, and the error that reaches a user as one line."""
import json
import os
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. A folder where the file
    goes, or a file where one of its folders goes, is a PipelineError naming it."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"cannot write {path}: a folder of that name is in the way")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as err:
        raise PipelineError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_csv(path, what, columns=(), **options):
    """pd.read_csv(path, **options) of a CSV the user names (`what` says which, for the message); a missing, empty,
    binary or unparsable file, a folder, or a file without one of `columns` is one PipelineError naming it."""
    import pandas as pd

    try:
        table = pd.read_csv(path, **options)
    except FileNotFoundError:
        raise PipelineError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PipelineError(f"{what} {path} is a folder, not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{what} {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise PipelineError(f"cannot parse {what} {path}: {str(err).splitlines()[0]}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PipelineError(f"{what} {path}: required column(s) missing: {', '.join(missing)} "
                            f"(it has: {', '.join(map(str, table.columns))})")
    return table


def write_csv(df, path):
    """Write a DataFrame so that a crash never leaves a half-written CSV under `path`."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(data, path):
    """Write indented JSON so that a crash never leaves a half-written file under `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def read_cache(path, load):
    """`load(path)` of a cache file, or None when there is none or it is damaged (cut short, or another kind of
    file, as a copy stopped half-way leaves it): a cache is computed again, never a reason to stop. A damaged one
    is named in a warning; the caller's next write replaces it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        print(f"warning: the cache file {path} is damaged ({type(err).__name__}); computing it again", file=sys.stderr)
        return None
