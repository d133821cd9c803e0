"""What every step script shares: its argument parser, `--config FILE`, and one-line errors instead of tracebacks.

A step script declares its settings once at the top (a dict, as nanoGPT does), builds its parser from them, and
parses before it imports anything heavy, so `--help` answers at once:

    SETTINGS = dict(backbone="efficientnet_lite0", epochs=8, seed=42)

    def main(argv=None):
        parser = cli.parser(__doc__)
        parser.add_argument("--epochs", type=cli.positive_int, default=SETTINGS["epochs"], help="...")
        args = cli.parse(parser, argv)          # --config FILE (YAML or JSON) may set any flag
        import tensorflow ...                   # heavy imports only now

    if __name__ == "__main__":
        cli.run(main)
"""
import argparse
import atexit
import gc
import importlib.abc
import importlib.machinery
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from animeml.core.io import PipelineError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def parser(doc, **kwargs):
    """An ArgumentParser showing the script's docstring, with the flags every script takes."""
    result = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    result.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML or JSON file of settings (flag names with _ or -); flags given on the command "
                             "line win")
    result.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    return result


def read_config(path):
    """A settings file as a dict: YAML (.yaml/.yml) or JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"cannot read config {path}: {err.strerror if isinstance(err, OSError) else err}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise PipelineError(f"config {path} does not parse: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipelineError(f"config {path} must be a mapping of flag names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def parse(parser, argv=None):
    """Parse `argv`; values of `--config FILE` become defaults, so flags on the command line still win. An unknown
    key in the file is an error naming it. Silences TensorFlow's start-up lines unless `--verbose`."""
    # Only --config is read first: a full first pass would run every flag's action twice (deprecation warnings).
    config_only = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # `--conf` is not `--config`
    config_only.add_argument("--config", type=Path)
    first, _ = config_only.parse_known_args(argv)
    if first.config:
        config = read_config(first.config)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known - {"config"})
        if unknown:
            raise PipelineError(f"config {first.config}: unknown setting(s) {', '.join(unknown)}")
        parser.set_defaults(**{key: value for key, value in config.items() if key != "config"})
    args = parser.parse_args(argv)
    if not getattr(args, "verbose", False):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        quiet_tensorflow_import()
    return args


@contextmanager
def stderr_silenced():
    """File descriptor 2 points to /dev/null inside, so C++ libraries' writes vanish too (sys.stderr alone would not)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` with stderr silenced. TensorFlow 2.21 writes its start-up lines (oneDNN,
    CPU features, absl's "before InitializeLog") from C++ before it reads TF_CPP_MIN_LOG_LEVEL, so that variable
    does not stop them. A finder rather than an import here: scripts that never need TensorFlow do not pay for it."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with stderr_silenced():
                exec_module(module)
        spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_tensorflow_import():
    if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


def add_out_dir(parser, help, default=None):
    """`--out-dir DIR` with its old spelling `--out` (which warns)."""
    parser.add_argument("--out-dir", type=Path, default=default, help=help)
    parser.add_argument("--out", dest="out_dir", type=Path, action=deprecated("--out", "--out-dir"),
                        help="deprecated spelling of --out-dir")


def out_dir(args, default=None):
    """The folder of `--out-dir` (or `default`); a file there is a one-line error."""
    folder = Path(args.out_dir or default)
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"--out-dir {folder} is a file; give a folder")
    return folder


def settings_of(args):
    """The resolved settings of a run, JSON-ready (paths as strings), for its run record."""
    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return {key: plain(value) for key, value in sorted(vars(args).items()) if key not in ("config", "verbose")}


def warn_deprecated(old, new):
    print(f"warning: {old} is deprecated and will be removed in the next minor version; use {new}", file=sys.stderr)


def deprecated(old, new):
    """An argparse action for an old flag spelling (give it `dest=` of the new one): warns once on stderr, then
    stores into that destination. It has no default of its own, so the new flag's default stands."""
    class Deprecated(argparse.Action):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "default": argparse.SUPPRESS})

        def __call__(self, parser, namespace, values, option_string=None):
            warn_deprecated(old, new)
            setattr(namespace, self.dest, values)
    return Deprecated


def text_table(records, max_width=40):
    """Records (dicts with the same keys) as aligned columns under a header, as pandas prints a frame without its
    index: numbers right-aligned, text left-aligned and cut to `max_width` characters."""
    if not records:
        return ""
    columns = list(records[0])

    def cell(value):
        text = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        return text if len(text) <= max_width else text[:max_width - 3] + "..."

    cells = [[cell(record[col]) for col in columns] for record in records]
    numeric = [all(isinstance(record[col], (int, float)) for record in records) for col in columns]
    widths = [max(len(col), *(len(row[i]) for row in cells)) for i, col in enumerate(columns)]

    def line(values):
        return " ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)).rstrip()
    return "\n".join([line(columns)] + [line(row) for row in cells])


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _bounded(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _bounded(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    """argparse type: a number > 0."""
    return _bounded(text, float, lambda v: v > 0 and v != float("inf"), "a number > 0")


def probability(text):
    """argparse type: a number in [0, 1]."""
    return _bounded(text, float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def non_empty(text):
    """argparse type: a string with something other than spaces in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _bounded(text, kind, ok, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def run(main, argv=None):
    """Call `main(argv)`; a PipelineError becomes `error: ...` on stderr and exit status 2, Ctrl-C a line and 130.
    At exit the garbage collector skips the objects alive then (gc.freeze): its last pass over what TensorFlow
    loaded took about 1 s of every step's exit on 2 AVX2 cores, and the process ends anyway."""
    atexit.register(gc.freeze)
    try:
        main(argv) if argv is not None else main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are complete; rerun to continue", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
