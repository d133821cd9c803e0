"""Atomic writes, and the error that reaches a user as one line."""
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""



@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv(df, path):
    """Write a DataFrame so that a crash never leaves a half-written CSV under `path`."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(data, path):
    """Write indented JSON so that a crash never leaves a half-written file under `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
