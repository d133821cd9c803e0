"""What every step script shares: one-line errors and atomic writes."""
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def run(main):
    """Call `main()`; a PipelineError becomes `error: ...` on stderr and exit status 2."""
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


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


def save_model(model, path, sidecar=None):
    """Save a Keras model as `path` (.h5), and `sidecar` as the JSON of the same name, never half-written."""
    with atomic_path(path) as tmp:
        h5 = tmp.with_suffix(".h5")  # Keras picks the file format from the suffix
        try:
            model.save(h5)
            h5.replace(tmp)
        finally:
            h5.unlink(missing_ok=True)
    if sidecar is not None:
        write_json(sidecar, Path(path).with_suffix(".json"))
