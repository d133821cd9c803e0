"""Run records: what produced a model or a table, so a result can be traced and reproduced.

A record holds the step, its resolved settings and seed, the git commit (and whether the tree was dirty), the
versions of Python and the main libraries, a fingerprint of every input (a hash of each table; of a folder, the
list of its files with their sizes), start, end and wall time, the machine, and the metrics. Training and
evaluation steps write it into the model's sidecar and into `data/runs/`.
"""
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from animeml.core import paths
from animeml.core.io import write_json

LIBRARIES = ["tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "torch", "transformers"]
HASH_CHUNK = 1 << 20


def fingerprint(path):
    """sha256 of a file's bytes, or of a folder's sorted (relative path, size) list; None if it does not exist."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
                digest.update(chunk)
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\t{item.stat().st_size}\n".encode())
    else:
        return None
    return digest.hexdigest()


def fingerprint_files(files):
    """sha256 of a list of image files with their sizes (the images a model saw), order-independent."""
    digest = hashlib.sha256()
    for item in sorted(str(f) for f in files):
        size = os.path.getsize(item) if os.path.exists(item) else -1
        digest.update(f"{Path(item).name}\t{size}\n".encode())
    return digest.hexdigest()


def git_state():
    """(commit, dirty) of the project checkout; (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(paths.ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions():
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine():
    found = {"platform": platform.platform(), "cpu_cores": os.cpu_count()}
    if "tensorflow" in sys.modules:  # never import TensorFlow just to describe the machine
        tf = sys.modules["tensorflow"]
        found["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return found


class RunRecord:
    """Started when a step starts; `finish(metrics)` completes it and writes it to `data/runs/`.

        record = RunRecord("genres/02_train", settings=cli.settings_of(args), inputs={"labels": labels_csv})
        ...
        record.finish({"val_micro_f1": 0.55})       # -> dict, also written to data/runs/
    """

    def __init__(self, step, settings, inputs=(), seed=None):
        self.step = step
        self.settings = settings
        self.seed = seed if seed is not None else settings.get("seed")
        self.inputs = {str(k): fingerprint(v) for k, v in dict(inputs).items()}
        self.started = datetime.now(timezone.utc)
        self._clock = time.monotonic()

    def add_input(self, name, digest):
        self.inputs[name] = digest

    def as_dict(self, metrics=None):
        commit, dirty = git_state()
        return {
            "step": self.step, "settings": self.settings, "seed": self.seed,
            "git_commit": commit, "git_dirty": dirty, "versions": versions(), "inputs": self.inputs,
            "started": self.started.isoformat(timespec="seconds"),
            "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.monotonic() - self._clock, 1), "machine": machine(),
            "metrics": metrics or {},
        }

    def finish(self, metrics=None):
        """The complete record, written to `data/runs/<step>_<start time>.json`."""
        record = self.as_dict(metrics)
        stamp = self.started.strftime("%Y%m%dT%H%M%S")
        write_json(record, runs_dir() / f"{self.step.replace('/', '_')}_{stamp}.json")
        return record


def runs_dir():
    return paths.data_dir() / "runs"
