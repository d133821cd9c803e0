"""Batch isolation for the prediction scripts: one bad input costs one row with a reason, never the whole run.

    outcomes = run_batch(paths, load, predict, chunk_size=32, desc="tagging")
    table = outcome_table("file", [p.name for p in paths], outcomes, ["tags", "confidences"])
    finish(table, outcomes, out)        # the CSV, "N done, M skipped", exit 2 only when nothing was done

and the files a script writes beside its inputs (captions, drawn boxes): `output_paths` gives `a.jpg` and `a.png`
different names, `write_output` never replaces a file that is already there unless told to.
"""
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from animeml.core.io import PipelineError, atomic_path, write_csv

OK, SKIPPED = "ok", "skipped"
WRITE_MODES = ("keep", "overwrite", "append")


@dataclass
class Outcome:
    """What a script made of one input: its result, or the reason it was skipped."""
    result: object = None
    reason: str = ""

    @property
    def ok(self):
        return not self.reason


def run_batch(items, load, predict, chunk_size=32, desc="predicting", unit="image", load_together=False):
    """One Outcome per item, in order. `load(item)` prepares an item (a checked path, a decoded image) and raises
    PipelineError, whose message is the reason, for one to skip; with `load_together`, `load(items)` prepares a
    chunk's items at once and returns one prepared item or one such exception per item (e.g.
    animeml.core.images.read_images); `predict(loaded)` returns one result per loaded item; any other exception of
    either becomes the item's reason too. Items go in chunks of `chunk_size` under a progress bar, so memory stays
    bounded; a chunk whose loading or prediction fails as a whole is retried one item at a time, so a bad item costs
    only its own row. The next chunk loads in a background thread while this one is predicted (decoding and the
    model then share the machine instead of taking turns); `load` runs in that one thread only."""
    outcomes = [Outcome() for _ in items]
    starts = range(0, len(items), chunk_size)
    load_one = (lambda item: _raised(load([item])[0])) if load_together else load

    def load_chunk(start):
        chunk = range(start, min(start + chunk_size, len(items)))
        try:
            prepared = load([items[i] for i in chunk]) if load_together else None
        except Exception:  # noqa: BLE001  (the chunk as a whole failed: each item alone says which)
            prepared = None
        loaded = {}
        for n, i in enumerate(chunk):
            try:
                loaded[i] = load_one(items[i]) if prepared is None else _raised(prepared[n])
            except PipelineError as err:
                outcomes[i].reason = str(err)
            except Exception as err:  # noqa: BLE001  (an unforeseen problem with one item stays its own)
                outcomes[i].reason = _reason(err)
        return loaded

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
    try:
        with tqdm(total=len(items), desc=desc, unit=unit) as bar:
            next_chunk = pool.submit(load_chunk, starts[0]) if len(starts) else None
            for n, start in enumerate(starts):
                loaded = next_chunk.result()
                if n + 1 < len(starts):
                    next_chunk = pool.submit(load_chunk, starts[n + 1])
                for i, outcome in _predicted(predict, loaded).items():
                    outcomes[i] = outcome
                bar.update(min(chunk_size, len(items) - start))
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C: waits for at most the one chunk being loaded
    return outcomes


def _raised(prepared):
    """A prepared item, or the exception that stands for it raised."""
    if isinstance(prepared, Exception):
        raise prepared
    return prepared


def _predicted(predict, loaded):
    """{index: Outcome} for the loaded items of one chunk: all at once, else one by one with the error as reason."""
    if not loaded:
        return {}
    try:
        results = predict(list(loaded.values()))
    except Exception as err:  # noqa: BLE001  (whatever the library raised, isolate the item that causes it)
        if len(loaded) == 1:
            return {i: Outcome(reason=_reason(err)) for i in loaded}
        return {i: _alone(predict, item) for i, item in loaded.items()}
    return {i: Outcome(result) for i, result in zip(loaded, results)}


def _alone(predict, item):
    try:
        return Outcome(predict([item])[0])
    except Exception as err:  # noqa: BLE001
        return Outcome(reason=_reason(err))


def _reason(err):
    """An exception as a one-line reason."""
    message = str(err).strip().splitlines()
    return f"failed: {type(err).__name__}" + (f": {message[0][:300]}" if message else "")


def outcome_table(key_column, keys, outcomes, columns):
    """One row per input (or per result row, where a result is a list of rows, e.g. one per face): `key_column`,
    `columns`, then `status` (ok/skipped) and `reason`."""
    rows = []
    for key, outcome in zip(keys, outcomes):
        base = {key_column: key, "status": OK if outcome.ok else SKIPPED, "reason": outcome.reason}
        results = outcome.result if isinstance(outcome.result, list) else [outcome.result or {}]
        rows.extend({**result, **base} for result in (results or [{}]))
    return pd.DataFrame(rows, columns=[key_column, *columns, "status", "reason"])


def check_out(out):
    """Refuse an --out that is a folder before any work is done (the table is written only at the end)."""
    if Path(out).is_dir():
        raise PipelineError(f"--out {out} is a folder; give the name of the CSV file to write")


def finish(table, outcomes, out, what="inputs"):
    """Write `table` to `out`, print `N done, M skipped`; when nothing could be done, a PipelineError (exit 2)."""
    write_csv(table, out)
    done = sum(outcome.ok for outcome in outcomes)
    skipped = len(outcomes) - done
    print(f"{done} done, {skipped} skipped -> {out}" + (" (the reason column says why)" if skipped else ""))
    if not done:
        first = next((outcome.reason for outcome in outcomes), "no input")
        raise PipelineError(f"nothing could be done: {len(outcomes)} {what}, none usable (first: {first}); "
                            f"reasons in {out}")


def output_paths(inputs, suffix, folder=None):
    """One output path per input: `<stem><suffix>` beside the input (or in `folder`). Inputs whose outputs would
    clash (`a.jpg` and `a.png`, also on case-insensitive disks) get `<name><suffix>` (`a.jpg.txt`, `a.png.txt`),
    so no two inputs ever share an output file."""
    inputs = [Path(p) for p in inputs]
    where = [Path(folder) if folder is not None else p.parent for p in inputs]
    names = [p.stem + suffix for p in inputs]
    while True:  # each round turns at least one clashing stem name into a full name; full names are unique
        counts = Counter(str(w / n).casefold() for w, n in zip(where, names))
        clashing = [i for i, (w, n) in enumerate(zip(where, names))
                    if counts[str(w / n).casefold()] > 1 and n != inputs[i].name + suffix]
        if not clashing:
            return [w / n for w, n in zip(where, names)]
        for i in clashing:
            names[i] = inputs[i].name + suffix


def write_output(path, content, mode="keep"):
    """Write `content` (str or bytes) to `path` atomically unless a file is already there, and say what was done:
    "written", "kept" (mode "keep": the existing file stays byte-identical), "overwritten", or "appended" (mode
    "append", for caption files: the comma-separated tags of `content` that the file lacks are added to it)."""
    path = Path(path)
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {WRITE_MODES}")
    exists = path.exists()
    if exists and mode == "keep":
        return "kept"
    if exists and mode == "append":
        try:
            old = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise PipelineError(f"cannot append to {path}: {getattr(err, 'strerror', None) or err}") from None
        have = [tag.strip() for tag in old.split(",") if tag.strip()]
        new = [tag.strip() for tag in content.split(",") if tag.strip() and tag.strip() not in have]
        content = ", ".join(have + new) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_bytes(content) if isinstance(content, bytes) else tmp.write_text(content)
    return {"keep": "written", "overwrite": "overwritten", "append": "appended"}[mode] if exists else "written"



def write_text_file(path, text, mode):
    """Write one caption (text) file beside an image; what happened, for a `caption_file` column. A failure is that
    file's, not the image's: it is reported, never raised."""
    try:
        done = write_output(path, text + "\n", mode)
    except (OSError, PipelineError) as err:
        done = f"not written: {getattr(err, 'strerror', None) or err}"
    return f"{Path(path).name} ({done})"


def load_model_for(load, path, step, keys=()):
    """`load(path)` -> (model, sidecar), with the step that makes the model added to any problem: a missing or
    corrupt model or sidecar, or a sidecar without `keys`, is one line naming the file; nothing is changed."""
    try:
        model, sidecar = load(path)
    except PipelineError as err:
        raise PipelineError(str(err) if step in str(err) else f"{err}; {step} makes it") from None
    except Exception as err:  # noqa: BLE001  (a loader that lets a library's own error through)
        raise PipelineError(f"model {path} or its .json sidecar is unreadable or corrupt ({type(err).__name__}); "
                            f"{step} makes it") from None
    missing = [key for key in keys if key not in sidecar]
    if missing:
        raise PipelineError(f"model sidecar {Path(path).with_suffix('.json')} lacks {', '.join(missing)}; "
                            f"{step} makes it")
    return model, sidecar
